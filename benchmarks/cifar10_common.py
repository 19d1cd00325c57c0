"""What the CIFAR-10 analysis scripts share: their common flags, the data set and the sets they analyse."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddnb.data import Dataset, load_dataset
from ddnb.distill import Distilled, distill
from ddnb.profiles import Profile, get_profile
from ddnb.store import Store


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile, --data, --store and --out (the results file, kept across sessions)."""
    parser.add_argument("--profile", default="cifar10-cpu")
    parser.add_argument("--data", default="imagefolder:../shared/data/cifar10-jpeg.tar")
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", type=Path, required=True)


def open_data(args: argparse.Namespace) -> tuple[Profile, Store, Dataset]:
    """The profile pointed at ``--data``, the store and the data set (model-input space)."""
    profile = get_profile(args.profile, args.data)
    store = Store(args.store)
    return profile, store, load_dataset(profile.data, store)


def load_set(source: str, dataset: Dataset, ipc: int) -> tuple[str, Distilled]:
    """(name, set) of ``random`` (``ipc`` random real images per class, seed 0: the foundation's baseline) or a set
    file from ``ddnb distill`` / ``ddnb import``, named by its method (else its file name)."""
    if source == "random":
        return "random", distill("random", dataset, ipc=ipc, seed=0)
    distilled = Distilled.load(source)
    return distilled.config.get("method") or Path(source).stem, distilled
