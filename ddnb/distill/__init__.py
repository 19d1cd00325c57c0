"""Distillers behind one call: ``distill(method, dataset, ipc=10, seed=0, ...) -> Distilled``."""

from __future__ import annotations

from typing import Callable

from ddnb.data import Dataset
from ddnb.distill.real_subset import random_subset
from ddnb.distill.result import Distilled
from ddnb.errors import DdnbError

METHODS: dict[str, Callable[..., Distilled]] = {"random": random_subset}


def distill(method: str, dataset: Dataset, ipc: int = 10, seed: int = 0, **options: object) -> Distilled:
    """Make a small training set of ``ipc`` images per class from ``dataset`` with ``method``."""
    if method not in METHODS:
        raise DdnbError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](dataset, ipc=ipc, seed=seed, **options)


__all__ = ["METHODS", "Distilled", "distill"]
