"""The optimisation loop every distiller shares: progress, checkpoints, resume, divergence checks.

A method supplies ``step(synthetic, real, generator) -> loss``, which updates the synthetic images
(and learned learning rate) in place; this module owns everything around it. Checkpoints go through
the store every ``checkpoint_every`` steps and hold all state the next step reads (images, optimiser
buffers, generator state, method state), so a killed run resumed from its last checkpoint ends with
exactly the tensors of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from ddnb.data import Dataset, sample_per_class
from ddnb.data.sampling import indices_by_class
from ddnb.distill.result import Distilled
from ddnb.errors import DdnbError, check_fields
from ddnb.nets import build_net
from ddnb.precision import PRECISIONS, precision
from ddnb.store import Store, work_so_far

CHECKPOINT_KIND = "checkpoint"
# real images through the network at once in DM's and GM's per-class passes: the references' one-class batch at the
# published settings (256), so that their peak memory bounds ours
REAL_IMAGES_PER_PASS = 256


def classes_per_pass(classes: int, per_class: int, chosen: int | None) -> int:
    """How many classes' real images (``per_class`` each) go through the network in one pass: ``chosen``, else as many
    as fit ``REAL_IMAGES_PER_PASS`` images; at least one, at most ``classes``."""
    return min(classes, chosen or max(1, REAL_IMAGES_PER_PASS // per_class))


def real_chunks(images: torch.Tensor, labels: torch.Tensor, classes: int, per_class: int, chosen: int | None):
    """A class-major real batch (images [C*per_class, ...], labels [C*per_class]) split into ``classes_per_pass``
    whole classes a piece: a list of (images, labels)."""
    size = classes_per_pass(classes, per_class, chosen) * per_class
    return list(zip(images.split(size), labels.split(size)))


@dataclass
class Synthetic:
    """The learnable set: images [M, C, H, W] (leaf, requires grad), labels [M], optional lr (leaf scalar)."""

    images: torch.Tensor
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    lr: torch.Tensor | None = None
    lr_optimizer: torch.optim.Optimizer | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # method state carried between steps
    # seconds of work ({"wall_s", "cpu_s"}) that earlier, interrupted attempts put into the checkpoint resumed from
    earlier_cost: dict[str, float] = field(default_factory=dict)

    def zero_grad(self) -> None:
        """Clear the gradients of images and lr."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_optimizer is not None:
            self.lr_optimizer.zero_grad(set_to_none=True)

    def update(self) -> None:
        """Apply one optimiser step to images (and lr)."""
        self.optimizer.step()
        if self.lr_optimizer is not None:
            self.lr_optimizer.step()


