"""The baseline every distiller is compared to: ``ipc`` random real images per class."""

from __future__ import annotations

from ddnb.data import Dataset, sample_per_class
from ddnb.distill.result import Distilled


def random_subset(dataset: Dataset, ipc: int, seed: int = 0) -> Distilled:
    """``ipc`` distinct random training images per class, drawn with ``seed``, class-major."""
    index = sample_per_class(dataset.train.labels, ipc, seed, dataset.num_classes)
    subset = dataset.train.subset(index)
    config = {"method": "random", "data": dataset.source, "ipc": ipc, "seed": seed}
    meta = {"classes": dataset.classes, "train_indices": index.tolist()}
    return Distilled(subset.images.clone(), subset.labels.clone(), config, dataset.transform, meta=meta)
