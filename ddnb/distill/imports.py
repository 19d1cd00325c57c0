"""Read distilled sets released by other projects, without ever unpickling arbitrary objects.

Formats (all read with ``torch.load(weights_only=True)``):

- ``{"data": images, "label": labels}``: the paper authors' released sets;
- ``res_*.pt`` of DC / DSA / DM: ``{"data": [[images, labels], ...], ...}`` or a bare list of pairs
  (``experiment`` picks the pair);
- ``images_best.pt`` with ``labels_best.pt`` beside it (and ``synthetic_lr_best.pt`` if present) from MTT.

Images are expected in the releasing project's model-input space (normalised, ZCA-whitened for MTT
with ZCA), which is why ``import_set`` takes the ``InputTransform`` of the matching data set.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ddnb.data.dataset import InputTransform
from ddnb.distill.result import Distilled
from ddnb.errors import DdnbError, first_line


def _looks_like_torch(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive, or (before PyTorch 1.6) a pickle, protocol 2 or later."""
    with open(path, "rb") as file:
        return file.read(1) == b"\x80" or zipfile.is_zipfile(file)


def _load(path: Path) -> object:
    if not path.is_file():
        raise DdnbError(f"no file at {path}" if not path.exists() else f"{path} is a folder, not a .pt file")
    try:
        if not _looks_like_torch(path):
            raise DdnbError(f"{path} is not a PyTorch file (neither a zip archive nor a pickle): empty, truncated or "
                            "another format")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # PyTorch's own message goes on to suggest weights_only=False: never
        raise DdnbError(f"{path} holds objects other than tensors and plain containers; refusing to unpickle it "
                        "(ddnb reads only those, and never unpickles anything else)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise DdnbError(f"cannot read {path} as a PyTorch file ({first_line(error)})") from None


def _pair(loaded: object, path: Path, experiment: int) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    if isinstance(loaded, dict) and "data" in loaded and "label" in loaded:
        return loaded["data"], loaded["label"], None
    pairs = loaded.get("data") if isinstance(loaded, dict) else loaded
    if isinstance(pairs, (list, tuple)) and pairs and isinstance(pairs[0], (list, tuple)):
        if not 0 <= experiment < len(pairs):
            raise DdnbError(f"{path} holds {len(pairs)} experiments; --experiment {experiment} is out of range")
        return pairs[experiment][0], pairs[experiment][1], None
    if isinstance(loaded, torch.Tensor) and path.name.startswith("images"):
        labels_path = path.with_name(path.name.replace("images", "labels", 1))
        lr_path = path.with_name(path.name.replace("images", "synthetic_lr", 1))
        lr = _load(lr_path) if lr_path.exists() else None
        return loaded, _load(labels_path), float(lr) if lr is not None else None
    raise DdnbError(f"{path} is not a known distilled-set format ({{'data','label'}} dict, res_*.pt, or images_*.pt)")


def _labels_fit(labels: torch.Tensor, num_classes: int) -> bool:
    """Class numbers [M] in ``[0, num_classes)``, or soft labels [M, num_classes]."""
    if labels.dim() == 2:
        return labels.shape[1] == num_classes
    return labels.dim() == 1 and (len(labels) == 0 or 0 <= int(labels.min()) <= int(labels.max()) < num_classes)


def import_set(path: str | Path, transform: InputTransform, classes: list[str], experiment: int = 0) -> Distilled:
    """A released distilled set -> ``Distilled`` (images float32 [M, C, H, W], labels int64 [M] or soft)."""
    path = Path(path).expanduser()
    images, labels, lr = _pair(_load(path), path, experiment)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or images.dim() != 4:
        raise DdnbError(f"{path}: expected an image tensor [M, C, H, W] and a label tensor")
    if len(images) != len(labels):
        raise DdnbError(f"{path}: {len(images)} images but {len(labels)} labels")
    labels = labels.long() if labels.dim() == 1 else labels.float()
    if not _labels_fit(labels, len(classes)):
        raise DdnbError(f"{path}: its labels do not fit the data set's {len(classes)} classes (class numbers 0 to "
                        f"{len(classes) - 1}, or soft labels [M, {len(classes)}])")
    config = {"method": "import", "source": str(path.resolve()), "experiment": experiment}
    return Distilled(images.float().contiguous(), labels.contiguous(), config, transform, lr, meta={"classes": classes})
