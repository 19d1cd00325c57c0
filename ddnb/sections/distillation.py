"""The distillation page: the sets themselves and how well each trains a network.

Jobs: one evaluation per set in the analysis space, and one in its own space for a set made on ZCA-whitened
images (tested on the test split whitened the same way: what the method itself scores).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ddnb.data import Dataset, load_dataset
from ddnb.jobs import Job
from ddnb.sections.common import BookInputs, as_evaluation, evaluation_job, load_results
from ddnb.stacked import StackedEvaluation


@dataclass
class DistillationResults:
    """``evaluations[name]``: the set scored in the analysis space; ``own_space[name]``: a ZCA set in its own."""

    inputs: BookInputs
    evaluations: dict[str, StackedEvaluation]
    own_space: dict[str, StackedEvaluation]


def evaluation_jobs(inputs: BookInputs) -> dict[str, Job]:
    """Each set's evaluation in the analysis space (several pages show it), by set name."""
    return {name: evaluation_job(inputs.analysis[name], inputs.labels(name), inputs.dataset, inputs.profile.evaluation)
            for name in inputs.sets}


def _own_space_data(inputs: BookInputs, name: str) -> Dataset:
    made_on = inputs.sets[name].config.get("data") or {}
    data = inputs.profile.data
    own = dataclasses.replace(data, zca=True, zca_regularization=made_on.get("zca_regularization", data.zca_regularization))
    if own not in inputs.loaded:  # usually loaded already, for the set's own job
        inputs.loaded[own] = load_dataset(own, inputs.store, inputs.device)
    return inputs.loaded[own]


def own_space_jobs(inputs: BookInputs) -> dict[str, Job]:
    """The evaluation of each ZCA-whitened set in the space it was made in, by set name."""
    jobs = {}
    for name, distilled in inputs.sets.items():
        if distilled.transform.whitened:
            dataset = _own_space_data(inputs, name)
            jobs[name] = evaluation_job(distilled.images, inputs.labels(name), dataset, inputs.profile.evaluation)
    return jobs


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows."""
    return list(evaluation_jobs(inputs).values()) + list(own_space_jobs(inputs).values())


def load(inputs: BookInputs) -> DistillationResults:
    """The page's results from the store (``MissingResults`` when some are not there)."""
    plain, own = evaluation_jobs(inputs), own_space_jobs(inputs)
    artifacts = load_results(inputs.store, list(plain.values()) + list(own.values()), inputs.profile.name)
    evaluations = [as_evaluation(artifact) for artifact in artifacts]
    return DistillationResults(inputs, dict(zip(plain, evaluations)), dict(zip(own, evaluations[len(plain):])))
