"""Expert trajectories for trajectory matching: networks trained on real data, parameters kept per epoch.

One artifact per expert (kind ``expert``), holding each parameter stacked over snapshots
``[snapshots + 1, *shape]`` (snapshot 0 is the initialisation). Experts are made one by one through the
store, so a killed ``ddnb experts`` run resumes at the first missing expert. Each expert is a
``ddnb.jobs.Job`` (``expert_jobs``), so experts can also be trained as Ray tasks (``runner``).

Published settings (MTT, Cazenavette et al. CVPR 2022, ``buffer.py``): ConvNet, SGD lr 0.01 without
momentum or weight decay, batch 256, DSA, 50 epochs, 100 experts (ZCA-whitened data for CIFAR-10).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import torch

from ddnb.data import Dataset
from ddnb.errors import check_fields
from ddnb.jobs import Job, Runner, data_job, run_jobs
from ddnb.nets import NET_NAMES, build_net
from ddnb.store import Store
from ddnb.train import Protocol, train

KIND = "expert"
Trajectory = dict[str, torch.Tensor]  # parameter name -> [snapshots + 1, *shape]


@dataclass(frozen=True)
class ExpertConfig:
    """How each expert is trained and how often its parameters are kept."""

    net: str = field(default="convnet", metadata={"help": "network trained by every expert", "choices": NET_NAMES})
    epochs: int = field(default=50, metadata={"help": "length of each expert's training, in epochs"})
    snapshot_iterations: int | None = field(default=None, metadata={"help": "iterations between snapshots (None: one epoch)"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate (MTT's lr_teacher)"})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum", "max": 1})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 weight decay"})
    batch_size: int = field(default=256, metadata={"help": "mini-batch size"})
    dsa: bool = field(default=True, metadata={"help": "DSA augmentation per image"})

    def __post_init__(self) -> None:
        check_fields(self)


def _protocol(config: ExpertConfig) -> Protocol:
    return Protocol("expert", config.lr, config.momentum, config.weight_decay, config.batch_size, epochs=config.epochs,
                    augment=config.dsa)


def snapshot_iterations(config: ExpertConfig, images: int) -> range:
    """The iterations at which an expert trained on ``images`` training images keeps its parameters (0 first)."""
    every = config.snapshot_iterations or -(-images // config.batch_size)
    return range(0, _protocol(config).iterations(images) + 1, every)


def train_expert(dataset: Dataset, config: ExpertConfig, seed: int, progress: bool = False) -> Trajectory:
    """Train one expert on ``dataset.train`` and return its stacked parameter snapshots."""
    protocol, snapshots = _protocol(config), snapshot_iterations(config, len(dataset.train))
    net = build_net(config.net, seed, *dataset.image_shape[:1], dataset.image_shape[-1], dataset.num_classes,
                    device=dataset.train.images.device)
    result = train(net, dataset.train.images, dataset.train.labels, protocol, seed, snapshot_at=snapshots, progress=progress)
    names = [name for name, _ in net.named_parameters()]
    return {name: torch.stack([result.snapshots[t][name] for t in snapshots]) for name in names}


def _make_expert(dataset: Dataset, config: ExpertConfig, seed: int, progress: bool = False):
    return train_expert(dataset, config, seed, progress), {}


def expert_jobs(dataset: Dataset, config: ExpertConfig, count: int, seed: int = 0, progress: bool = False) -> list[Job]:
    """One job per expert (seeds ``seed .. seed+count-1``); ``progress`` shows each expert's training."""
    return [data_job(KIND, {"data": dataset.source, "expert": dataclasses.asdict(config), "seed": seed + index},
                     partial(_make_expert, config=config, seed=seed + index, progress=progress), dataset)
            for index in range(count)]


def expert_trajectories(dataset: Dataset, config: ExpertConfig, count: int, store: Store, seed: int = 0,
                        progress: bool = True, runner: Runner | None = None) -> list[Trajectory]:
    """``count`` experts (seeds ``seed .. seed+count-1``), loaded from the store or trained and saved there
    (by ``runner``: ``ddnb.jobs``, default this process)."""
    artifacts = run_jobs(expert_jobs(dataset, config, count, seed, progress), store, runner, progress, desc="experts")
    return [{k: v.to(dataset.train.images.device) for k, v in artifact.tensors.items()} for artifact in artifacts]
