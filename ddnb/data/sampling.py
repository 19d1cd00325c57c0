"""Balanced per-class sampling: the random-real baseline and every mixing experiment use it."""

from __future__ import annotations

import torch

from ddnb.errors import DdnbError


def indices_by_class(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """For each class c, the indices [n_c] of ``labels`` equal to c, in ascending order."""
    labels = labels.cpu()
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


def sample_per_class(labels: torch.Tensor, k: int, seed: int, num_classes: int | None = None) -> torch.Tensor:
    """``k`` distinct random indices per class, class-major: int64 [num_classes * k].

    Raises ``DdnbError`` when a class has fewer than ``k`` images.
    """
    if k < 0:
        raise DdnbError(f"images per class must be >= 0, got {k}")
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c, members in enumerate(indices_by_class(labels, num_classes)):
        if len(members) < k:
            raise DdnbError(f"class {c} has only {len(members)} images, fewer than the {k} per class asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen)


def balanced_head(labels: torch.Tensor, count: int | None, num_classes: int | None = None) -> torch.Tensor:
    """Indices (sorted, int64 [<= count]) of the first images of each class in split order, as equal per class
    as ``count`` allows (the first ``count % C`` classes take one more; a class with fewer gives what it has).
    ``None`` or a count >= len(labels): every index. Unlike ``[:count]``, it stays balanced when a split is
    sorted by class (image folders are: their first 2,000 test images are two classes)."""
    if count is None or count >= len(labels):
        return torch.arange(len(labels))
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    shares = [count // num_classes + (c < count % num_classes) for c in range(num_classes)]
    chosen = [members[:share] for members, share in zip(indices_by_class(labels, num_classes), shares)]
    return torch.cat(chosen).sort().values
