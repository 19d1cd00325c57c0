"""Data sets as in-memory tensors: ``load_dataset(DataConfig(name=...))``; see ``sources`` for the names."""

from ddnb.data.dataset import Dataset, InputTransform, Split
from ddnb.data.sampling import balanced_head, indices_by_class, sample_per_class
from ddnb.data.sources import DataConfig, load_dataset

__all__ = ["DataConfig", "Dataset", "InputTransform", "Split", "balanced_head", "indices_by_class", "load_dataset", "sample_per_class"]
