"""The substitution page (paper section 3): mixing real images into the sets, real-trained networks scoring
them, their pixel values and where they sit among real features.

Jobs: each set's mixing points (k = 0 is its evaluation), each set scored by each profile net trained on real
data, and the feature map (the profile's projection, UMAP by default) of the last of those networks. The networks
themselves are what the scores and the map are made from; the page never loads them (a ResNet-18 is 45 MB), so an
exported book need not carry them. The pixel histograms are counts, done when loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ddnb.analysis import substitution
from ddnb.data import Dataset
from ddnb.jobs import Job, data_job
from ddnb.sections.common import (BookInputs, as_evaluation, as_model, evaluation_job, load_results, model_job, set_key)
from ddnb.store import Artifact, fingerprint
from ddnb.train import get_protocol

MIXING_KIND, FEATURES_KIND, SCORE_KIND = "mixing", "feature-map", "real-model-score"
FEATURE_TEST_IMAGES = 2000  # test images on the feature map (balanced over classes)


@dataclass
class SubstitutionResults:
    """Everything the page draws: ``mixing[name]``; ``scores[net][set]`` accuracy of each real-trained network on
    each set (``"real test"``: on the test split); ``histograms[name]`` (``"real"``: test pixels); the feature
    map ``points[name]`` [N, 2] with ``test_labels`` for its ``"test"`` points, made by ``map_method``."""

    inputs: BookInputs
    mixing: dict[str, substitution.MixingResult]
    scores: dict[str, dict[str, float]]
    histograms: dict[str, substitution.Histogram]
    points: dict[str, torch.Tensor]
    test_labels: torch.Tensor
    map_method: str
    map_net: str


def _mix(images: torch.Tensor, labels: torch.Tensor, k: int, config, dataset: Dataset):
    return {"accuracies": substitution.mixing_point(images, labels, dataset, k, config, progress=True)}, {}


def mixing_jobs(inputs: BookInputs, name: str) -> list[Job]:
    """One job per k of the profile for set ``name`` (k = 0: its evaluation, which other pages share)."""
    images, labels, config, dataset = inputs.analysis[name], inputs.labels(name), inputs.profile.evaluation, inputs.dataset
    key = set_key(images, labels, dataset, config)
    return [evaluation_job(images, labels, dataset, config) if k == 0 else
            data_job(MIXING_KIND, key | {"k": k}, partial(_mix, images.cpu(), labels.cpu(), k, config), dataset)
            for k in inputs.profile.analysis.mixing_ks]


def model_jobs(inputs: BookInputs) -> dict[str, Job]:
    """The real-trained network of each profile net (``real`` protocol, ``AnalysisSizes.epochs_of`` it), by net."""
    sizes = inputs.profile.analysis
    return {net: model_job(inputs.dataset, net, get_protocol("real", epochs=sizes.epochs_of(net)), inputs.store) for net in sizes.real_nets}


def _feature_map(net: str, images: dict[str, torch.Tensor], projection: str, dataset: Dataset, model: Artifact):
    network = as_model(model, net, dataset)
    test = dataset.test.head(FEATURE_TEST_IMAGES)
    mapped = substitution.feature_map(network, {"test": test.images, **{k: v.to(test.images.device) for k, v in images.items()}},
                                      projection)
    return {f"points.{name}": points for name, points in mapped.points.items()}, {"method": mapped.method, "sets": list(mapped.points)}


def feature_job(inputs: BookInputs, model: Job, net: str) -> Job:
    """The 2-D map of penultimate features of ``net`` (trained by job ``model``): test images and every set."""
    images = {name: value.cpu() for name, value in inputs.analysis.items()}
    projection = inputs.profile.analysis.feature_projection
    key = {"model": model.key, "net": net, "sets": {name: fingerprint(value) for name, value in images.items()},
           "test_images": FEATURE_TEST_IMAGES, "projection": projection}
    return Job(FEATURES_KIND, key, partial(_feature_map, net, images, projection), (inputs.dataset,), model.gpus, needs=(model,))


def _score(net: str, images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, model: Artifact):
    network = as_model(model, net, dataset)
    device = dataset.train.images.device
    scores = substitution.recognition_by_real_models({net: network}, {"set": (images.to(device), labels.to(device))})
    return {"accuracy": torch.tensor(scores[net]["set"])}, {"test_accuracy": model.meta["test_accuracy"]}


def score_job(inputs: BookInputs, model: Job, net: str, name: str) -> Job:
    """The accuracy of ``net`` (trained on real data by job ``model``) on set ``name``; meta: its test accuracy."""
    images, labels = inputs.analysis[name].cpu(), inputs.labels(name).cpu()
    key = {"model": model.key, "net": net, "set": [fingerprint(images), fingerprint(labels)]}
    return Job(SCORE_KIND, key, partial(_score, net, images, labels), (inputs.dataset,), model.gpus, needs=(model,))


def _all(inputs: BookInputs) -> tuple[dict[str, list[Job]], dict[str, dict[str, Job]], Job]:
    mixing = {name: mixing_jobs(inputs, name) for name in inputs.sets}
    models = model_jobs(inputs)
    scores = {net: {name: score_job(inputs, model, net, name) for name in inputs.sets} for net, model in models.items()}
    last = inputs.profile.analysis.real_nets[-1]
    return mixing, scores, feature_job(inputs, models[last], last)


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows."""
    mixing, scores, features = _all(inputs)
    return ([job for per_set in mixing.values() for job in per_set] + [job for per_net in scores.values() for job in per_net.values()]
            + [features])


def _mixing_result(artifacts, inputs: BookInputs) -> substitution.MixingResult:
    accuracies = [as_evaluation(a).accuracies if a.kind == "evaluation" else a.tensors["accuracies"] for a in artifacts]
    return substitution.MixingResult(list(inputs.profile.analysis.mixing_ks), list(inputs.profile.evaluation.seeds),
                                     torch.stack(accuracies))


def load(inputs: BookInputs) -> SubstitutionResults:
    """The page's results from the store (``MissingResults`` when some are not there)."""
    mixing, score_jobs, features = _all(inputs)
    store, profile = inputs.store, inputs.profile.name
    curves = {name: _mixing_result(load_results(store, per_set, profile), inputs) for name, per_set in mixing.items()}
    scores = {}
    for net, per_set in score_jobs.items():
        found = dict(zip(per_set, load_results(store, list(per_set.values()), profile)))
        scores[net] = {name: float(artifact.tensors["accuracy"]) for name, artifact in found.items()}
        scores[net]["real test"] = next(iter(found.values())).meta["test_accuracy"]
    real_pixels = inputs.dataset.transform.decode(inputs.dataset.test.head(1000).images)
    histograms = substitution.pixel_histograms({"real": real_pixels, **{n: s.pixels() for n, s in inputs.sets.items()}})
    mapped = load_results(store, [features], profile)[0]
    points = {name: mapped.tensors[f"points.{name}"] for name in mapped.meta["sets"]}
    test_labels = inputs.dataset.test.head(FEATURE_TEST_IMAGES).labels.cpu()
    return SubstitutionResults(inputs, curves, scores, histograms, points, test_labels, mapped.meta["method"], features.key["net"])
