"""Named parameter sets: how big every step of the book is on a given machine.

| profile     | data    | target                      | budget                  |
|-------------|---------|-----------------------------|-------------------------|
| smoke       | shapes  | CI and tests                | whole book <= 5 min, 2 cores |
| quick       | shapes  | any laptop; ``make book``   | <= 15 min on 2 cores    |
| cifar10-cpu | CIFAR-10| 2-core CPU, resumable       | <= 3 h                  |
| paper       | CIFAR-10| one GPU, the paper's settings | hours                 |
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ddnb.data import DataConfig
from ddnb.errors import DdnbError
from ddnb.train import EvalConfig


@dataclass(frozen=True)
class Profile:
    """Everything a profile fixes; notebooks receive it as parameters."""

    name: str = field(metadata={"help": "profile name"})
    description: str = field(metadata={"help": "one line for the top of every page"})
    data: DataConfig = field(metadata={"help": "the data set and how much of it"})
    evaluation: EvalConfig = field(metadata={"help": "how distilled sets are scored"})
    ipc: int = field(default=10, metadata={"help": "images per class of every distilled set"})


PROFILES = {
    "smoke": Profile(
        "smoke", "tiny networks and few steps, to test the whole pipeline",
        DataConfig("shapes", train_per_class=500, test_size=2000), EvalConfig(net="convnet-tiny", seeds=(0, 1)),
    ),
    "quick": Profile(
        "quick", "every analysis meaningful on the embedded shapes data, minutes on a laptop",
        DataConfig("shapes", test_size=5000), EvalConfig(seeds=(0, 1, 2)),
    ),
    "cifar10-cpu": Profile(
        "cifar10-cpu", "CIFAR-10 with reduced steps and pools, hours on a 2-core CPU",
        DataConfig("cifar10"), EvalConfig(seeds=(0, 1, 2)),
    ),
    "paper": Profile(
        "paper", "CIFAR-10 with the paper's settings, for one GPU",
        DataConfig("cifar10"), EvalConfig(seeds=(0, 1, 2, 3, 4)),
    ),
}


def get_profile(name: str, data: str | None = None) -> Profile:
    """A named profile, optionally pointed at another data set (e.g. ``imagefolder:PATH``)."""
    if name not in PROFILES:
        raise DdnbError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    return profile if data is None else replace(profile, data=replace(profile.data, name=data))
