"""In-memory data sets: tensors ready for training plus the transform back to pixels.

Images live in *model-input space* (normalised, optionally ZCA-whitened) as float32 [N, C, H, W];
``InputTransform`` maps pixels in [0, 1] to that space and back. Distilled sets are stored in the same
space (as the distillation literature does), and ``decode`` shows them as pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ddnb.data.sampling import balanced_head


@dataclass
class InputTransform:
    """Per-channel normalisation, then optional ZCA whitening: ``pixels -> model inputs``."""

    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    zca: torch.Tensor | None = None  # [D, D], D = C*H*W, applied to normalised, flattened images
    zca_inverse: torch.Tensor | None = None  # [D, D]
    zca_mean: torch.Tensor | None = None  # [D]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [N, C, H, W] in [0, 1] -> model inputs [N, C, H, W]."""
        x = (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)
        if self.zca is None:
            return x
        flat = x.flatten(1) - self.zca_mean.to(x)
        return (flat @ self.zca.to(x)).view_as(x)

    def decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs [N, C, H, W] -> pixels (not clipped: distilled images may leave [0, 1])."""
        x = inputs
        if self.zca is not None:
            x = (x.flatten(1) @ self.zca_inverse.to(x) + self.zca_mean.to(x)).view_as(x)
        return x * self._view(self.std, x) + self._view(self.mean, x)

    @staticmethod
    def _view(stat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return stat.to(like).view(1, -1, 1, 1)

    def same_as(self, other: "InputTransform") -> bool:
        """True when both map pixels to the same inputs (equal tensors; compared on the CPU)."""
        mine, theirs = self.tensors(), other.tensors()
        return mine.keys() == theirs.keys() and all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The transform as named tensors (for storing beside a distilled set)."""
        named = {"mean": self.mean, "std": self.std}
        if self.zca is not None:
            named |= {"zca": self.zca, "zca_inverse": self.zca_inverse, "zca_mean": self.zca_mean}
        return named


@dataclass
class Split:
    """One split: ``images`` float32 [N, C, H, W] (model inputs), ``labels`` int64 [N], per-image attributes."""

    images: torch.Tensor
    labels: torch.Tensor
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "Split":
        """The images at ``indices`` [K], with their labels and attributes."""
        indices = indices.to(self.labels.device)
        return Split(self.images[indices], self.labels[indices], {k: v[indices] for k, v in self.attributes.items()})

    def head(self, count: int | None) -> "Split":
        """``count`` images balanced over classes, the first of each class (``sampling.balanced_head``); all if None."""
        return self.subset(balanced_head(self.labels, count))

    def to(self, device: torch.device | str) -> "Split":
        """A copy on ``device``."""
        return Split(self.images.to(device), self.labels.to(device), {k: v.to(device) for k, v in self.attributes.items()})


@dataclass
class Dataset:
    """A classification data set held in memory (on the training device when there is a GPU)."""

    name: str
    classes: list[str]
    train: Split
    test: Split
    transform: InputTransform
    source: dict = field(default_factory=dict)  # the DataConfig and cache key that made it

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "Dataset":
        """A copy whose splits live on ``device``."""
        return Dataset(self.name, self.classes, self.train.to(device), self.test.to(device), self.transform, self.source)
