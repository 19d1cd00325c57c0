import json
import subprocess
import sys

import pytest
import torch

from ddnb.cli import main
from ddnb.distill import Distilled, distill
from ddnb.errors import DdnbError


def test_help_lists_the_commands():
    completed = subprocess.run([sys.executable, "-m", "ddnb.cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    for command in ("distill", "evaluate", "book"):
        assert command in completed.stdout


def test_random_subset_is_a_seeded_balanced_real_sample(shapes_small):
    result = distill("random", shapes_small, ipc=5, seed=2)
    assert result.images.shape == (50, 3, 32, 32) and result.labels.bincount().tolist() == [5] * 10
    indices = torch.tensor(result.meta["train_indices"])
    assert torch.equal(result.images, shapes_small.train.images[indices])
    assert torch.equal(result.images, distill("random", shapes_small, ipc=5, seed=2).images)
    assert not torch.equal(result.images, distill("random", shapes_small, ipc=5, seed=3).images)
    with pytest.raises(DdnbError, match="unknown method"):
        distill("kip", shapes_small)


def test_distill_then_evaluate_json(tmp_path, capsys):
    out = tmp_path / "random10"
    data = ["--data", "shapes", "--device", "cpu"]
    assert main(["distill", "--method", "random", "--ipc", "10", "--seed", "1", "--out", str(out), *data]) == 0
    saved = Distilled.load(str(out) + ".safetensors")
    assert saved.config["method"] == "random" and saved.config["ipc"] == 10 and len(saved.images) == 100
    pixels = saved.pixels()
    assert pixels.min() >= 0 and pixels.max() <= 1  # real images decode back to valid pixels
    capsys.readouterr()
    status = main(["evaluate", str(out) + ".safetensors", "--protocol", "paper300", "--net", "convnet-tiny", "--seeds", "2", "--json", *data])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and set(result) == {"mean", "std", "accs"} and len(result["accs"]) == 2
    assert all(0 <= acc <= 1 for acc in result["accs"]) and result["mean"] > 0.15  # chance is 0.1


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["distill", "--method", "random", "--data", "mnist", "--out", "x"], "unknown data set"),
        (["distill", "--method", "random", "--data", "shapes", "--ipc", "100000", "--out", "x"], "at most 5000"),
        (["distill", "--method", "random", "--data", "imagefolder:/no/such/dir", "--out", "x"], "does not exist"),
        (["evaluate", "/no/such/set.safetensors", "--data", "shapes"], "no artifact"),
        (["book", "--profile", "smoke", "--set", "/no/such/set.safetensors"], "no distilled set at /no/such/set.safetensors"),
        (["book", "--profile", "smoke", "--methods"], "nothing to analyse"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(argv, reason, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddnb: error:") and reason in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "ddnb.cli", "evaluate", str(tmp_path / "x.safetensors"), "--data", "shapes"],
        capture_output=True, text=True,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [f"ddnb: error: no artifact at {tmp_path / 'x.safetensors'}"]


def test_book_data_comes_from_the_flag_then_ddnb_data_then_the_profile(monkeypatch):
    from ddnb.cli import build_parser

    monkeypatch.delenv("DDNB_DATA", raising=False)
    assert build_parser().parse_args(["book", "--profile", "smoke"]).data is None  # the profile's own data
    monkeypatch.setenv("DDNB_DATA", "imagefolder:/data/cifar10.tar")
    assert build_parser().parse_args(["book", "--profile", "cifar10-cpu"]).data == "imagefolder:/data/cifar10.tar"
    assert build_parser().parse_args(["book", "--data", "shapes"]).data == "shapes"


def test_book_says_where_its_time_went():
    from ddnb.cli import cost_summary

    rows = [{"kind": "pool", "created": "2026-01-01T10:00:00Z", "wall_s": 60.0, "cpu_s": 60.0},
            {"kind": "notebook", "created": "2026-01-01T10:05:00Z", "wall_s": 30.0, "cpu_s": 30.0},
            {"kind": "pool", "created": "2026-01-01T10:06:00Z", "wall_s": 120.0, "cpu_s": 120.0},
            {"kind": "distilled", "created": "2025-12-31T09:00:00Z", "wall_s": 999.0, "cpu_s": 999.0}]  # made by an earlier build
    lines = cost_summary(rows, "2026-01-01T09:59:59Z").splitlines()
    assert lines[2].split() == ["pool", "2", "3.0", "3.0"] and lines[3].split() == ["notebook", "1", "0.5", "0.5"]
    assert len(lines) == 4 and cost_summary(rows, "2027-01-01T00:00:00Z") == ""
