"""The findings page: one row per finding of the paper's sections 3-5, the paper's value beside ours with its
standard error, and a verdict by one rule (``ddnb.analysis.findings.RULE``).

The rows come from the section pages' results (``substitution_rows``, ``dynamics_rows``, ``semantics_rows``:
each section page opens with its own); this page has no job of its own, it needs every other page's.
"""

from __future__ import annotations

from dataclasses import dataclass


from ddnb import paper
from ddnb.analysis.findings import RULE, Finding, difference, finding, mean_and_stderr, neighbour_purity, ratio, same_class_influence
from ddnb.jobs import Job
from ddnb.sections import dynamics, semantics, substitution
from ddnb.sections.common import BookInputs

DISTILLERS = ("bptt", "dm", "gm", "mtt")
MATCHING = ("bptt", "mtt")  # the paper's "strong" sets: meta-model and trajectory matching
SUMMARY = ("dm", "gm")  # distribution and gradient matching
NEIGHBOURS = 10  # test points around a set image on the feature map


@dataclass
class FindingsResults:
    """``rows``: every finding, sections 3 to 5 in the paper's order; ``rule``: how a verdict is given."""

    inputs: BookInputs
    rows: list[Finding]
    rule: str = RULE


def _present(inputs: BookInputs, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in inputs.sets]


def _label(names: list[str]) -> str:
    return ", ".join(paper.METHOD_NAMES.get(name, name) for name in names)


def _mixing_rows(page: substitution.SubstitutionResults) -> list[Finding]:
    ks = page.inputs.profile.analysis.mixing_ks
    added = max((k for k in ks if 0 < k <= 10), default=None)  # the paper's dip is at k = 2 and 10
    if added is None:
        return []
    rows = []
    for name, result in page.mixing.items():
        with_real, alone = result.accuracies[ks.index(added)], result.accuracies[ks.index(0)]
        effect, error = difference(with_real, alone)
        reference = paper.MIXING.get(name)
        shown = f"{reference[paper.MIXING_KS.index(added)] - reference[0]:+.2f}" if reference and added in paper.MIXING_KS else "—"
        sign = 1 if name == "random" else -1
        claim = ("real images added to random real ones raise accuracy" if name == "random"
                 else "adding real images lowers a distilled set's accuracy")
        rows.append(finding(3, claim, f"accuracy with {added} real images per class added, minus without", _label([name]),
                            shown, effect, error, sign,
                            f"{_label([name])} gains {effect:+.3f} from {added} real images per class ({alone.mean():.3f} -> "
                            f"{with_real.mean():.3f}): these sets are not yet better than real images at what real images add"))
    return rows


def _pixel_rows(page: substitution.SubstitutionResults) -> list[Finding]:
    rows = []
    for name in _present(page.inputs, DISTILLERS):
        histogram = page.histograms[name]
        outside = histogram.below + histogram.above
        rows.append(finding(3, "distilled pixels leave the range of real pixels [0, 1]", "fraction of pixel values outside [0, 1]",
                            _label([name]), "MTT ≈ −0.5 … 1.3, DM up to ≈ 1.8", outside, 0.0, 1,
                            f"every {_label([name])} pixel stays inside [0, 1]"))
    return rows


def _group_gap(values: dict[str, float], first: list[str], second: list[str]) -> float:
    return sum(values[n] for n in first) / len(first) - sum(values[n] for n in second) / len(second)


def _recognition_by_real_rows(page: substitution.SubstitutionResults) -> list[Finding]:
    first, second = _present(page.inputs, MATCHING), _present(page.inputs, SUMMARY)
    if not first or not second:
        return []
    gaps = [_group_gap(scores, first, second) for scores in page.scores.values()]  # one per real-trained network
    effect, error = mean_and_stderr(gaps)
    return [finding(3, "networks trained on real data recognise BPTT and MTT images better than DM and GM images",
                    f"accuracy of real-trained networks on {_label(first)} minus on {_label(second)} (mean over {len(gaps)} networks)",
                    f"{_label(first + second)}", "≈ +0.4 (0.91–1.00 against 0.36–0.71)", effect, error, 1,
                    f"real-trained networks score {_label(second)} images {-effect:.3f} higher on average")]


