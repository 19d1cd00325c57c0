"""``Distilled``: the one result type of every distiller (and of imported sets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddnb.data.dataset import InputTransform
from ddnb.errors import DdnbError
from ddnb.store import Artifact, load_artifact, save_artifact

KIND = "distilled"


@dataclass
class Distilled:
    """A small synthetic training set in model-input space.

    ``images`` float32 [M, C, H, W] (normalised like the real data; may leave the real range),
    ``labels`` int64 [M] (class-major) or soft targets float32 [M, classes], ``lr`` the learned
    learning rate where the method has one, ``losses`` the distillation loss per step.
    ``config`` is what made it (method, data, ipc, seed, options); ``meta`` holds class names etc.
    A set in ZCA space is saved compactly: its transform names the whitening by fingerprint
    (``InputTransform.compact``) and the file keeps the decoded pixels, ``saved_pixels`` once read back.
    """

    images: torch.Tensor
    labels: torch.Tensor
    config: dict[str, Any]
    transform: InputTransform
    lr: float | None = None
    losses: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    meta: dict[str, Any] = field(default_factory=dict)
    saved_pixels: torch.Tensor | None = None  # [M, C, H, W], for a transform without its ZCA matrices

    @property
    def ipc(self) -> int:
        """Images per class (the set is balanced)."""
        return len(self.images) // len(self.meta["classes"])

    def pixels(self) -> torch.Tensor:
        """The images as pixels [M, C, H, W] (un-normalised; not clipped to [0, 1]); for a compact ZCA set,
        the pixels it was saved with."""
        if self.transform.invertible:
            return self.transform.decode(self.images)
        if self.saved_pixels is None:
            raise DdnbError("this set's transform holds no ZCA matrices and the set has no saved pixels")
        return self.saved_pixels.to(self.images.device)

    def parts(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)`` as written to disk (what a store job returns; ``config`` is its key). ZCA
        matrices are not written (they belong to the data set): their fingerprint and the pixels are."""
        transform = self.transform.compact()
        tensors = {"images": self.images, "labels": self.labels, "losses": self.losses}
        tensors |= {f"transform.{k}": v for k, v in transform.tensors().items()}
        meta = self.meta | {"lr": self.lr}
        if transform.whitened:
            tensors["pixels"] = self.pixels()
            meta["zca_reference"] = transform.zca_reference
        return tensors, meta

    def save(self, path: str | Path) -> Path:
        """Write as a verified artifact (safetensors + JSON sidecar)."""
        tensors, meta = self.parts()
        return save_artifact(path, tensors, self.config, meta, kind=KIND)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Distilled":
        """Read a distilled set written by :meth:`save` (checksums verified)."""
        return cls.from_artifact(load_artifact(path, device))

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "Distilled":
        """Rebuild from a loaded artifact."""
        tensors = artifact.tensors
        if artifact.kind not in (KIND, None):
            raise DdnbError(f"{artifact.path} holds a {artifact.kind} artifact, not a distilled set "
                            "(write one with `ddnb distill` or `ddnb import`)")
        if "images" not in tensors or "labels" not in tensors:
            raise DdnbError(f"{artifact.path} is not a distilled set (no images/labels tensors)")
        named = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("transform.")}
        meta = dict(artifact.meta)
        transform = InputTransform(**named, zca_reference=meta.pop("zca_reference", None))
        return cls(tensors["images"], tensors["labels"], artifact.config, transform, meta.pop("lr", None), tensors["losses"], meta,
                   tensors.get("pixels"))
