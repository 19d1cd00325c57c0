"""The findings rule and the effects it judges, on numbers whose answer is known."""

import math

import pytest
import torch

from ddnb.analysis.findings import (FAILS, HOLDS, PARTLY, difference, finding, mean_and_stderr, neighbour_purity, ratio,
                                    same_class_influence, verdict)


@pytest.mark.parametrize("effect, stderr, sign, expected", [
    (-0.05, 0.01, -1, HOLDS),     # the paper's sign, interval [-0.07, -0.03] excludes zero
    (-0.05, 0.03, -1, PARTLY),    # the paper's sign, interval [-0.11, 0.01] includes zero
    (-0.05, float("nan"), -1, PARTLY),  # one measurement: its error is unknown
    (0.05, 0.01, -1, FAILS),      # the opposite sign
    (0.05, 0.04, -1, FAILS),      # the opposite sign, even when its interval includes zero
    (0.2, 0.0, 1, HOLDS),         # an exact count
    (0.0, 0.0, 1, FAILS),         # an exact count of nothing
    (0.0, 0.02, 1, PARTLY),       # no effect measured, within its error
])
def test_the_rule(effect, stderr, sign, expected):
    assert verdict(effect, stderr, sign) == expected


def test_a_reason_is_kept_only_where_a_finding_falls_short():
    assert finding(3, "claim", "measure", "DM", "-0.03", -0.05, 0.01, -1, "why").reason == ""
    assert finding(3, "claim", "measure", "DM", "-0.03", 0.05, 0.01, -1, "why").reason == "why"


def test_standard_errors_match_their_formulas():
    mean, error = mean_and_stderr([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and error == pytest.approx(math.sqrt(5 / 3) / 2)
    assert math.isnan(mean_and_stderr([1.0])[1])
    value, error = difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert value == 2.5 and error == pytest.approx(math.sqrt(5 / 3) / 2)
    # the delta method against a large simulation of independent estimates
    generator = torch.Generator().manual_seed(0)
    a, b = 400 + 20 * torch.randn(200_000, generator=generator, dtype=torch.float64), 2000 + 50 * torch.randn(200_000, generator=generator, dtype=torch.float64)
    value, error = ratio(400.0, 20.0, 2000.0, 50.0)
    assert value == 0.2 and error == pytest.approx(float((a / b).std()), rel=0.02)


def test_neighbour_purity_is_one_inside_a_cluster_and_low_between_clusters():
    reference = torch.cat([torch.randn(50, 2, generator=torch.Generator().manual_seed(1)) * 0.1 + torch.tensor([x, 0.0])
                           for x in (0.0, 10.0)])
    reference_labels = torch.arange(2).repeat_interleave(50)
    points = torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 0.0]])
    purity = neighbour_purity(points, torch.tensor([0, 1, 1]), reference, reference_labels, k=10)
    assert purity[:2].tolist() == [1.0, 1.0]
    inside_the_other = neighbour_purity(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), reference, reference_labels, k=10)
    assert inside_the_other.item() == 0.0


def test_same_class_influence_is_the_gap_between_own_and_other_classes():
    matrix = torch.tensor([[3.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 4.0]], dtype=torch.float64)
    row_labels, test_labels = torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1])
    assert same_class_influence(matrix, row_labels, test_labels).tolist() == [1.0, 3.0]
