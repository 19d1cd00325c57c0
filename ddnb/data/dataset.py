"""In-memory data sets: tensors ready for training plus the transform back to pixels.

Images live in *model-input space* (normalised, optionally ZCA-whitened) as float32 [N, C, H, W];
``InputTransform`` maps pixels in [0, 1] to that space and back. Distilled sets are stored in the same
space (as the distillation literature does), and ``decode`` shows them as pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ddnb.data.sampling import balanced_head
from ddnb.errors import DdnbError
from ddnb.store import fingerprint


@dataclass
class InputTransform:
    """Per-channel normalisation, then optional ZCA whitening: ``pixels -> model inputs``.

    A transform read back from a compact distilled set holds no ZCA matrices (two 3072 x 3072 float32
    matrices, 75 MB for CIFAR-10, refit from the data in seconds) but ``zca_reference``, the fingerprint of
    its whitening matrix: it still knows which space its images live in (``same_as``), but cannot ``encode``
    or ``decode``; the set keeps its pixels instead (``Distilled.pixels``).
    """

    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    zca: torch.Tensor | None = None  # [D, D], D = C*H*W, applied to normalised, flattened images
    zca_inverse: torch.Tensor | None = None  # [D, D]
    zca_mean: torch.Tensor | None = None  # [D]
    zca_reference: str | None = None  # fingerprint of ``zca`` when the matrices are not held
    _zca_fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def whitened(self) -> bool:
        """True when the transform includes ZCA whitening (held or referenced)."""
        return self.zca is not None or self.zca_reference is not None

    @property
    def invertible(self) -> bool:
        """True when ``encode`` and ``decode`` can run (no ZCA, or its matrices are held)."""
        return self.zca is not None or self.zca_reference is None

    def zca_fingerprint(self) -> str | None:
        """The whitening matrix's fingerprint (``ddnb.store.fingerprint``; computed once), or None without ZCA."""
        if self.zca_reference is not None:
            return self.zca_reference
        if self.zca is not None and self._zca_fingerprint is None:
            self._zca_fingerprint = fingerprint(self.zca)
        return self._zca_fingerprint

    def compact(self) -> "InputTransform":
        """The same transform without the ZCA matrices (``zca_reference`` names them); unchanged without ZCA."""
        if self.zca is None:
            return self
        return InputTransform(self.mean, self.std, zca_mean=self.zca_mean, zca_reference=self.zca_fingerprint())

    def _require_matrices(self) -> None:
        if not self.invertible:
            raise DdnbError("this transform names its ZCA whitening by fingerprint only (a compact distilled set): "
                            "use the set's stored pixels (Distilled.pixels), or the data set's transform (load it with zca=True)")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [N, C, H, W] in [0, 1] -> model inputs [N, C, H, W]."""
        self._require_matrices()
        x = (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)
        if self.zca is None:
            return x
        flat = x.flatten(1) - self.zca_mean.to(x)
        return (flat @ self.zca.to(x)).view_as(x)

    def decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs [N, C, H, W] -> pixels (not clipped: distilled images may leave [0, 1])."""
        self._require_matrices()
        x = inputs
        if self.zca is not None:
            x = (x.flatten(1) @ self.zca_inverse.to(x) + self.zca_mean.to(x)).view_as(x)
        return x * self._view(self.std, x) + self._view(self.mean, x)

    @staticmethod
    def _view(stat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return stat.to(like).view(1, -1, 1, 1)

    def same_as(self, other: "InputTransform") -> bool:
        """True when both map pixels to the same inputs: equal normalisation and ZCA mean (compared on the CPU),
        and the same whitening matrix by fingerprint."""
        mine, theirs = self.compact().tensors(), other.compact().tensors()
        return (self.zca_fingerprint() == other.zca_fingerprint() and mine.keys() == theirs.keys()
                and all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The transform as named tensors (for storing beside a distilled set; ``zca_reference`` is not a tensor)."""
        named = {"mean": self.mean, "std": self.std}
        if self.zca is not None:
            named |= {"zca": self.zca, "zca_inverse": self.zca_inverse}
        if self.zca_mean is not None:
            named["zca_mean"] = self.zca_mean
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

    name: str  # shapes, cifar10, or an image folder's name (without .tar)
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
