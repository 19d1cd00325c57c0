"""Training protocols as data, one training loop, and ``evaluate``.

A ``Protocol`` says how a network is trained (optimiser, batch, length, schedule, augmentation);
``train`` runs it on tensors already in memory; ``evaluate`` returns accuracy plus per-image
predictions and losses. Every random draw (batch order, augmentation) comes from ``seed``; network
initialisation comes from the seed given to ``ddnb.nets.build_net``. On the CPU the same seeds give
the same numbers bit for bit.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ddnb import augment
from ddnb.nets import build_net
from ddnb.errors import DdnbError
from ddnb.kernels import compiled
from ddnb.precision import check_precision, precision
from ddnb.store import settings_key


@dataclass(frozen=True)
class Protocol:
    """How to train a network: SGD with momentum, a batch policy, a length and an lr schedule."""

    name: str = field(metadata={"help": "the protocol's name"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 weight decay"})
    batch_size: int | None = field(default=None, metadata={"help": "mini-batch size; None trains full batch"})
    steps: int | None = field(default=None, metadata={"help": "length in iterations (exclusive with epochs)"})
    epochs: int | None = field(default=None, metadata={"help": "length in passes over the data"})
    decay_at_half: bool = field(default=False, metadata={"help": "multiply lr by 0.1 half-way through"})
    augment: bool = field(default=False, metadata={"help": "DSA augmentation, drawn per image, every iteration"})

    def iterations(self, n: int) -> int:
        """Total number of SGD updates on ``n`` training images."""
        if self.steps is not None:
            return self.steps
        per_epoch = 1 if self.batch_size is None else math.ceil(n / self.batch_size)
        return per_epoch * (self.epochs or 0)


PROTOCOLS = {
    # The paper's analyses: full batch, no weight decay, no augmentation, 300 steps.
    "paper300": Protocol("paper300", steps=300),
    # DC's evaluation protocol (Zhao et al. 2021) and DSA/DM/MTT's (Zhao & Bilen 2021, Cazenavette et al. 2022).
    "dc300": Protocol("dc300", batch_size=256, epochs=300, weight_decay=5e-4, decay_at_half=True),
    "dsa1000": Protocol("dsa1000", batch_size=256, epochs=1000, weight_decay=5e-4, decay_at_half=True, augment=True),
    # Training on real data as in the paper's dynamics analyses: 196 iterations per epoch on CIFAR-10.
    "real": Protocol("real", batch_size=256, epochs=1),
}


def get_protocol(name: str, **overrides: object) -> Protocol:
    """A named protocol with fields replaced by ``overrides`` (None values are ignored)."""
    if name not in PROTOCOLS:
        raise DdnbError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return replace(PROTOCOLS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainResult:
    """What a training run leaves behind (the trained ``net`` is updated in place)."""

    losses: torch.Tensor  # [iterations] training loss of each update's batch
    predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # iteration -> predicted class [N_eval]
    accuracies: dict[int, float] = field(default_factory=dict)  # iteration -> accuracy on the eval split
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # iteration -> state_dict copy


@dataclass
class Evaluation:
    """Accuracy in [0, 1], predicted classes int64 [N] and cross-entropy losses float32 [N]."""

    accuracy: float
    predictions: torch.Tensor
    losses: torch.Tensor


class Batches:
    """Index tensors [B], one per update: the full batch, or mini-batches of a fresh permutation each epoch (the
    last batch of an epoch may be short, as with a DataLoader without drop_last). The permutation is drawn from
    ``generator`` when an epoch begins; ``order`` and ``position`` say where the epoch stands (a checkpoint keeps them)."""

    def __init__(self, n: int, protocol: Protocol, generator: torch.Generator):
        self.n, self.size, self.generator = n, protocol.batch_size, generator
        self.order, self.position = torch.empty(0, dtype=torch.long), 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self.size is None:
            return torch.arange(self.n)
        if self.position >= len(self.order):
            self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
        self.position += self.size
        return self.order[self.position - self.size:self.position]


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> Evaluation:
    """Evaluate ``net`` (in eval mode) on images [N, C, H, W] with labels [N]."""
    was_training = net.training
    net.eval()
    logits = torch.cat([net(chunk) for chunk in images.split(batch_size)])
    net.train(was_training)
    losses = F.cross_entropy(logits, labels, reduction="none")
    predictions = logits.argmax(1)
    return Evaluation((predictions == labels).float().mean().item(), predictions, losses)


def _check_finite(loss: torch.Tensor, iteration: int) -> None:
    if not torch.isfinite(loss):
        raise DdnbError(f"training diverged: loss is {loss.item()} at iteration {iteration}; lower the learning rate")


def train(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: Protocol,
    seed: int = 0,
    eval_split: tuple[torch.Tensor, torch.Tensor] | None = None,
    record_at: Sequence[int] = (),
    snapshot_at: Sequence[int] = (),
    progress: bool = False,
    until: int | None = None,
    at_iteration: Callable[[nn.Module, int], None] | None = None,
    resume: dict[str, torch.Tensor] | None = None,
    checkpoint_every_s: float = 0.0,
    on_checkpoint: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> TrainResult:
    """Train ``net`` in place on images [N, C, H, W] and labels [N] with ``protocol``.

    Iteration t means "after t updates" (t = 0 is the initial network). At each t in ``record_at`` the
    predictions and accuracy on ``eval_split`` are stored; at each t in ``snapshot_at`` a copy of the
    state_dict; at every t ``at_iteration(net, t)`` is called (a measurement; it must leave ``net`` as it
    found it). ``until``: stop after that many updates, exactly as the full run would have been at that
    point (``losses`` then has ``until`` entries). Labels may also be soft targets [N, classes]. A
    non-finite loss raises ``DdnbError``.

    Checkpoints: with ``on_checkpoint``, the state after an update (``training_state``: tensors) is passed to it
    once ``checkpoint_every_s`` seconds of wall time have passed since the last one (by time, not updates: a step
    takes from milliseconds to seconds across networks and devices); ``resume`` continues from such a state (on a
    network built as the first was) and ends with the tensors of the uninterrupted run. A resumed run records
    nothing from before its start, so it takes no ``record_at``, ``snapshot_at`` or ``at_iteration``.
    """
    total = protocol.iterations(len(images))
    if until is not None and not 0 <= until <= total:
        raise DdnbError(f"until={until} is outside the {total} updates of protocol {protocol.name!r}")
    stop = total if until is None else until
    optimizer = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(losses=torch.empty(stop))
    record, snapshot = set(record_at), set(snapshot_at)
    net.train()
    schedule = Batches(len(images), protocol, generator)
    start = 0 if resume is None else _restore(resume, net, optimizer, schedule, result.losses, protocol, total, stop,
                                              bool(record or snapshot or at_iteration))
    last_checkpoint = time.perf_counter()
    # the bar counts updates (stop of them); iterations 0..stop are the states measured between them
    with tqdm(total=stop, initial=start, desc=protocol.name, unit="step", disable=not progress, leave=False) as bar:
        for iteration in range(start, stop + 1):
            _record(net, iteration, record, snapshot, eval_split, result)
            if at_iteration is not None:
                at_iteration(net, iteration)
            if iteration == stop:
                break
            if protocol.decay_at_half and iteration == total // 2:
                for group in optimizer.param_groups:
                    group["lr"] = protocol.lr * 0.1
            index = next(schedule).to(images.device)
            result.losses[iteration] = train_step(net, optimizer, images[index], labels[index], protocol, generator, iteration)
            bar.update()
            if on_checkpoint is not None and iteration + 1 < stop and time.perf_counter() - last_checkpoint >= checkpoint_every_s:
                on_checkpoint(training_state(iteration + 1, net, optimizer, schedule, result.losses))
                last_checkpoint = time.perf_counter()
    return result


def training_state(done: int, net: nn.Module, optimizer: torch.optim.SGD, schedule: Batches, losses: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """Everything ``train`` needs to continue after ``done`` updates, as CPU tensors: the network's state dict
    (``net.*``), SGD's momentum per parameter (``momentum.*``), the random generator, the epoch's batch order and
    position, and the losses so far [done]."""
    state = {f"net.{name}": value.detach().cpu().clone() for name, value in net.state_dict().items()}
    for index, parameter in enumerate(optimizer.param_groups[0]["params"]):
        if "momentum_buffer" in optimizer.state[parameter]:
            state[f"momentum.{index}"] = optimizer.state[parameter]["momentum_buffer"].detach().cpu().clone()
    return state | {"done": torch.tensor(done), "generator": schedule.generator.get_state(), "order": schedule.order.clone(),
                    "position": torch.tensor(schedule.position), "losses": losses[:done].clone()}


def _restore(state: dict[str, torch.Tensor], net: nn.Module, optimizer: torch.optim.SGD, schedule: Batches, losses: torch.Tensor,
             protocol: Protocol, total: int, stop: int, records: bool) -> int:
    """Put a ``training_state`` back into the network, optimiser, batch order and losses; returns the updates done."""
    done = int(state["done"])
    if records:
        raise DdnbError("a resumed training records nothing from before its start: no record_at, snapshot_at or at_iteration")
    if not 0 < done <= stop:
        raise DdnbError(f"the checkpoint is {done} updates into a training of {stop}")
    device = next(net.parameters()).device
    net.load_state_dict({name[len("net."):]: value for name, value in state.items() if name.startswith("net.")})
    for index, parameter in enumerate(optimizer.param_groups[0]["params"]):
        if f"momentum.{index}" in state:
            optimizer.state[parameter]["momentum_buffer"] = state[f"momentum.{index}"].to(device).clone()
    if protocol.decay_at_half and done > total // 2:  # the loop lowers it when it reaches total // 2
        for group in optimizer.param_groups:
            group["lr"] = protocol.lr * 0.1
    schedule.generator.set_state(state["generator"])
    schedule.order, schedule.position = state["order"].clone(), int(state["position"])
    losses[:done] = state["losses"]
    return done


def _loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(images), labels)


# a training step's forward and loss (their backward follows them): compiled when ``ddnb.kernels`` says so; new
# networks of an architecture reuse the compiled form, and a changed batch size makes its shape symbolic
_step_loss = compiled(_loss, dynamic=None)


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: Protocol,
    generator: torch.Generator,
    iteration: int = 0,
) -> torch.Tensor:
    """One SGD update on a batch; returns the batch loss (detached scalar). The forward and backward run with the
    kernels in force (``ddnb.kernels``); the augmentation and the update as written."""
    if protocol.augment:
        images = augment.augment(images, generator, shared=False)
    loss = _step_loss(net, images, labels)
    _check_finite(loss, iteration)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _record(net, iteration, record, snapshot, eval_split, result: TrainResult) -> None:
    if iteration in record and eval_split is not None:
        evaluation = evaluate(net, *eval_split)
        result.predictions[iteration] = evaluation.predictions.cpu()
        result.accuracies[iteration] = evaluation.accuracy
    if iteration in snapshot:
        result.snapshots[iteration] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def set_deterministic(enabled: bool = True) -> None:
    """Ask PyTorch for deterministic kernels (needed for bit-identical GPU runs; the CPU already is)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise DdnbError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DdnbError("device cuda was asked for but no GPU is available; use --device cpu or auto")
    return device


