"""The paper's findings as effects with a sign, and one rule that turns ours into a verdict.

Each finding of the paper's sections 3-5 becomes one number whose sign is the claim (for example "accuracy with
10 real images per class added, minus without": the paper says it is negative for a distilled set), measured
with a standard error. ``verdict`` applies ``RULE`` to it. Pure functions: tensors and numbers in, rows out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

HOLDS, PARTLY, FAILS = "holds", "partly", "does not hold"
RULE = ("A finding **holds** when our effect has the paper's sign and its interval (mean ± 2 standard errors) "
        "excludes zero; **partly** when it has the paper's sign but the interval includes zero (or there is a "
        "single measurement, whose error is unknown); it **does not hold** when it has the opposite sign, or is an exact "
        "zero (a count of nothing, with no error).")


@dataclass
class Finding:
    """One row: the paper's ``claim``, the ``measure`` standing for it, the ``sets`` it concerns, the paper's
    value (``paper``, text: the paper often only plots it), ours (``effect`` ± ``stderr``; NaN: unknown, 0: exact)
    with the sign the paper's claim predicts (``sign``), the ``verdict`` of ``RULE``, and, where ours does not
    hold, the measured ``reason``."""

    section: int
    claim: str
    measure: str
    sets: str
    paper: str
    effect: float
    stderr: float
    sign: int
    verdict: str
    reason: str = ""

    @property
    def interval(self) -> tuple[float, float]:
        """(low, high): effect ± 2 standard errors (NaN when the error is unknown)."""
        return self.effect - 2 * self.stderr, self.effect + 2 * self.stderr


def verdict(effect: float, stderr: float, sign: int) -> str:
    """``RULE`` applied to an effect (any unit) with its standard error, for a claim that it has ``sign`` (+1 or -1)."""
    if math.isnan(effect) or effect * sign <= 0:
        return FAILS if effect * sign < 0 or (effect == 0 and stderr == 0) else PARTLY
    if math.isnan(stderr) or effect * sign - 2 * stderr <= 0:
        return PARTLY
    return HOLDS


def finding(section: int, claim: str, measure: str, sets: str, paper: str, effect: float, stderr: float, sign: int,
            reason: str = "") -> Finding:
    """A row with its verdict; ``reason`` is kept only where the finding does not fully hold."""
    result = verdict(effect, stderr, sign)
    return Finding(section, claim, measure, sets, paper, float(effect), float(stderr), sign, result, "" if result == HOLDS else reason)


def mean_and_stderr(values: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean of values [N] (NaN error for a single value)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def difference(a: torch.Tensor | Sequence[float], b: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error, for independent samples a [N] and b [M]."""
    (mean_a, error_a), (mean_b, error_b) = mean_and_stderr(a), mean_and_stderr(b)
    return mean_a - mean_b, math.sqrt(error_a**2 + error_b**2)


def ratio(a: float, error_a: float, b: float, error_b: float) -> tuple[float, float]:
    """a / b and its standard error to first order (the delta method), for independent estimates."""
    value = a / b
    return value, abs(value) * math.sqrt((error_a / a) ** 2 + (error_b / b) ** 2)


def neighbour_purity(points: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor, reference_labels: torch.Tensor,
                     k: int = 10) -> torch.Tensor:
    """For each point [N, D] with its label [N], the fraction of its ``k`` nearest ``reference`` points [M, D] that
    share its label (reference labels [M]): 1 inside its class's cluster, low at a boundary or among other classes."""
    nearest = torch.cdist(points.double(), reference.double()).topk(min(k, len(reference)), largest=False).indices
    return (reference_labels[nearest] == labels[:, None]).double().mean(1)


def same_class_influence(matrix: torch.Tensor, row_labels: torch.Tensor, test_labels: torch.Tensor) -> torch.Tensor:
    """Per left-out image (rows of ``matrix`` [K, T], labels [K]), its mean influence on test images of its class
    minus on the others (test labels [T]): positive when leaving it out costs its own class most."""
    same = row_labels[:, None] == test_labels[None, :]
    return (matrix * same).sum(1) / same.sum(1) - (matrix * ~same).sum(1) / (~same).sum(1)


__all__ = ["FAILS", "HOLDS", "PARTLY", "RULE", "Finding", "difference", "finding", "mean_and_stderr", "neighbour_purity", "ratio",
           "same_class_influence", "verdict"]