class RealSampler:
    """Random real training images by class, drawn from an explicit generator."""

    def __init__(self, dataset: Dataset):
        self.images, self.labels = dataset.train.images, dataset.train.labels
        self.num_classes = dataset.num_classes
        self.by_class = indices_by_class(self.labels, self.num_classes)

    def per_class(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random images of every class, class-major: images [C*n, ...], labels [C*n]."""
        picks = [members[torch.randint(len(members), (n,), generator=generator)] for members in self.by_class]
        index = torch.cat(picks).to(self.images.device)
        return self.images[index], self.labels[index]

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random images of any class: images [n, ...], labels [n]."""
        index = torch.randint(len(self.labels), (n,), generator=generator).to(self.images.device)
        return self.images[index], self.labels[index]


def network_like(synthetic: Synthetic, real: RealSampler, name: str) -> nn.Module:
    """A network named ``name`` that fits the synthetic images (channels, size) and classes, on their device."""
    channels, size = synthetic.images.shape[1], synthetic.images.shape[-1]
    return build_net(name, 0, channels, size, real.num_classes, device=synthetic.images.device)


class Method(Protocol):
    """What a distiller provides to the loop."""

    def prepare(self, synthetic: Synthetic, real: RealSampler, generator: torch.Generator) -> None: ...

    def step(self, synthetic: Synthetic, real: RealSampler, generator: torch.Generator) -> float: ...


@dataclass(frozen=True)
class LoopConfig:
    """Length and bookkeeping of a distillation run."""

    steps: int = field(default=1000, metadata={"help": "number of outer distillation steps", "min": 0})
    checkpoint_every: int = field(default=50, metadata={"help": "save a resumable checkpoint every N steps (0: never)", "min": 0})
    explode_factor: float = field(default=1e6, metadata={"help": "stop when a loss exceeds this many times the first loss"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    precision: str = field(default="fp32", metadata={"help": "fp32, tf32 or bf16 autocast for every step (ddnb.precision)",
                                                     "choices": PRECISIONS})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Preset:
    """A method's settings for one profile: how many steps, which options, and whether the data is ZCA-whitened."""

    steps: int = field(metadata={"help": "number of outer distillation steps"})
    options: Any = field(metadata={"help": "the method's options dataclass"})
    zca: bool = field(default=False, metadata={"help": "distil (and evaluate) in ZCA-whitened input space"})


def initial_images(dataset: Dataset, ipc: int, init: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-major starting images [C*ipc, C, H, W] and labels: random real ones, or Gaussian noise."""
    labels = torch.arange(dataset.num_classes).repeat_interleave(ipc)
    if init == "real":
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        images = dataset.train.images[sample_per_class(dataset.train.labels, ipc, seed, dataset.num_classes).to(dataset.train.images.device)]
    elif init == "noise":
        images = torch.randn(len(labels), *dataset.image_shape, generator=generator)
    else:
        raise DdnbError(f"unknown initialisation {init!r}; use real or noise")
    return images.detach().clone().to(dataset.train.images.device), labels.to(dataset.train.images.device)


def _checkpoint_tensors(synthetic: Synthetic, generator: torch.Generator, losses: list[float]) -> dict[str, torch.Tensor]:
    tensors = {"images": synthetic.images.detach(), "generator": generator.get_state(), "losses": torch.tensor(losses)}
    if synthetic.lr is not None:
        tensors["lr"] = synthetic.lr.detach()
    for name, optimizer in (("opt", synthetic.optimizer), ("lr_opt", synthetic.lr_optimizer)):
        tensors |= {f"{name}.{key}": value for key, value in _optimizer_tensors(optimizer).items()}
    return tensors | {f"state.{k}": v for k, v in synthetic.state.items()}


def _optimizer_params(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    return [] if optimizer is None else [p for group in optimizer.param_groups for p in group["params"]]


def _optimizer_tensors(optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """Every tensor of the optimiser's state (SGD momentum, Adam moments and step), as ``INDEX.KEY``."""
    return {f"{index}.{key}": value for index, param in enumerate(_optimizer_params(optimizer))
            for key, value in optimizer.state.get(param, {}).items() if isinstance(value, torch.Tensor)}


def _restore(synthetic: Synthetic, generator: torch.Generator, tensors: dict[str, torch.Tensor]) -> list[float]:
    with torch.no_grad():
        synthetic.images.copy_(tensors["images"])
        if synthetic.lr is not None:
            synthetic.lr.copy_(tensors["lr"])
    generator.set_state(tensors["generator"])
    for name, optimizer in (("opt", synthetic.optimizer), ("lr_opt", synthetic.lr_optimizer)):
        for index, param in enumerate(_optimizer_params(optimizer)):
            prefix = f"{name}.{index}."
            # Adam keeps its step count on the CPU unless capturable; every other buffer lives beside its parameter
            state = {k[len(prefix):]: v.clone() if k.endswith(".step") else v.to(param.device).clone()
                     for k, v in tensors.items() if k.startswith(prefix)}
            if state:
                optimizer.state[param] = state
    synthetic.state.update({k.split(".", 1)[1]: v.to(synthetic.images.device) for k, v in tensors.items() if k.startswith("state.")})
    return tensors["losses"].tolist()


def _check_loss(loss: float, losses: list[float], step: int, config: LoopConfig) -> None:
    if not math.isfinite(loss):
        raise DdnbError(f"distillation diverged: loss is {loss} at step {step}; the last good checkpoint is kept "
                        "(lower the image or network learning rate)")
    if losses and losses[0] > 0 and loss > config.explode_factor * losses[0]:
        raise DdnbError(f"distillation exploded: loss {loss:.3g} at step {step} is over {config.explode_factor:g}x the first "
                        f"({losses[0]:.3g}); the last good checkpoint is kept")


def run_loop(
    method: Method,
    synthetic: Synthetic,
    dataset: Dataset,
    generator: torch.Generator,
    config: LoopConfig,
    run_config: dict[str, Any],
    store: Store | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``config.steps`` steps of ``method`` (resuming from the store's checkpoint for ``run_config``).

    Returns the loss of every step. ``on_step(step, loss)`` is called after each step (used by tests
    to interrupt a run). The checkpoint is removed once the run completes.
    """
    started = time.perf_counter(), time.process_time()
    real = RealSampler(dataset)
    method.prepare(synthetic, real, generator)
    losses: list[float] = []
    checkpoint = None if store is None else store.find(CHECKPOINT_KIND, run_config)  # a corrupt one: start over
    if checkpoint is not None:
        losses = _restore(synthetic, generator, checkpoint.tensors)
        synthetic.earlier_cost = checkpoint.meta.get("work_s", {})
    bar = tqdm(range(len(losses), config.steps), desc=run_config.get("method", "distill"), disable=not config.progress,
               initial=len(losses), total=config.steps)
    for step in bar:
        with precision(config.precision, synthetic.images.device):
            loss = method.step(synthetic, real, generator)
        _check_loss(loss, losses, step, config)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4g}")
        done = step + 1
        if store is not None and config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            store.save(CHECKPOINT_KIND, run_config, _checkpoint_tensors(synthetic, generator, losses),
                       {"step": done, "work_s": work_so_far(synthetic.earlier_cost, started)})
        if on_step is not None:
            on_step(done, loss)
    return losses


def finish(synthetic: Synthetic, dataset: Dataset, losses: list[float], run_config: dict[str, Any], store: Store | None) -> Distilled:
    """Package a finished run as ``Distilled`` and drop its checkpoint. A resumed run's meta names the work
    of its earlier attempts (``earlier_cost``), which ``Store.get_or_make`` adds to the cost it records."""
    if store is not None:
        store.remove(CHECKPOINT_KIND, run_config)
    lr = None if synthetic.lr is None else float(synthetic.lr.detach())
    meta = {"classes": dataset.classes} | ({"earlier_cost": synthetic.earlier_cost} if synthetic.earlier_cost else {})
    return Distilled(synthetic.images.detach().clone(), synthetic.labels.clone(), run_config, dataset.transform, lr,
                     torch.tensor(losses), meta)


def make_synthetic(
    dataset: Dataset, ipc: int, init: str, lr_images: float, generator: torch.Generator,
    learned_lr: float | None = None, lr_lr: float = 1e-5, optimizer: str = "sgd",
) -> Synthetic:
    """Starting synthetic set with its optimisers: SGD with momentum 0.5 on images (as DC, DM and MTT) or
    Adam (as RaT-BPTT), and, when ``learned_lr`` is given, a learnable step size with its own SGD (lr
    ``lr_lr``, momentum 0.5, as MTT)."""
    images, labels = initial_images(dataset, ipc, init, generator)
    images.requires_grad_(True)
    if optimizer not in ("sgd", "adam"):
        raise DdnbError(f"unknown image optimiser {optimizer!r}; use sgd or adam")
    image_optimizer = (torch.optim.SGD([images], lr=lr_images, momentum=0.5) if optimizer == "sgd"
                       else torch.optim.Adam([images], lr=lr_images))
    synthetic = Synthetic(images, labels, image_optimizer)
    if learned_lr is not None:
        synthetic.lr = torch.tensor(learned_lr, device=images.device, requires_grad=True)
        synthetic.lr_optimizer = torch.optim.SGD([synthetic.lr], lr=lr_lr, momentum=0.5)
    return synthetic
