"""Train many networks of one architecture as one batched computation (``torch.func`` stacking + ``vmap``).

Model pools (hundreds of small-subset models, early-training curves of many seeds), multi-seed evaluation
and leave-one-out retraining all train M copies of one network that differ only in their initialisation,
their batch order or the weights of their training images. Stacking their parameters along a leading
dimension turns M small training runs into one run of batched kernels: the same numbers as M calls of
``ddnb.train.train`` (to float tolerance), at a fraction of the Python and kernel-launch overhead.

Model m draws its batches and augmentation from ``torch.Generator().manual_seed(seeds[m])`` exactly as
``train(..., seed=seeds[m])`` does, so a stacked run and a loop of single runs see the same data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from tqdm.auto import tqdm

from ddnb import augment
from ddnb.errors import DdnbError
from ddnb.kernels import compiled
from ddnb.nets import build_net
from ddnb.precision import precision
from ddnb.train import Batches, EvalConfig, Protocol, get_protocol, train


@dataclass
class Stack:
    """M networks of one architecture: parameters and momentum buffers stacked as [M, ...] tensors."""

    template: nn.Module  # the architecture, on the meta device (holds no weights)
    params: dict[str, torch.Tensor]
    momenta: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def unstack(self, index: int, like: nn.Module) -> nn.Module:
        """Network ``index`` as a module: a copy of ``like`` with its parameters."""
        net = copy.deepcopy(like)
        net.load_state_dict({name: value[index] for name, value in self.params.items()}, strict=False)
        return net


def stack(nets: Sequence[nn.Module]) -> Stack:
    """Stack the parameters of ``nets`` (same architecture, no running-statistics buffers such as BatchNorm's)."""
    if any(len(list(net.buffers())) for net in nets):
        raise DdnbError("stacked training needs networks without buffers (BatchNorm's running statistics); "
                        "use the ConvNet family (instance norm) or train such networks one by one")
    params, _ = stack_module_state(list(nets))
    return Stack(copy.deepcopy(nets[0]).to("meta"), {k: v.detach().clone() for k, v in params.items()})


def logits(stacked: Stack, images: torch.Tensor, shared: bool = True, pairs: int = 1024) -> torch.Tensor:
    """Logits [M, N, classes] of every network on images [N, C, H, W] (``shared``) or [M, N, C, H, W].

    Memory: at most ``pairs`` (network, image) forwards run at once, about 2.3 MB each for the ConvNet on
    32x32 images without gradients (measured; all 49 early-training snapshots of ``cifar10-cpu`` on a
    100-image set at once are 11 GB).
    """
    def one(params, x):
        return functional_call(stacked.template, params, (x,))

    count = images.shape[0 if shared else 1]
    images_per_call = max(1, min(count, pairs))
    nets_per_call = max(1, pairs // images_per_call)
    outputs = []
    with torch.no_grad():
        for start in range(0, stacked.size, nets_per_call):
            params = {name: value[start:start + nets_per_call] for name, value in stacked.params.items()}
            if shared:
                parts, in_dims = images.split(images_per_call), (0, None)
            else:
                parts, in_dims = images[start:start + nets_per_call].split(images_per_call, 1), (0, 0)
            outputs.append(torch.cat([vmap(one, in_dims=in_dims)(params, part) for part in parts], dim=1))
    return torch.cat(outputs)


def _weighted_loss(template: nn.Module):
    def loss(params, images, labels, weights):
        per_image = F.cross_entropy(functional_call(template, params, (images,)), labels, reduction="none")
        return (weights * per_image).sum() / weights.sum()
    return loss


def _gradients_and_losses(template: nn.Module, params: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                          weights: torch.Tensor, shared: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    in_dims = (0, None, None, 0) if shared else 0
    return vmap(grad_and_value(_weighted_loss(template)), in_dims=in_dims)(params, images, labels, weights)


# the stacked forward and backward: fixed shapes through a whole training, so compiled kernels (``ddnb.kernels``) pay
_compiled_gradients_and_losses = compiled(_gradients_and_losses)


def sgd_step(stacked: Stack, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, lr: float,
             protocol: Protocol, shared: bool = False) -> torch.Tensor:
    """One SGD(+momentum, weight decay) update of every network, as ``torch.optim.SGD`` does it.

    images [M, B, C, H, W], labels [M, B] (or soft [M, B, classes]), weights [M, B] (0 drops an image);
    or, with ``shared``, one batch for all: images [B, ...] and labels [B] (then the first layer of every
    network runs as one dense convolution rather than a grouped one). Returns the weighted mean loss [M].
    The forward and backward run with the kernels in force (``ddnb.kernels``: as written, or compiled).
    """
    grads, losses = _compiled_gradients_and_losses(stacked.template, stacked.params, images, labels, weights, shared)
    for name, param in stacked.params.items():
        step = grads[name] + protocol.weight_decay * param if protocol.weight_decay else grads[name]
        if protocol.momentum:
            previous = stacked.momenta.get(name)
            step = step if previous is None else protocol.momentum * previous + step
            stacked.momenta[name] = step
        stacked.params[name] = param - lr * step
    return losses.detach()


@dataclass
class StackedResult:
    """What a stacked run leaves behind; the trained networks stay in the ``Stack``."""

    losses: torch.Tensor  # [M, iterations] each network's batch loss per update
    predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # iteration -> predicted class [M, N_eval]
    accuracies: dict[int, torch.Tensor] = field(default_factory=dict)  # iteration -> accuracy [M] on the eval split
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # iteration -> parameters [kept, ...]


def _record(stacked: Stack, iteration: int, eval_split, result: StackedResult) -> None:
    predictions = logits(stacked, eval_split[0]).argmax(-1)  # [M, N_eval]
    result.predictions[iteration] = predictions.cpu()
    result.accuracies[iteration] = (predictions == eval_split[1]).float().mean(1).cpu()


def _batch(images, labels, weights, subsets, schedules, generators, protocol, m):
    index = next(schedules[m]).to(images.device)
    chosen = index if subsets is None else subsets[m].to(images.device)[index]
    batch = images[chosen]
    if protocol.augment:
        batch = augment.augment(batch, generators[m], shared=False)
    return batch, labels[chosen], (torch.ones(len(chosen), device=images.device) if weights is None else weights[m][index])


def train_stacked(
    stacked: Stack,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: Protocol,
    seeds: Sequence[int],
    subsets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    eval_split: tuple[torch.Tensor, torch.Tensor] | None = None,
    record_at: Sequence[int] = (),
    snapshot_at: Sequence[int] = (),
    snapshot_models: int | None = None,
    progress: bool = False,
    backend: str = "auto",
) -> StackedResult:
    """Train every network of ``stacked`` in place with ``protocol``, network m as ``train(seed=seeds[m])``.

    images [N, C, H, W] and labels [N] are shared. ``subsets`` [M, n] (optional) gives each network its own
    training images (indices into ``images``, equal counts); ``weights`` [M, n] (optional) weights each
    network's training images in its mean loss (0 leaves one out). At each iteration in ``record_at``
    predictions and accuracy on ``eval_split`` are recorded; at each one in ``snapshot_at`` the parameters
    of the first ``snapshot_models`` networks (all by default) are copied.

    ``backend``: ``vmap`` trains all networks in one batched run; ``loop`` runs ``ddnb.train.train`` network
    by network (0/1 weights only) and is the faster one on a CPU, where a single network's step already
    keeps the cores busy and vmap's grouped convolutions are 2-4x slower; ``auto`` picks vmap on a GPU.
    """
    count = len(images) if subsets is None else subsets.shape[1]
    if len(seeds) != stacked.size:
        raise DdnbError(f"{len(seeds)} seeds for {stacked.size} stacked networks")
    if backend not in ("auto", "vmap", "loop"):
        raise DdnbError(f"unknown backend {backend!r}; use auto, vmap or loop")
    if backend == "loop" or (backend == "auto" and images.device.type == "cpu"):
        if weights is not None and not ((weights == 0) | (weights == 1)).all():
            raise DdnbError("the loop backend takes 0/1 weights only (an image is kept or left out); use backend='vmap'")
        return _train_one_by_one(stacked, images, labels, protocol, seeds, subsets, weights, eval_split, record_at,
                                 snapshot_at, snapshot_models, progress)
    total, lr = protocol.iterations(count), protocol.lr
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    schedules = [Batches(count, protocol, generator) for generator in generators]
    result, record, snapshot = StackedResult(losses=torch.empty(stacked.size, total)), set(record_at), set(snapshot_at)
    shared = subsets is None and protocol.batch_size is None and not protocol.augment
    shared_weights = torch.ones(stacked.size, len(images), device=images.device) if weights is None else weights.to(images.device)
    with tqdm(total=total, desc=f"{protocol.name} x{stacked.size}", unit="step", disable=not progress, leave=False) as bar:
        for iteration in range(total + 1):
            if iteration in record and eval_split is not None:
                _record(stacked, iteration, eval_split, result)
            if iteration in snapshot:
                result.snapshots[iteration] = {name: value[:snapshot_models].detach().cpu().clone() for name, value in stacked.params.items()}
            if iteration == total:
                break
            if protocol.decay_at_half and iteration == total // 2:
                lr = protocol.lr * 0.1
            if shared:  # every network sees every image each step: no per-network copies
                losses = sgd_step(stacked, images, labels, shared_weights, lr, protocol, shared=True)
            else:
                parts = [_batch(images, labels, weights, subsets, schedules, generators, protocol, m) for m in range(stacked.size)]
                batch_images, batch_labels, batch_weights = (torch.stack(part) for part in zip(*parts))
                losses = sgd_step(stacked, batch_images, batch_labels, batch_weights, lr, protocol)
            if not torch.isfinite(losses).all():
                raise DdnbError(f"training diverged: a stacked network's loss is not finite at iteration {iteration}; lower the learning rate")
            result.losses[:, iteration] = losses.cpu()
            bar.update()
    return result


def _train_one_by_one(stacked: Stack, images, labels, protocol, seeds, subsets, weights, eval_split, record_at, snapshot_at,
                      snapshot_models, progress) -> StackedResult:
    """``train_stacked`` as a loop of ``ddnb.train.train`` runs (the same draws, the same numbers)."""
    keep = snapshot_models if snapshot_models is not None else stacked.size
    results = []
    for m in tqdm(range(stacked.size), desc=f"{protocol.name} x{stacked.size}", disable=not progress, leave=False):
        index = torch.arange(len(images)) if subsets is None else subsets[m].cpu()
        if weights is not None:
            index = index[weights[m].cpu() != 0]
        net = copy.deepcopy(stacked.template).to_empty(device=images.device)
        net.load_state_dict({name: value[m] for name, value in stacked.params.items()}, strict=False)
        index = index.to(images.device)
        results.append(train(net, images[index], labels[index], protocol, seeds[m], eval_split, record_at,
                             snapshot_at if m < keep else (), progress=False))
        for name, value in net.named_parameters():
            stacked.params[name][m] = value.detach()
    out = StackedResult(torch.stack([r.losses for r in results]))
    for t in results[0].predictions:
        out.predictions[t] = torch.stack([r.predictions[t] for r in results])
        out.accuracies[t] = torch.tensor([r.accuracies[t] for r in results])
    for t in results[0].snapshots:
        out.snapshots[t] = {name: torch.stack([r.snapshots[t][name] for r in results[:keep]]) for name in stacked.params}
    return out


@dataclass
class StackedEvaluation:
    """Test predictions [S, T] and accuracies [S] of one network per seed trained on a set."""

    predictions: torch.Tensor
    accuracies: torch.Tensor


def evaluate_seeds(images: torch.Tensor, labels: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor], config: EvalConfig,
                   num_classes: int = 10, subsets: torch.Tensor | None = None, progress: bool = False) -> StackedEvaluation:
    """``ddnb.train.run`` as one stacked run: train a ``config.net`` per seed on images [N, C, H, W] / labels [N]
    (network s on ``subsets[s]`` when given) with ``config.protocol`` and test each on ``test``. ``progress``: a
    bar over the training steps."""
    channels, size = images.shape[1], images.shape[-1]
    stacked = stack([build_net(config.net, seed, channels, size, num_classes, device=images.device) for seed in config.seeds])
    protocol = get_protocol(config.protocol, lr=config.lr, steps=config.steps)
    with precision(config.precision, images.device):
        train_stacked(stacked, images, labels, protocol, list(config.seeds), subsets=subsets, progress=progress)
        predictions = logits(stacked, test[0]).argmax(-1)
    return StackedEvaluation(predictions.cpu(), (predictions == test[1]).float().mean(1).cpu())
