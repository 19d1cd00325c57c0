"""Class-per-folder image trees, as a directory or a ``.tar`` of one, decoded to uint8 tensors.

Accepted layouts (class order is sorted by folder name)::

    ROOT/train/<class>/*.png|jpg   and   ROOT/test/<class>/*      (explicit splits)
    ROOT/<class>/*                                                 (one tree; a seeded 1/6 per class is held out as test)

A ``.tar`` may wrap either layout, optionally under one top-level folder.
"""

from __future__ import annotations

import io
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from ddnb.errors import DdnbError, first_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DecodedSplit = tuple[torch.Tensor, torch.Tensor]  # images uint8 [N, 3, H, W], labels int64 [N]


def _iter_files(path: Path):
    """Yield (relative posix path, bytes) for every image file under a directory or in a tar."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                yield PurePosixPath(file.relative_to(path).as_posix()), file.read_bytes()
        return
    if not tarfile.is_tarfile(path):  # tarfile's own error lists every compression it tried, one line each
        raise DdnbError(f"{path} is neither a folder nor a readable tar archive; give a class-per-folder tree or a .tar of one")
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if member.isfile() and name.suffix.lower() in IMAGE_SUFFIXES:
                    yield name, archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DdnbError(f"{path} is not a readable tar archive ({first_line(error)}); it may be truncated") from None


def _decode(data: bytes, name: PurePosixPath) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise DdnbError(f"cannot decode image {name} ({first_line(error)})") from None


def _group(path: Path) -> dict[tuple[str, str], list[tuple[PurePosixPath, np.ndarray]]]:
    """Images grouped by (split or "", class name), each list sorted by file name."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for name, data in _iter_files(path):
        parts = name.parts
        if "train" in parts[:-2] or "test" in parts[:-2]:
            split = "train" if "train" in parts[:-2] else "test"
            groups[(split, parts[-2])].append((name, _decode(data, name)))
        elif len(parts) >= 2:
            groups[("", parts[-2])].append((name, _decode(data, name)))
    if not groups:
        raise DdnbError(f"no images found under {path} (expected <class>/<image> folders)")
    return {key: sorted(items, key=lambda item: str(item[0])) for key, items in groups.items()}


def _stack(items: list[tuple[PurePosixPath, np.ndarray]], label: int, name: str) -> DecodedSplit:
    shapes = {array.shape for _, array in items}
    if len(shapes) != 1:
        raise DdnbError(f"images of class {name!r} differ in size {sorted(shapes)}; resize them to one size first")
    images = torch.from_numpy(np.stack([array for _, array in items])).permute(0, 3, 1, 2).contiguous()
    return images, torch.full((len(items),), label, dtype=torch.int64)


def _concat(parts: list[DecodedSplit]) -> DecodedSplit:
    sizes = sorted({tuple(images.shape[1:]) for images, _ in parts})
    if len(sizes) != 1:
        raise DdnbError(f"classes differ in image size {sizes}; resize the images to one size first")
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


def _hold_out(images: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[DecodedSplit, DecodedSplit]:
    generator = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[: max(1, len(members) // 6)]]
        test_mask[chosen] = True
    return (images[~test_mask], labels[~test_mask]), (images[test_mask], labels[test_mask])


def read_image_folder(path: str | Path, seed: int = 0) -> tuple[list[str], DecodedSplit, DecodedSplit]:
    """Decode a class-per-folder tree (directory or tar) -> (class names, train split, test split).

    Splits hold uint8 images [N, 3, H, W] and int64 labels [N]; ``seed`` only matters for a tree
    without train/test folders.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DdnbError(f"image folder {path} does not exist")
    groups = _group(path)
    splits = {split for split, _ in groups}
    if splits - {""} and "" in splits:
        raise DdnbError(f"{path} mixes train/test folders with top-level class folders")
    classes = sorted({name for _, name in groups})
    if len(classes) < 2:
        raise DdnbError(f"{path} holds one class ({classes[0]!r}); a classifier needs at least two class folders")
    if splits == {""}:
        merged = _concat([_stack(groups[("", name)], label, name) for label, name in enumerate(classes)])
        return classes, *_hold_out(*merged, seed)
    missing = [(s, name) for s in ("train", "test") for name in classes if (s, name) not in groups]
    if missing:
        raise DdnbError(f"{path}: no images for {missing[0][1]!r} in its {missing[0][0]} split")
    train, test = ([_stack(groups[(s, name)], label, name) for label, name in enumerate(classes)] for s in ("train", "test"))
    return classes, _concat(train), _concat(test)
