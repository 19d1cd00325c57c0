"""The dynamics page (paper section 4): agreement with subset and early-stopped networks, recognition during
real training, and the curvature along it.

Jobs: each set's evaluation (its test predictions), the chunks of the subset and early pools, and the
curvature curve. Agreement and recognition are comparisons of stored predictions and forward passes of the
stored early networks, done when loading.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import torch

from ddnb.analysis import curvature, dynamics
from ddnb.data import Dataset
from ddnb.jobs import Job, data_job
from ddnb.nets import build_net
from ddnb.params import flatten, trainable_parameters
from ddnb.profiles import PoolConfig
from ddnb.sections.common import BookInputs, as_evaluation, load_results
from ddnb.sections.distillation import evaluation_jobs
from ddnb.stacked import StackedEvaluation
from ddnb.store import fingerprint
from ddnb.train import get_protocol

SUBSET_KIND, EARLY_KIND, CURVE_KIND = "pool-subset", "pool-early", "curvature"
SAMPLED_REAL_BATCH = 128  # real-data traces from sampled batches of this size when the real set is large


@dataclass
class DynamicsResults:
    """Everything the page draws: ``evaluations``, the two pools, ``agreements[name]``, ``recognition[name]``
    [K, I] (accuracy of each kept early network at each recorded iteration) and the curvature ``curves``."""

    inputs: BookInputs
    evaluations: dict[str, StackedEvaluation]
    subsets: dynamics.SubsetPool
    early: dynamics.EarlyPool
    agreements: dict[str, dynamics.MatchedAgreement]
    recognition: dict[str, torch.Tensor]
    curves: dict[str, curvature.TraceCurve]


def _subset(config: PoolConfig, fraction: float, seeds: list[int], dataset: Dataset):
    return dynamics.train_subset_chunk(dataset, config, fraction, seeds)


def subset_jobs(dataset: Dataset, config: PoolConfig) -> list[Job]:
    """One job per chunk of subset networks (``dynamics.subset_chunks``)."""
    return [data_job(SUBSET_KIND, {"data": dataset.source, "net": config.net, "fraction": fraction, "epochs": config.subset_epochs,
                                   "seeds": seeds}, partial(_subset, config, fraction, seeds), dataset)
            for fraction, seeds in dynamics.subset_chunks(config)]


def _early(config: PoolConfig, seeds: list[int], keep: int, dataset: Dataset):
    return dynamics.train_early_chunk(dataset, config, seeds, keep)


def early_jobs(dataset: Dataset, config: PoolConfig) -> list[Job]:
    """One job per chunk of early networks (``dynamics.early_chunks``)."""
    return [data_job(EARLY_KIND, {"data": dataset.source, "pool": dataclasses.asdict(config), "seeds": seeds, "keep": keep},
                     partial(_early, config, seeds, keep), dataset)
            for seeds, keep in dynamics.early_chunks(config)]


def _curvature_sets(inputs: BookInputs) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, int]]:
    sizes, train = inputs.profile.analysis, inputs.dataset.train
    real = train.head(sizes.curvature_real_images or len(train))  # balanced over classes (the shapes split is class-sorted)
    sets = {"real": (real.images, real.labels)} | {name: (inputs.analysis[name], inputs.labels(name)) for name in inputs.sets}
    return sets, ({"real": SAMPLED_REAL_BATCH} if len(real) > 1000 else {})


def _curve(settings: dict, sets: dict, dataset: Dataset):
    net = build_net(settings["net_name"], 0, dataset.image_shape[0], dataset.image_shape[-1], dataset.num_classes,
                    device=dataset.train.images.device)
    device = dataset.train.images.device
    sets = {name: (images.to(device), labels.to(device)) for name, (images, labels) in sets.items()}
    curves = curvature.training_trace_curve(net, dataset.train.images, dataset.train.labels, sets, settings["iterations"],
                                            probes=settings["probes"], sampled=settings["sampled"])
    tensors = {f"{name}/{field}": getattr(curve, field) for name, curve in curves.items() for field in curvature.CURVE_FIELDS}
    return tensors, {"sets": list(curves)}


def curvature_job(inputs: BookInputs) -> Job:
    """The Hessian trace on real data and on every set before each measured iteration of one network's real
    training (``curvature.training_trace_curve``; the key is the one that function's results were kept under)."""
    sizes, dataset = inputs.profile.analysis, inputs.dataset
    sets, sampled = _curvature_sets(inputs)
    iterations = list(range(0, sizes.curvature_iterations + 1, sizes.curvature_every))
    net = build_net(sizes.pools.net, 0, dataset.image_shape[0], dataset.image_shape[-1], dataset.num_classes)
    protocol = get_protocol("real", steps=iterations[-1])
    key = {"net": type(net).__name__, "initial": fingerprint(flatten(list(trainable_parameters(net).values()))),
           "train": [fingerprint(dataset.train.images), fingerprint(dataset.train.labels)],
           "sets": {name: [fingerprint(images), fingerprint(labels)] for name, (images, labels) in sets.items()},
           "iterations": iterations, "protocol": dataclasses.asdict(protocol), "seed": 0, "probes": sizes.curvature_probes,
           "probe_seed": 0, "batch_size": 500, "sampled": sampled, "probes_per_batch": 2, "sample_seed": 1}
    settings = {"net_name": sizes.pools.net, "iterations": iterations, "probes": sizes.curvature_probes, "sampled": sampled}
    cpu_sets = {name: (images.cpu(), labels.cpu()) for name, (images, labels) in sets.items()}
    return data_job(CURVE_KIND, key, partial(_curve, settings, cpu_sets), dataset)


def _all(inputs: BookInputs) -> tuple[dict[str, Job], list[Job], list[Job], Job]:
    pools = inputs.profile.analysis.pools
    return (evaluation_jobs(inputs), subset_jobs(inputs.dataset, pools), early_jobs(inputs.dataset, pools),
            curvature_job(inputs))


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows."""
    evaluations, subsets, early, curve = _all(inputs)
    return list(evaluations.values()) + subsets + early + [curve]


def load(inputs: BookInputs) -> DynamicsResults:
    """The page's results from the store (``MissingResults`` when some are not there)."""
    evaluation, subsets, early, curve = _all(inputs)
    store, profile, pools = inputs.store, inputs.profile.name, inputs.profile.analysis.pools
    found = load_results(store, list(evaluation.values()) + subsets + early + [curve], profile)
    evaluations = {name: as_evaluation(artifact) for name, artifact in zip(evaluation, found)}
    found = found[len(evaluation):]
    subset_pool = dynamics.subset_pool_of([a.tensors for a in found[:len(subsets)]], dynamics.subset_chunks(pools))
    early_pool = dynamics.early_pool_of([a.tensors for a in found[len(subsets):-1]])
    labels = inputs.dataset.test.labels.cpu()
    agreements = {name: dynamics.matched_agreement(result.predictions, labels, subset_pool, early_pool)
                  for name, result in evaluations.items()}
    recognition = {name: dynamics.recognition(early_pool, pools.net, inputs.analysis[name], inputs.labels(name))
                   for name in inputs.sets}
    stored = found[-1]
    curves = {name: curvature.TraceCurve(*(stored.tensors[f"{name}/{field}"] for field in curvature.CURVE_FIELDS))
              for name in stored.meta["sets"]}
    return DynamicsResults(inputs, evaluations, subset_pool, early_pool, agreements, recognition, curves)
