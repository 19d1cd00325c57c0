"""Shared fixtures: a private store per test session, a small shapes data set, and the smoke book of the random set."""

from __future__ import annotations

import pytest
import torch

from ddnb.data import DataConfig, load_dataset
from ddnb.sections import run_profile
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


RANDOM_ONLY = ["random"]  # no distiller: the pages' own jobs, and the pools and networks every set shares


@pytest.fixture(scope="session")
def random_book(tmp_path_factory) -> Store:
    """A store of its own holding the smoke book's distillation page for the random set, made by ``run_profile``
    (``random_book_runs`` makes the rest). The sections tests check what each run made; the book test adds it all
    to the session's store instead of making the random set's results and the shared pools a second time."""
    store = Store(tmp_path_factory.mktemp("made"))
    first = run_profile("smoke", methods=RANDOM_ONLY, device="cpu", store=store, pages=["distillation"])
    assert [(report.kind, report.made) for report in first] == [("distilled", True), ("evaluation", True)]
    return store


@pytest.fixture(scope="session")
def random_book_runs(random_book):
    """The reports of the run that makes every other result of ``random_book`` (a resumed run: what is there is
    loaded)."""
    return run_profile("smoke", methods=RANDOM_ONLY, device="cpu", store=random_book)
