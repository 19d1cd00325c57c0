"""``load_dataset``: a data set name -> an in-memory ``Dataset``, decoding once into the store.

Names: ``shapes`` (embedded, generated), ``cifar10`` (torchvision), ``imagefolder:PATH`` (a folder or
``.tar`` of class folders). Decoded uint8 tensors are cached as a store artifact keyed by the source,
so the second load of CIFAR-10 takes about a second instead of decoding 60,000 JPEGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddnb.data import cifar10, folder, shapes
from ddnb.data.dataset import Dataset, InputTransform, Split
from ddnb.data.sampling import sample_per_class
from ddnb.data.zca import fit_zca
from ddnb.errors import DdnbError, check_fields
from ddnb.store import Store, settings_key

# The paper's CIFAR-10 statistics (used by every distiller's code), also used for imagefolder copies of CIFAR-10.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
SHAPES_SIZES = {"train": 50_000, "test": 10_000}
VALIDATION_SEED_OFFSET = 7919  # the held-out draw differs from a train_per_class draw with the same seed


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load and how to prepare it."""

    name: str = field(default="shapes", metadata={"help": "shapes, cifar10 or imagefolder:PATH"})
    seed: int = field(default=0, metadata={"help": "generator seed for shapes; held-out split seed for a single-tree imagefolder",
                                                "min": 0})
    train_per_class: int | None = field(default=None, metadata={"help": "keep this many training images per class (None: all)"})
    test_size: int | None = field(default=None, metadata={"help": "keep N test images, the first of each class, balanced (None: all)"})
    zca: bool = field(default=False, metadata={"help": "ZCA-whiten after normalising (fit on train)"})
    zca_regularization: float = field(default=0.1, metadata={"help": "added to covariance eigenvalues before whitening"})
    validation_per_class: int | None = field(default=None, metadata={
        "help": "hold this many training images per class out (drawn with seed) and use them as the test split (None: the real test split)",
        "unkeyed": None})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.name not in ("shapes", "cifar10") and not self.name.startswith("imagefolder:"):
            raise DdnbError(f"unknown data set {self.name!r}; use shapes, cifar10 or imagefolder:PATH")

    def key(self) -> dict:
        """Every field, as results made from this data are keyed (a validation split only when there is one, so
        that keys made before it existed still match)."""
        return settings_key(self)

    def source(self) -> dict:
        """The part of the config that decides the decoded pixels (the cache key)."""
        if self.name == "shapes":
            return {"name": "shapes", "seed": self.seed, "version": shapes.GENERATOR_VERSION, "sizes": SHAPES_SIZES}
        if self.name == "cifar10":
            return {"name": "cifar10"}
        path = _imagefolder_path(self.name)
        stat = path.stat()
        return {"name": "imagefolder", "path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "seed": self.seed}


def _imagefolder_path(name: str) -> Path:
    if not name.startswith("imagefolder:"):
        raise DdnbError(f"unknown data set {name!r}; use shapes, cifar10 or imagefolder:PATH")
    path = Path(name.split(":", 1)[1]).expanduser().resolve()
    if not path.exists():
        raise DdnbError(f"image folder {path} does not exist")
    return path


def _decode(config: DataConfig, store: Store) -> tuple[dict[str, torch.Tensor], dict]:
    """Decoded uint8 tensors and class names, made from the source (slow path)."""
    attributes: dict[str, torch.Tensor] = {}
    if config.name == "shapes":
        splits = [shapes.generate_shapes(SHAPES_SIZES[s], config.seed, s) for s in ("train", "test")]
        classes = list(shapes.SHAPE_CLASSES)
        attributes = {f"{s}.attr.{k}": v for s, (_, _, attrs) in zip(("train", "test"), splits) for k, v in attrs.items()}
    elif config.name == "cifar10":
        classes, *splits = cifar10.read_cifar10(cifar10.cifar10_root(store.root))
    else:
        classes, *splits = folder.read_image_folder(_imagefolder_path(config.name), config.seed)
    tensors = {f"{s}.{part}": t for s, split in zip(("train", "test"), splits) for part, t in zip(("images", "labels"), split)}
    return tensors | attributes, {"classes": classes}


def _split(tensors: dict[str, torch.Tensor], name: str) -> Split:
    prefix = f"{name}.attr."
    attributes = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return Split(tensors[f"{name}.images"], tensors[f"{name}.labels"], attributes)


def _statistics(classes: list[str], train_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if classes == cifar10.CLASSES and train_pixels.shape[1:] == (3, 32, 32):
        return torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    return train_pixels.mean((0, 2, 3)), train_pixels.std((0, 2, 3))


def load_dataset(config: DataConfig | str = DataConfig(), store: Store | None = None, device: torch.device | str = "cpu") -> Dataset:
    """Load a data set into memory as model inputs (normalised float32) on ``device``.

    The decoded pixels are cached in ``store`` (default: ``$DDNB_STORE`` or ``~/.cache/ddnb``).
    Normalisation uses the paper's constants for CIFAR-10 (also for an image-folder copy with the
    CIFAR-10 class names) and the train split's per-channel mean/std otherwise.
    """
    config = DataConfig(name=config) if isinstance(config, str) else config
    store = store or Store()
    artifact = store.get_or_make("dataset", config.source(), lambda: _decode(config, store))
    classes = artifact.meta["classes"]
    train, test = _split(artifact.tensors, "train"), _split(artifact.tensors, "test")
    if config.validation_per_class is not None:  # model selection never sees the test split
        counts = torch.bincount(train.labels, minlength=len(classes))
        if config.validation_per_class >= int(counts.min()):
            smallest = int(counts.argmin())
            raise DdnbError(f"holding out {config.validation_per_class} images per class leaves class {classes[smallest]} "
                            f"({int(counts[smallest])} training images) none to train on; hold out at most {int(counts.min()) - 1}")
        held_out = sample_per_class(train.labels, config.validation_per_class, config.seed + VALIDATION_SEED_OFFSET, len(classes))
        kept = torch.ones(len(train), dtype=torch.bool)
        kept[held_out] = False
        train, test = train.subset(kept.nonzero().flatten()), train.subset(held_out)
    if config.train_per_class is not None:
        train = train.subset(sample_per_class(train.labels, config.train_per_class, config.seed, len(classes)))
    if config.test_size is not None:
        test = test.head(config.test_size)  # balanced: an image folder's test split is sorted by class
    train_pixels, test_pixels = train.images.float() / 255, test.images.float() / 255
    transform = InputTransform(*_statistics(classes, train_pixels))
    if config.zca:
        transform.zca_mean, transform.zca, transform.zca_inverse = fit_zca(transform.encode(train_pixels), config.zca_regularization)
    train = Split(transform.encode(train_pixels), train.labels, train.attributes)
    test = Split(transform.encode(test_pixels), test.labels, test.attributes)
    kind, _, location = config.name.partition(":")
    name = Path(location).name.removesuffix(".tar") if kind == "imagefolder" else kind  # "cifar10-jpeg", not "imagefolder"
    return Dataset(name, classes, train, test, transform, config.key()).to(device)
