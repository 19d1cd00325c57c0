"""Shared fixtures: a private store per test session and a small shapes data set."""

from __future__ import annotations

import pytest
import torch

from ddnb.data import DataConfig, load_dataset
from ddnb.store import Store

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def store(tmp_path_factory) -> Store:
    """One private store for the test session (the shapes cache is made once); DDNB_STORE points at it."""
    store = Store(tmp_path_factory.mktemp("store"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDNB_STORE", str(store.root))
        yield store


@pytest.fixture(scope="session")
def shapes_small(store):
    """shapes with 100 train images per class and 1,000 test images (model-input space)."""
    return load_dataset(DataConfig("shapes", train_per_class=100, test_size=1000), store)
