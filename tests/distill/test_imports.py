import pytest
import torch

from ddnb.cli import main
from ddnb.data.shapes import SHAPE_CLASSES
from ddnb.data.dataset import InputTransform
from ddnb.distill import Distilled
from ddnb.distill.imports import import_set
from ddnb.errors import DdnbError

TRANSFORM = InputTransform(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
CLASSES = [str(c) for c in range(10)]


def _set(m=20):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(m, 3, 32, 32, generator=generator), torch.arange(10).repeat_interleave(m // 10)


def test_authors_dict_format(tmp_path):
    images, labels = _set()
    torch.save({"data": images, "label": labels}, tmp_path / "bptt.pt")
    result = import_set(tmp_path / "bptt.pt", TRANSFORM, CLASSES)
    assert torch.equal(result.images, images) and torch.equal(result.labels, labels) and result.lr is None
    assert torch.allclose(result.pixels(), images * 0.25 + 0.5)


def test_res_list_format_picks_the_experiment(tmp_path):
    (a, labels), b = _set(), _set()[0] + 1
    torch.save({"data": [[a, labels], [b, labels]], "accs_all_exps": {"ConvNet": [0.5, 0.6]}}, tmp_path / "res_DM.pt")
    assert torch.equal(import_set(tmp_path / "res_DM.pt", TRANSFORM, CLASSES, experiment=1).images, b)
    with pytest.raises(DdnbError, match="out of range"):
        import_set(tmp_path / "res_DM.pt", TRANSFORM, CLASSES, experiment=2)


def test_mtt_pair_with_learned_lr(tmp_path):
    images, labels = _set()
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0123), tmp_path / "synthetic_lr_best.pt")
    result = import_set(tmp_path / "images_best.pt", TRANSFORM, CLASSES)
    assert torch.equal(result.labels, labels) and result.lr == pytest.approx(0.0123)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_files_with_arbitrary_objects_are_refused(tmp_path, capsys):
    images, labels = _set()
    torch.save({"data": images, "label": labels, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DdnbError, match="refusing to unpickle"):
        import_set(tmp_path / "evil.pt", TRANSFORM, CLASSES)
    assert "unpickled!" not in capsys.readouterr().out


def test_bad_shapes_and_unknown_formats(tmp_path):
    torch.save({"data": torch.zeros(5, 3, 32, 32), "label": torch.zeros(4)}, tmp_path / "short.pt")
    with pytest.raises(DdnbError, match="5 images but 4 labels"):
        import_set(tmp_path / "short.pt", TRANSFORM, CLASSES)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DdnbError, match="not a known distilled-set format"):
        import_set(tmp_path / "other.pt", TRANSFORM, CLASSES)
    with pytest.raises(DdnbError, match="no file"):
        import_set(tmp_path / "absent.pt", TRANSFORM, CLASSES)


def test_cli_import_writes_an_artifact_with_the_data_transform(tmp_path):
    images, labels = _set()
    torch.save({"data": images, "label": labels}, tmp_path / "dm.pt")
    assert main(["import", str(tmp_path / "dm.pt"), "--data", "shapes", "--out", str(tmp_path / "dm"), "--device", "cpu"]) == 0
    saved = Distilled.load(tmp_path / "dm.safetensors")
    assert torch.equal(saved.images, images) and saved.config["method"] == "import"
    assert saved.config["data"]["name"] == "shapes" and saved.meta["classes"] == list(SHAPE_CLASSES)
