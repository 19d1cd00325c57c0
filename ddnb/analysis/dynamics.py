"""Paper section 4: does distilled data capture early training dynamics?

- ``subset_pool``: networks trained to the end on small random per-class subsets of the real data;
- ``early_pool``: networks trained on all real data, test predictions kept at every recorded iteration of
  early training (and the parameters of the first few, for recognition and curvature);
- ``agreement`` / ``matched_agreement``: how often a distilled-trained network predicts the same class as
  accuracy-matched subset networks and as early-stopped networks at the iteration of matching accuracy;
- ``recognition``: accuracy on a distilled set at every recorded iteration of real training.

Pools are trained as stacked batches (``ddnb.stacked``), one chunk of networks at a time
(``subset_chunks``, ``early_chunks``); ``ddnb.sections.dynamics`` keeps each chunk in the store as a job, so a
killed pool run resumes with the chunks it finished, and chunks can be Ray tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddnb.data import Dataset, sample_per_class
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.stacked import Stack, logits, stack, train_stacked
from ddnb.profiles import PoolConfig
from ddnb.train import get_protocol

@dataclass
class SubsetPool:
    """Subset networks: ``fractions`` [M], test ``accuracies`` [M] and test ``predictions`` [M, T]."""

    fractions: torch.Tensor
    accuracies: torch.Tensor
    predictions: torch.Tensor


@dataclass
class EarlyPool:
    """Early training on all real data: ``iterations`` [I]; test ``accuracies`` [M, I] and ``predictions``
    [M, I, T]; ``snapshots`` parameters {name: [K, I, ...]} of the first K networks at those iterations."""

    iterations: torch.Tensor
    accuracies: torch.Tensor
    predictions: torch.Tensor
    snapshots: dict[str, torch.Tensor]


def _nets(config: PoolConfig, dataset: Dataset, seeds: list[int]):
    channels, size = dataset.image_shape[0], dataset.image_shape[-1]
    return stack([build_net(config.net, seed, channels, size, dataset.num_classes, device=dataset.train.images.device)
                  for seed in seeds])


def subset_chunks(config: PoolConfig) -> list[tuple[float, list[int]]]:
    """The subset pool as ``(fraction, seeds)`` chunks of at most ``config.chunk`` networks (one stacked run each)."""
    return [(fraction, chunk) for index, fraction in enumerate(config.subset_fractions)
            for chunk in _chunks([config.seed + 1000 * index + m for m in range(config.models_per_fraction)], config.chunk)]


def train_subset_chunk(dataset: Dataset, config: PoolConfig, fraction: float, seeds: list[int]
                       ) -> tuple[dict[str, torch.Tensor], dict]:
    """Networks ``seeds``, each trained to the end on its own random ``fraction`` of every class: test
    ``predictions`` [M, T] (uint8) and ``accuracies`` [M]."""
    per_class = max(1, round(fraction * len(dataset.train) / dataset.num_classes))
    subsets = torch.stack([sample_per_class(dataset.train.labels, per_class, seed, dataset.num_classes) for seed in seeds])
    stacked = _nets(config, dataset, seeds)
    protocol = get_protocol("real", epochs=config.subset_epochs)
    test = (dataset.test.images, dataset.test.labels)
    result = train_stacked(stacked, dataset.train.images, dataset.train.labels, protocol, seeds, subsets=subsets,
                           eval_split=test, record_at=[protocol.iterations(per_class * dataset.num_classes)])
    (predictions,), (accuracies,) = result.predictions.values(), result.accuracies.values()
    return {"predictions": predictions.to(torch.uint8), "accuracies": accuracies}, {"per_class": per_class}


def _chunks(seeds: list[int], size: int) -> list[list[int]]:
    return [seeds[start:start + size] for start in range(0, len(seeds), size)]


def subset_pool_of(parts: list[dict[str, torch.Tensor]], chunks: list[tuple[float, list[int]]]) -> SubsetPool:
    """The pool from its chunks' tensors (``train_subset_chunk``), in ``subset_chunks`` order."""
    fractions = [fraction for fraction, seeds in chunks for _ in seeds]
    return SubsetPool(torch.tensor(fractions, dtype=torch.float64), torch.cat([p["accuracies"] for p in parts]),
                      torch.cat([p["predictions"].long() for p in parts]))


def subset_pool(dataset: Dataset, config: PoolConfig = PoolConfig()) -> SubsetPool:
    """Train ``models_per_fraction`` networks per subset fraction; each sees its own random subset."""
    chunks = subset_chunks(config)
    return subset_pool_of([train_subset_chunk(dataset, config, fraction, seeds)[0] for fraction, seeds in chunks], chunks)


def early_chunks(config: PoolConfig) -> list[tuple[list[int], int]]:
    """The early pool as ``(seeds, keep)`` chunks: ``keep`` of them (the first ``snapshot_models`` of the pool)
    keep their parameters at every recorded iteration."""
    seeds = [config.seed + 500_000 + m for m in range(config.early_models)]
    return [(chunk, max(0, min(len(chunk), config.snapshot_models - index * config.chunk)))
            for index, chunk in enumerate(_chunks(seeds, config.chunk))]