def _feature_rows(page: substitution.SubstitutionResults) -> list[Finding]:
    if not {"mtt", "dm"} <= set(page.points):
        return []
    reference, labels = page.points["test"], page.test_labels
    purity = {name: neighbour_purity(page.points[name], page.inputs.sets[name].labels.cpu(), reference, labels, NEIGHBOURS)
              for name in ("mtt", "dm")}
    effect, error = difference(purity["mtt"], purity["dm"])
    return [finding(3, "MTT images sit inside their class's cluster of real features, DM images nearer its centre or edges",
                    f"share of the {NEIGHBOURS} nearest test images on the {page.map_method} map with the image's class: MTT minus DM",
                    "MTT, DM", "MTT inside, DM at centres and boundaries (a plot)", effect, error, 1,
                    f"DM images have {-effect:.2f} more same-class neighbours than MTT images")]


def substitution_rows(page: substitution.SubstitutionResults) -> list[Finding]:
    """Section 3's findings: mixing, pixel range, recognition by real-trained networks, the feature map."""
    return _mixing_rows(page) + _pixel_rows(page) + _recognition_by_real_rows(page) + _feature_rows(page)


def _agreement_rows(page: dynamics.DynamicsResults) -> list[Finding]:
    rows = []
    for name in _present(page.inputs, DISTILLERS):
        result = page.agreements[name]
        effect, error = difference(result.early, result.subset)
        reference = paper.AGREEMENT.get(name)
        rows.append(finding(4, "distilled-trained networks agree more with early-stopped real networks than with "
                               "accuracy-matched subset networks",
                            "agreement with early-stopped minus with subset networks", _label([name]),
                            f"{reference[1] - reference[0]:+.3f}" if reference else "—", effect, error, 1,
                            f"{_label([name])} networks agree {-effect:.3f} more with subset networks of their accuracy"))
    return rows


def _recognition_rows(page: dynamics.DynamicsResults) -> list[Finding]:
    rows = []
    for name in _present(page.inputs, DISTILLERS):
        curves = page.recognition[name]  # [K, I]
        test = page.early.accuracies[: len(curves), -1]
        effect, error = mean_and_stderr(curves[:, -1].double() - test.double())
        rows.append(finding(4, "real training recognises distilled images early, before it classifies test images as well",
                            f"accuracy on the set minus on the test split at iteration {int(page.early.iterations[-1])} of real "
                            f"training ({len(curves)} networks)", _label([name]),
                            "BPTT, MTT 1.0 by ≈100 iterations (test ≈ 0.5); GM ≈ 0.8–0.9, DM ≈ 0.7–0.8 by 300",
                            effect, error, 1,
                            f"at that iteration real training scores {_label([name])} images {-effect:.3f} below test images"))
    return rows