@dataclass(frozen=True)
class EvalConfig:
    """How to score a (distilled) training set: train fresh networks on it, test on the real test split."""

    protocol: str = field(default="paper300", metadata={"help": "a name from PROTOCOLS"})
    net: str = field(default="convnet", metadata={"help": "a name from ddnb.nets.NET_NAMES"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "one network init and batch order per seed"})
    lr: float | None = field(default=None, metadata={"help": "override the protocol's learning rate"})
    steps: int | None = field(default=None, metadata={"help": "override the protocol's length in iterations"})
    precision: str = field(default="fp32", metadata={"help": "fp32, tf32 or bf16 autocast (ddnb.precision)", "unkeyed": "fp32"})

    def __post_init__(self) -> None:
        check_precision(self.precision)

    def key(self) -> dict:
        """Every field, as results scored this way are keyed (``precision`` only when not fp32, so that keys made
        before it existed still match)."""
        return settings_key(self)


@dataclass
class Summary:
    """Test accuracies in [0, 1] of one network per seed, with their mean and (sample) std."""

    accs: list[float]

    @property
    def mean(self) -> float:
        return float(torch.tensor(self.accs).mean())

    @property
    def std(self) -> float:
        return float(torch.tensor(self.accs).std()) if len(self.accs) > 1 else 0.0

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "accs": self.accs}


def run(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    config: EvalConfig = EvalConfig(),
    num_classes: int = 10,
    progress: bool = False,
) -> Summary:
    """Train one network per seed on ``images`` [N, C, H, W] / ``labels`` [N] and test on ``test``."""
    protocol = get_protocol(config.protocol, lr=config.lr, steps=config.steps)
    channels, size = images.shape[1], images.shape[-1]
    accs = []
    for seed in tqdm(config.seeds, desc=f"evaluate ({protocol.name})", disable=not progress):
        net = build_net(config.net, seed, channels, size, num_classes, device=images.device)
        with precision(config.precision, images.device):
            train(net, images, labels, protocol, seed, progress=progress)
            accs.append(evaluate(net, *test).accuracy)
    return Summary(accs)