def train_early_chunk(dataset: Dataset, config: PoolConfig, seeds: list[int], keep: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Networks ``seeds`` trained on all real data for early training, test predictions recorded every
    ``record_every`` iterations: ``iterations`` [I], ``accuracies`` [M, I], ``predictions`` [M, I, T] and the
    parameters ``snapshot.NAME`` [keep, I, ...] of the first ``keep``."""
    protocol = get_protocol("real", steps=config.early_iterations or get_protocol("real").iterations(len(dataset.train)))
    iterations = list(range(0, protocol.steps + 1, config.record_every))
    test = (dataset.test.images, dataset.test.labels)
    result = train_stacked(_nets(config, dataset, seeds), dataset.train.images, dataset.train.labels, protocol, seeds,
                           eval_split=test, record_at=iterations, snapshot_at=iterations if keep else (), snapshot_models=keep,
                           progress=True)
    tensors = {"iterations": torch.tensor(iterations),
               "accuracies": torch.stack([result.accuracies[t] for t in iterations], 1),  # [M, I]
               "predictions": torch.stack([result.predictions[t] for t in iterations], 1).to(torch.uint8)}  # [M, I, T]
    for name in (result.snapshots[iterations[0]] if keep else {}):
        tensors[f"snapshot.{name}"] = torch.stack([result.snapshots[t][name] for t in iterations], 1)  # [K, I, ...]
    return tensors, {}


def early_pool_of(parts: list[dict[str, torch.Tensor]]) -> EarlyPool:
    """The pool from its chunks' tensors (``train_early_chunk``), in ``early_chunks`` order."""
    snapshots = {name.split(".", 1)[1]: torch.cat([p[name] for p in parts if name in p])
                 for name in parts[0] if name.startswith("snapshot.")}
    return EarlyPool(parts[0]["iterations"], torch.cat([p["accuracies"] for p in parts]),
                     torch.cat([p["predictions"].long() for p in parts]), snapshots)


def early_pool(dataset: Dataset, config: PoolConfig = PoolConfig()) -> EarlyPool:
    """Train ``early_models`` networks on all real data, recording test predictions during early training."""
    return early_pool_of([train_early_chunk(dataset, config, seeds, keep)[0] for seeds, keep in early_chunks(config)])


def agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fraction in [0, 1] of test images on which predictions ``a`` [..., T] and ``b`` [..., T] agree (broadcast)."""
    return (a == b).float().mean(-1)


@dataclass
class MatchedAgreement:
    """Agreement of distilled-trained networks with accuracy-matched pool networks.

    ``subset`` [pairs] with subset networks whose accuracy is within ``tolerance`` (``subset_gap`` the mean
    accuracy difference of the pairs used); ``early`` [pairs] with each early network at the iteration whose
    accuracy is nearest (``early_iterations`` [pairs] those iterations).
    """

    distilled_accuracy: torch.Tensor
    subset: torch.Tensor
    subset_gap: float
    early: torch.Tensor
    early_iterations: torch.Tensor


def _subset_matches(accuracy: float, pool: SubsetPool, tolerance: float, minimum: int) -> torch.Tensor:
    gaps = (pool.accuracies - accuracy).abs()
    within = torch.nonzero(gaps <= tolerance).flatten()
    return within if len(within) >= minimum else gaps.argsort()[:minimum]  # too few within: the nearest ones


def matched_agreement(predictions: torch.Tensor, labels: torch.Tensor, subsets: SubsetPool, early: EarlyPool,
                      tolerance: float = 0.02, minimum: int = 3) -> MatchedAgreement:
    """Agreement of distilled-trained networks (test ``predictions`` [S, T], true ``labels`` [T]) with the pools.

    Matches are chosen from the stored accuracies: subset networks within ``tolerance`` of each distilled
    network's accuracy (at least the ``minimum`` nearest), and for each early network the recorded iteration
    whose accuracy is nearest.
    """
    if predictions.shape[-1] != subsets.predictions.shape[-1] or predictions.shape[-1] != early.predictions.shape[-1]:
        raise DdnbError("the distilled networks and the pools were tested on different test sets")
    accuracies = agreement(predictions, labels)
    subset_values, gaps, early_values, early_iterations = [], [], [], []
    for prediction, accuracy in zip(predictions, accuracies.tolist()):
        chosen = _subset_matches(accuracy, subsets, tolerance, minimum)
        subset_values.append(agreement(subsets.predictions[chosen], prediction))
        gaps.append((subsets.accuracies[chosen] - accuracy).abs())
        nearest = (early.accuracies - accuracy).abs().argmin(1)  # [M] per early network
        early_values.append(agreement(early.predictions[torch.arange(len(nearest)), nearest], prediction))
        early_iterations.append(early.iterations[nearest])
    return MatchedAgreement(accuracies, torch.cat(subset_values), float(torch.cat(gaps).mean()),
                            torch.cat(early_values), torch.cat(early_iterations))


def recognition(pool: EarlyPool, net: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Accuracy [K, I] on a set (images [N, C, H, W], labels [N]) of each kept early network at every recorded
    iteration of its real training: how soon real training recognises the set."""
    if not pool.snapshots:
        raise DdnbError("the early pool kept no parameters (PoolConfig.snapshot_models = 0)")
    template = build_net(net, 0, images.shape[1], images.shape[-1], num_classes, device="meta")
    kept, count = next(iter(pool.snapshots.values())).shape[:2]
    flat = {name: value.flatten(0, 1).to(images.device) for name, value in pool.snapshots.items()}  # [K*I, ...]
    predictions = logits(Stack(template, flat), images).argmax(-1)  # [K*I, N]
    return agreement(predictions, labels.to(predictions.device)).view(kept, count).cpu()
