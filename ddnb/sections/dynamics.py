"""The dynamics page (paper section 4): agreement with subset and early-stopped networks, recognition during
real training, and the curvature along it.

Jobs: each set's evaluation (its test predictions), the chunks of the subset pool, the early pool's accuracy
curves, each set's agreement with the pools and its recognition along real training, and the curvature curve.
The early pool's chunks (test predictions and the kept networks' parameters at every recorded iteration: the
largest results of a book) are what the curves, agreements and recognitions are made from; the page never loads
them, so an exported book need not carry them.
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
EARLY_CURVE_KIND, AGREEMENT_KIND, RECOGNITION_KIND = "pool-early-curve", "pool-agreement", "recognition"
SAMPLED_REAL_BATCH = 128  # real-data traces from sampled batches of this size when the real set is large


@dataclass
class EarlyCurve:
    """The early pool's test accuracies [M, I] at its recorded ``iterations`` [I] of real training."""

    iterations: torch.Tensor
    accuracies: torch.Tensor


@dataclass
class DynamicsResults:
    """Everything the page draws: ``evaluations``, the two pools, ``agreements[name]``, ``recognition[name]``
    [K, I] (accuracy of each kept early network at each recorded iteration) and the curvature ``curves``."""

    inputs: BookInputs
    evaluations: dict[str, StackedEvaluation]
    subsets: dynamics.SubsetPool
    early: EarlyCurve
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
                                            probes=settings["probes"], sampled=settings["sampled"], progress=True)
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


def _early_pool(artifacts) -> dynamics.EarlyPool:
    return dynamics.early_pool_of([artifact.tensors for artifact in artifacts])


def _early_curve(*early):
    pool = _early_pool(early)
    return {"iterations": pool.iterations, "accuracies": pool.accuracies}, {}


def _agreement(subset_chunks: list, subsets: int, labels: torch.Tensor, evaluation, *pools):
    subset_pool = dynamics.subset_pool_of([a.tensors for a in pools[:subsets]], subset_chunks)
    matched = dynamics.matched_agreement(as_evaluation(evaluation).predictions, labels, subset_pool, _early_pool(pools[subsets:]))
    return {field.name: torch.as_tensor(getattr(matched, field.name)) for field in dataclasses.fields(matched)}, {}


def _recognition(net: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *early):
    return {"accuracies": dynamics.recognition(_early_pool(early), net, images, labels, num_classes)}, {}


def _pool_keys(jobs: list[Job]) -> list[dict]:
    return [job.key for job in jobs]


def agreement_job(inputs: BookInputs, evaluation: Job, subsets: list[Job], early: list[Job]) -> Job:
    """A set's agreement with accuracy-matched subset and early-stopped networks (``dynamics.matched_agreement``),
    from its evaluation's test predictions and the two pools."""
    labels = inputs.dataset.test.labels.cpu()
    key = {"evaluation": evaluation.key, "subsets": _pool_keys(subsets), "early": _pool_keys(early)}
    make = partial(_agreement, dynamics.subset_chunks(inputs.profile.analysis.pools), len(subsets), labels)
    return Job(AGREEMENT_KIND, key, make, needs=(evaluation, *subsets, *early))


def recognition_job(inputs: BookInputs, name: str, early: list[Job]) -> Job:
    """How well the early pool's kept networks recognise set ``name`` at each recorded iteration (``dynamics.recognition``)."""
    images, labels = inputs.analysis[name].cpu(), inputs.labels(name).cpu()
    key = {"early": _pool_keys(early), "set": [fingerprint(images), fingerprint(labels)]}
    make = partial(_recognition, inputs.profile.analysis.pools.net, images, labels, inputs.dataset.num_classes)
    return Job(RECOGNITION_KIND, key, make, needs=tuple(early))


@dataclass
class _Jobs:
    evaluations: dict[str, Job]
    subsets: list[Job]
    early_curve: Job
    agreements: dict[str, Job]
    recognition: dict[str, Job]
    curve: Job

    def listed(self) -> list[Job]:
        return [*self.evaluations.values(), *self.subsets, self.early_curve, *self.agreements.values(),
                *self.recognition.values(), self.curve]


def _all(inputs: BookInputs) -> _Jobs:
    pools = inputs.profile.analysis.pools
    evaluations, subsets, early = evaluation_jobs(inputs), subset_jobs(inputs.dataset, pools), early_jobs(inputs.dataset, pools)
    return _Jobs(evaluations, subsets, Job(EARLY_CURVE_KIND, {"early": _pool_keys(early)}, _early_curve, needs=tuple(early)),
                 {name: agreement_job(inputs, job, subsets, early) for name, job in evaluations.items()},
                 {name: recognition_job(inputs, name, early) for name in inputs.sets}, curvature_job(inputs))


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows."""
    return _all(inputs).listed()


def load(inputs: BookInputs) -> DynamicsResults:
    """The page's results from the store (``MissingResults`` when some are not there)."""
    planned = _all(inputs)
    found = iter(load_results(inputs.store, planned.listed(), inputs.profile.name))
    evaluations = {name: as_evaluation(next(found)) for name in planned.evaluations}
    subset_pool = dynamics.subset_pool_of([next(found).tensors for _ in planned.subsets],
                                          dynamics.subset_chunks(inputs.profile.analysis.pools))
    early = EarlyCurve(**next(found).tensors)
    agreements = {}
    for name in planned.agreements:
        tensors = next(found).tensors
        agreements[name] = dynamics.MatchedAgreement(**(tensors | {"subset_gap": float(tensors["subset_gap"])}))
    recognition = {name: next(found).tensors["accuracies"] for name in planned.recognition}
    stored = next(found)
    curves = {name: curvature.TraceCurve(*(stored.tensors[f"{name}/{field}"] for field in curvature.CURVE_FIELDS))
              for name in stored.meta["sets"]}
    return DynamicsResults(inputs, evaluations, subset_pool, early, agreements, recognition, curves)