def _curvature_rows(page: dynamics.DynamicsResults) -> list[Finding]:
    if "real" not in page.curves:
        return []
    real = page.curves["real"]
    relative = {name: ratio(float(curve.traces[-1]), float(curve.stderrs[-1]), float(real.traces[-1]), float(real.stderrs[-1]))
                for name, curve in page.curves.items() if name in DISTILLERS}
    last = int(real.iterations[-1])
    rows = []
    for name in _present(page.inputs, MATCHING):
        value, error = relative[name]
        reference = paper.TRACE_AT_300[name] / paper.TRACE_AT_300["real"] - 1
        rows.append(finding(4, "the loss curvature on BPTT and MTT data collapses after early training",
                            f"Hessian trace on the set over the trace on real data, minus 1, at iteration {last}", _label([name]),
                            f"{reference:+.2f} at iteration 300", value - 1, error, -1,
                            f"the trace on {_label([name])} images is {value:.2f}x real data's at iteration {last} (the paper "
                            f"measures at 300)"))
    first, second = _present(page.inputs, MATCHING), _present(page.inputs, SUMMARY)
    if first and second:
        effect = sum(relative[n][0] for n in second) / len(second) - sum(relative[n][0] for n in first) / len(first)
        error = (sum(relative[n][1] ** 2 for n in second) / len(second) ** 2 + sum(relative[n][1] ** 2 for n in first) / len(first) ** 2) ** 0.5
        reference = (sum(paper.TRACE_AT_300[n] for n in second) / len(second) - sum(paper.TRACE_AT_300[n] for n in first) / len(first))
        rows.append(finding(4, "DM and GM data keep real data's curvature while BPTT and MTT data lose it",
                            f"trace relative to real data: {_label(second)} minus {_label(first)}, at iteration {last}",
                            _label(first + second), f"{reference / paper.TRACE_AT_300['real']:+.2f}", effect, error, 1,
                            f"the relative trace of {_label(first)} data is {-effect:.2f} above that of {_label(second)} data"))
    return rows


def dynamics_rows(page: dynamics.DynamicsResults) -> list[Finding]:
    """Section 4's findings: agreement with early-stopped networks, early recognition, curvature."""
    return _agreement_rows(page) + _recognition_rows(page) + _curvature_rows(page)


def _influence_rows(page: semantics.SemanticsResults) -> list[Finding]:
    rows = []
    for name in _present(page.inputs, DISTILLERS):
        result = page.matrices[name]
        row_labels = page.inputs.sets[name].labels.cpu()[result.rows.cpu()]
        effect, error = mean_and_stderr(same_class_influence(result.matrix.cpu().double(), row_labels, page.test_labels))
        rows.append(finding(5, "leaving one distilled image out changes the test losses of the images it resembles",
                            f"leave-one-out loss change on test images of the image's class minus on the others (nats, "
                            f"{len(result.rows)} images)", _label([name]), "grids of the most influenced test images (qualitative)",
                            effect, error, 1, f"leaving a {_label([name])} image out costs other classes {-effect:.4f} nats more"))
    return rows


def _semantics_rows(page: semantics.SemanticsResults, level: float = 0.05) -> list[Finding]:
    rows = []
    for name in _present(page.inputs, DISTILLERS):
        enrichments = page.enrichments[name]
        images = {e.image for e in enrichments}
        significant = {e.image for e in enrichments if e.q_value < level and e.enrichment > 1}
        share = len(significant) / max(len(images), 1)
        rows.append(finding(5, "single distilled images carry visual attributes beyond their class",
                            f"share of left-out images whose most influenced test images of their class are enriched in an "
                            f"attribute ({page.attribute_source}; q < {level}, {len(images)} images)", _label([name]),
                            "some images capture e.g. 'yellow car' (no numbers published)", share, 0.0, 1,
                            f"no {_label([name])} image's most influenced test images are enriched in any attribute at q < {level}"))
    return rows


def semantics_rows(page: semantics.SemanticsResults) -> list[Finding]:
    """Section 5's findings: influence follows the class, and single images carry attributes."""
    return _influence_rows(page) + _semantics_rows(page)


def jobs(inputs: BookInputs) -> list[Job]:
    """Every result this page shows: those of the three section pages."""
    return substitution.jobs(inputs) + dynamics.jobs(inputs) + semantics.jobs(inputs)


def load(inputs: BookInputs) -> FindingsResults:
    """Every finding, from the three section pages' stored results (``MissingResults`` when some are not there)."""
    rows = (substitution_rows(substitution.load(inputs)) + dynamics_rows(dynamics.load(inputs))
            + semantics_rows(semantics.load(inputs)))
    return FindingsResults(inputs, rows)


__all__ = ["FindingsResults", "dynamics_rows", "jobs", "load", "semantics_rows", "substitution_rows"]
