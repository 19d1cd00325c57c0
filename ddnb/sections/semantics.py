"""The semantics page (paper section 5): leave-one-out influence of distilled images on test images, the
attributes enriched among the test images each one influences most, and how well cheaper estimates agree.

Jobs: each set's leave-one-out matrix and, for the first set, the agreement of influence functions and
gradient dot products with it. Attributes and their enrichment are counts over the stored matrices, done
when loading.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import torch

from ddnb.analysis import influence, semantics
from ddnb.data import Dataset
from ddnb.distill import Distilled
from ddnb.jobs import Job
from ddnb.sections.common import BookInputs, load_results
from ddnb.store import Artifact, fingerprint
from ddnb.train import get_protocol

AGREEMENT_KIND = "influence-agreement"
TOP = 10  # most-influenced test images compared between estimates


@dataclass
class SemanticsResults:
    """Everything the page draws: the leave-one-out ``matrices`` by set, the test images' ``attributes`` (from
    ``attribute_source``) and pixels, each set's ``enrichments`` (best first), and the ``estimates`` of the
    first set (label -> agreement with leave-one-out)."""

    inputs: BookInputs
    matrices: dict[str, influence.InfluenceResult]
    test_pixels: torch.Tensor
    test_labels: torch.Tensor
    attributes: dict[str, torch.Tensor]
    attribute_source: str
    enrichments: dict[str, list[semantics.Enrichment]]
    estimated_set: str
    estimates: dict[str, influence.Agreement]


def _test(inputs: BookInputs):
    return inputs.dataset.test.head(inputs.profile.analysis.influence_test_images or len(inputs.dataset.test))


def _in_space(inputs: BookInputs, name: str) -> Distilled:
    return dataclasses.replace(inputs.sets[name], images=inputs.analysis[name].cpu(), labels=inputs.sets[name].labels.cpu(),
                               transform=inputs.dataset.transform)


def _settings(inputs: BookInputs) -> dict:
    sizes = inputs.profile.analysis
    return {"net": inputs.profile.evaluation.net, "seed": 0, "protocol": get_protocol("paper300", steps=sizes.influence_steps)}


def _loo(distilled: Distilled, settings: dict, indices, count: int, dataset: Dataset):
    test = dataset.test.head(count)
    result = influence.distilled_influence(distilled, test.images, test.labels, indices=indices, progress=True, **settings)
    return result.tensors(), result.meta


def loo_job(inputs: BookInputs, name: str) -> Job:
    """Set ``name``'s leave-one-out influence on the profile's test images (``influence_images_per_class`` rows)."""
    distilled, settings, test = _in_space(inputs, name), _settings(inputs), _test(inputs)
    rows = influence.rows_per_class(distilled.labels, inputs.profile.analysis.influence_images_per_class)
    config = influence.distilled_influence_config(distilled, test.images, indices=rows, **settings)
    make = partial(_loo, distilled, settings, rows, len(test))
    return Job(influence.KIND, config, make, (inputs.dataset,), float(test.images.is_cuda))


def _agreement(distilled: Distilled, settings: dict, dampings, iterations: int, count: int, dataset: Dataset, loo: Artifact):
    test = dataset.test.head(count)
    reference = influence.InfluenceResult.from_artifact(loo)
    results = influence.estimate_agreement(distilled, reference, test.images, test.labels, dampings=dampings,
                                           iterations=iterations, top=TOP, **settings)
    tensors = {f"{index}/{field}": getattr(result, field) for index, result in enumerate(results.values())
               for field in influence.AGREEMENT_FIELDS}
    return tensors, {"labels": list(results), "pearson_all": [result.pearson_all for result in results.values()],
                     "notes": [result.note for result in results.values()]}


def agreement_job(inputs: BookInputs, name: str, loo: Job) -> Job:
    """Agreement with set ``name``'s leave-one-out job ``loo`` of influence functions at the profile's dampings
    and of gradient dot products."""
    distilled, settings, test, sizes = _in_space(inputs, name), _settings(inputs), _test(inputs), inputs.profile.analysis
    images, labels = distilled.images.to(test.images.device), distilled.labels.to(test.images.device)
    key = {"images": fingerprint(images), "labels": fingerprint(labels), "reference": loo.key,
           "test": [fingerprint(test.images), fingerprint(test.labels)], "net": settings["net"], "seed": settings["seed"],
           "protocol": dataclasses.asdict(settings["protocol"]), "dampings": list(sizes.influence_dampings),
           "iterations": sizes.influence_cg_iterations, "top": TOP}
    make = partial(_agreement, distilled, settings, list(sizes.influence_dampings), sizes.influence_cg_iterations, len(test))
    return Job(AGREEMENT_KIND, key, make, (inputs.dataset,), loo.gpus, needs=(loo,))


def _all(inputs: BookInputs) -> tuple[dict[str, Job], Job]:
    loo = {name: loo_job(inputs, name) for name in inputs.sets}
    first = next(iter(loo))
    return loo, agreement_job(inputs, first, loo[first])


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows."""
    loo, agreement = _all(inputs)
    return list(loo.values()) + [agreement]


def _enrichments(result: influence.InfluenceResult, labels: torch.Tensor, test_labels: torch.Tensor,
                 attributes: dict[str, torch.Tensor]) -> list[semantics.Enrichment]:
    rows = result.rows.cpu()
    k = min(50, len(test_labels) // 20)
    return semantics.rank_enrichments(result.matrix.cpu(), labels.cpu()[rows], test_labels, attributes, k=k)


def load(inputs: BookInputs) -> SemanticsResults:
    """The page's results from the store (``MissingResults`` when some are not there)."""
    loo, agreement = _all(inputs)
    found = load_results(inputs.store, list(loo.values()) + [agreement], inputs.profile.name)
    matrices = {name: influence.InfluenceResult.from_artifact(artifact) for name, artifact in zip(loo, found)}
    test = _test(inputs)
    attributes, source = semantics.attributes_of_test(inputs.dataset, len(test))
    test_labels = test.labels.cpu()
    enrichments = {name: _enrichments(result, inputs.sets[name].labels, test_labels, attributes) for name, result in matrices.items()}
    stored = found[-1]
    estimates = {label: influence.Agreement(*(stored.tensors[f"{index}/{field}"] for field in influence.AGREEMENT_FIELDS),
                                            stored.meta["pearson_all"][index], TOP, stored.meta["notes"][index])
                 for index, label in enumerate(stored.meta["labels"])}
    return SemanticsResults(inputs, matrices, inputs.dataset.transform.decode(test.images).cpu(), test_labels, attributes,
                            source, enrichments, next(iter(loo)), estimates)
