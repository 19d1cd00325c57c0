"""CIFAR-10 through torchvision's loader (downloads where the network allows it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ddnb.errors import DdnbError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_root(store_root: Path) -> Path:
    """``$DDNB_CIFAR10`` if set, else ``STORE/downloads/cifar10``: holds ``cifar-10-batches-py/``."""
    return Path(os.environ.get("DDNB_CIFAR10", store_root / "downloads" / "cifar10")).expanduser()


def _torchvision_split(root: Path, train: bool):
    from torchvision.datasets import CIFAR10

    try:  # torchvision verifies the official files by md5 before it reads them
        return CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        pass
    try:
        return CIFAR10(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise DdnbError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({type(error).__name__}: {error}). "
            "Put the extracted 'cifar-10-batches-py' folder there (or set DDNB_CIFAR10 to its parent), "
            "or use a local class-per-folder copy with --data imagefolder:PATH (a folder or .tar)."
        ) from None


def read_cifar10(root: Path) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """CIFAR-10 from ``root`` -> (classes, (train uint8 [50000,3,32,32], labels), (test ..., labels))."""
    root.mkdir(parents=True, exist_ok=True)
    splits = []
    for train in (True, False):
        loaded = _torchvision_split(root, train)
        images = torch.from_numpy(np.ascontiguousarray(loaded.data)).permute(0, 3, 1, 2).contiguous()
        splits.append((images, torch.tensor(loaded.targets, dtype=torch.int64)))
    return list(CLASSES), splits[0], splits[1]
