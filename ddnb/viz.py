"""Figures for the book (matplotlib) and the header box of every executed page."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ddnb import __version__, paper
from ddnb.analysis.semantics import top_influenced


def page_header(profile: str, data: str, device: str, seeds: Sequence[int], ipc: int) -> str:
    """The box at the top of every executed page (a markdown quote; notebook outputs take no MyST directives)."""
    lines = ["**How this page was made**", f"**profile** `{profile}` · **data** `{data}` · **IPC** {ipc} · "
             f"**device** `{device}` · **seeds** {', '.join(map(str, seeds))} · **ddnb** {__version__}"]
    if data.startswith("shapes"):
        lines.append("This run uses the embedded **shapes** data (generated shapes, 10 classes), **not CIFAR-10**: "
                     "numbers differ from the paper's, and the paper's values are shown only as a reference.")
    return "\n>\n".join(f"> {line}" for line in lines)


_PAD = 1  # white pixels between tiled images


def tile(rows: Sequence[Sequence[torch.Tensor | None]], pad: int = _PAD):
    """One image [R*(H+pad)-pad, C*(W+pad)-pad, 3] (numpy, in [0, 1]) of ``rows`` of images [3, H, W] on a white
    ground; a None or a short row leaves its cells white. One ``imshow`` of it draws and saves a grid of 100 images
    at 32x32 in 0.4 s on 2 cores, against 2.1 s for an axes per image (benchmarks/README.md, issue 21)."""
    first = next((image for row in rows for image in row if image is not None), None)
    if first is None:
        raise ValueError("no images to draw")
    height, width = first.shape[-2:]
    columns = max(len(row) for row in rows)
    canvas = torch.ones(len(rows) * (height + pad) - pad, columns * (width + pad) - pad, 3)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is not None:
                top, left = r * (height + pad), c * (width + pad)
                canvas[top:top + height, left:left + width] = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0)
    return canvas.numpy()


def _tiled_figure(rows: Sequence[Sequence[torch.Tensor | None]], row_names: Sequence[str], cell_inches: float,
                  title: str = ""):
    """A figure of ``rows`` of images drawn as one tiled image (``tile``), each row named on its left."""
    grid = tile(rows)
    height = (grid.shape[0] + _PAD) // len(rows) - _PAD
    columns = max(len(row) for row in rows)
    figure, ax = plt.subplots(figsize=(columns * cell_inches, len(rows) * cell_inches))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (height + _PAD) + height / 2 for r in range(len(rows))], list(row_names), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    _title_just_above(figure, title)
    return figure


def image_grid(pixels: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str = "", per_row: int | None = None):
    """One row per class of images [N, 3, H, W] (un-normalised pixels, clipped to [0, 1] for display)."""
    per_class = max(1, len(pixels) // len(classes))
    columns = per_row or per_class
    hard = labels if labels.dim() == 1 else labels.argmax(1)
    rows = [[pixels[index] for index in (hard == c).nonzero().flatten()[:columns].tolist()] for c in range(len(classes))]
    rows = [row or [None] for row in rows]
    return _tiled_figure(rows, classes, 0.8, title)


def _title_just_above(figure, title: str) -> None:
    """``title`` over a grid of images, close to it: matplotlib's default leaves 12 % of the figure's height above
    the grid (a row and more for ten rows), so on a page of grids a title sat nearer the grid before its own."""
    height = figure.get_figheight()  # inches
    figure.subplots_adjust(top=1 - 0.35 / height)
    figure.suptitle(title, y=1 - 0.05 / height, va="top")


def curves(x: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]], xlabel: str, ylabel: str,
           title: str = "", reference: Mapping[str, Sequence[float]] | None = None, logx: bool = False):
    """Lines ``name -> (mean, spread)`` over ``x`` with shaded spread; dashed ``reference`` lines (the paper's)."""
    figure, ax = plt.subplots(figsize=(6, 4))
    for name, (mean, spread) in series.items():
        line, = ax.plot(x, mean, marker="o", label=name)
        if spread is not None:
            low = [m - s for m, s in zip(mean, spread)]
            high = [m + s for m, s in zip(mean, spread)]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
        if reference and name in reference:
            ax.plot(x, reference[name], linestyle="--", color=line.get_color(), alpha=0.6)
    if logx:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(list(x), [f"{value:g}" for value in x])  # the measured points, not powers of ten
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def grouped_bars(values: Mapping[str, Mapping[str, float]], ylabel: str, title: str = ""):
    """Bars of ``values[group][member]``: one cluster per group, one colour per member (labels stay with values)."""
    groups = list(values)
    members = list(dict.fromkeys(member for group in groups for member in values[group]))
    width = 0.8 / max(1, len(members))
    figure, ax = plt.subplots(figsize=(max(5, len(groups) * 1.2), 3.5))
    for position, member in enumerate(members):
        xs = [g + position * width for g in range(len(groups))]
        ax.bar(xs, [values[group].get(member, float("nan")) for group in groups], width, label=member)
    ax.set_xticks([g + width * (len(members) - 1) / 2 for g in range(len(groups))], groups)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def histograms(histograms: Mapping[str, object], xlabel: str = "pixel value", title: str = ""):
    """Density lines of ``ddnb.analysis.substitution.Histogram`` objects on shared bins; [0, 1] marked."""
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for name, histogram in histograms.items():
        centres = (histogram.edges[1:] + histogram.edges[:-1]) / 2
        ax.plot(centres.numpy(), histogram.density.numpy(), label=f"{name} ({histogram.below + histogram.above:.0%} outside [0, 1])")
    for edge in (0, 1):
        ax.axvline(edge, color="gray", linestyle=":")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def feature_scatter(points: Mapping[str, torch.Tensor], test_labels: torch.Tensor, set_labels: Mapping[str, torch.Tensor],
                    test_name: str = "test", title: str = ""):
    """Test images as small dots coloured by class; each distilled set as larger markers in its class colour."""
    figure, ax = plt.subplots(figsize=(6, 5))
    colours = plt.get_cmap("tab10")
    test = points[test_name]
    ax.scatter(test[:, 0], test[:, 1], c=[colours(int(c) % 10) for c in test_labels], s=3, alpha=0.3)
    markers = "osD^vP*X"
    for index, (name, labels) in enumerate(set_labels.items()):
        xy = points[name]
        ax.scatter(xy[:, 0], xy[:, 1], c=[colours(int(c) % 10) for c in labels], s=40, marker=markers[index % len(markers)],
                   edgecolors="black", linewidths=0.6, label=name)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def attribute_examples(pixels: torch.Tensor, attributes: Mapping[str, torch.Tensor], per_attribute: int = 10, title: str = ""):
    """One row per attribute: the first ``per_attribute`` images [N, 3, H, W] (pixels) that have it, so a
    reader can judge the rule that assigned it; the row label gives how many images have it."""
    rows = [[pixels[index] for index in having.nonzero().flatten()[:per_attribute].tolist()] for having in attributes.values()]
    rows = [row + [None] * (per_attribute - len(row)) for row in rows]  # an attribute with few images keeps the width
    names = [f"{name} ({int(having.sum())})" for name, having in attributes.items()]
    return _tiled_figure(rows, names, 0.7, title)


# ---- page figures and tables: each takes a page's results (``ddnb.sections``) and draws or writes one element


def _name(name: str) -> str:
    return paper.METHOD_NAMES.get(name, name)


def _mean_std(accuracies: torch.Tensor) -> str:
    return f"{float(accuracies.mean()):.3f} ± {float(accuracies.std()) if len(accuracies) > 1 else 0.0:.3f}"


def accuracy_table(evaluations: Mapping[str, object], own_space: Mapping[str, object]) -> str:
    """Markdown table: each set's test accuracy (mean ± std over seeds), in its own space where it has one, and
    the paper's value."""
    own = bool(own_space)
    rows = ["| set | test accuracy (ours, mean ± std) |" + (" in its own space (ZCA) |" if own else "") + " paper, CIFAR-10 |",
            "|---|---|" + ("---|" if own else "") + "---|"]
    for name, result in evaluations.items():
        reference = paper.ACCURACY_PAPER300.get(name)
        own_cell = (f" {_mean_std(own_space[name].accuracies)} |" if name in own_space else " |") if own else ""
        rows.append(f"| {_name(name)} | {_mean_std(result.accuracies)} |{own_cell} {'' if reference is None else f'{reference:.3f}'} |")
    return "\n".join(rows)


def pools(subsets, early, evaluations: Mapping[str, object]):
    """The two model pools: subset accuracy against subset size; early accuracy along training (dotted: the
    distilled-trained networks' mean accuracies)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.scatter(subsets.fractions * 100, subsets.accuracies)
    left.set(xlabel="% of each class's real images", ylabel="test accuracy", title="subset pool")
    right.plot(early.iterations, early.accuracies.T, alpha=0.7)
    for result in evaluations.values():
        right.axhline(float(result.accuracies.mean()), linestyle=":", color="gray")
    right.set(xlabel="iteration of real training", ylabel="test accuracy", title="early pool (dotted: distilled-trained)")
    figure.tight_layout()
    return figure


def agreement_bars(agreements: Mapping[str, object]):
    """Agreement with subset-matched and early-matched networks per set (mean ± std over pairs; dots: paper)."""
    names = list(agreements)
    figure, ax = plt.subplots(figsize=(7, 3.5))
    for offset, (kind, colour) in enumerate((("subset", "tab:blue"), ("early", "tab:orange"))):
        values = [getattr(agreements[n], kind) for n in names]
        ax.bar([i + 0.4 * offset for i in range(len(names))], [float(v.mean()) for v in values], 0.4,
               yerr=[float(v.std()) if len(v) > 1 else 0 for v in values], color=colour, label=f"{kind}-matched")
        for i, n in enumerate(names):
            if n in paper.AGREEMENT:
                ax.plot(i + 0.4 * offset, paper.AGREEMENT[n][offset], "k.", markersize=10)
    ax.set_xticks([i + 0.2 for i in range(len(names))], [_name(n) for n in names])
    ax.set(ylabel="agreement")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def influence_grids(matrices: Mapping[str, object], sets: Mapping[str, object], test_pixels: torch.Tensor, per_set: int = 3):
    """For ``per_set`` distilled images of each set: the image (first column) and the 9 test images its removal
    hurts most, one figure per set."""
    figures = []
    for name, result in matrices.items():
        chosen = list(range(0, len(result.rows), max(1, len(result.rows) // per_set)))[:per_set]
        top = top_influenced(result.matrix.cpu(), 9)
        images = sets[name].pixels()
        rows = [[images[int(result.rows[row])]] + [test_pixels[index] for index in top[row].tolist()] for row in chosen]
        figures.append(_tiled_figure(rows, [f"image {int(result.rows[row])}" for row in chosen], 1.0, _name(name)))
    return figures


def enrichment_table(name: str, entries: Sequence[object], rows: torch.Tensor, image_labels: torch.Tensor,
                     classes: Sequence[str], top: int = 5) -> str:
    """Markdown table of a set's ``top`` strongest (image, attribute) enrichments."""
    table = [f"**{_name(name)}**", "", "| image | class | attribute | top-k hits | base rate | enrichment | p | q |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in entries[:top]:
        image = int(rows[entry.image])
        table.append(f"| {image} | {classes[int(image_labels[image])]} | {entry.attribute} | {entry.hits}/{entry.k} | "
                     f"{entry.base_rate:.2f} | {entry.enrichment:.2f} | {entry.p_value:.2g} | {entry.q_value:.2g} |")
    return "\n".join(table)


def estimate_table(name: str, estimates: Mapping[str, object]) -> str:
    """Markdown table: each cheap influence estimate's Pearson, Spearman and top-10 overlap with leave-one-out; an
    estimate whose solve diverged shows a dash, with its reason under the table."""
    rows = [f"Against leave-one-out on **{_name(name)}**:", "", "| estimate | Pearson | Spearman | top-10 overlap |", "|---|---|---|---|"]
    notes = []
    for label, result in estimates.items():
        summary = result.summary()
        if result.note:  # a diverged solve is no estimate: a dash and the reason, not NaN
            rows.append(f"| {label} | — | — | — |")
            notes.append(f"- {label}: no estimate, {result.note}.")
        else:
            rows.append(f"| {label} | {summary['pearson']:.3f} | {summary['spearman']:.3f} | {summary['top_overlap']:.3f} |")
    return "\n".join(rows + ([""] + notes if notes else []))


VERDICT_MARKS = {"holds": "✅ holds", "partly": "🟡 partly", "does not hold": "❌ does not hold"}


def _effect(value: float, stderr: float) -> str:
    if stderr != stderr:  # NaN: one measurement
        return f"{value:+.3f} (one measurement)"
    return f"{value:+.3f}" if stderr == 0 else f"{value:+.3f} ± {2 * stderr:.3f}"


def findings_table(rows: Sequence[object], section: int | None = None) -> str:
    """Markdown table of findings (``ddnb.analysis.findings.Finding``; only ``section``'s when given): the claim and
    its measure, the sets, the paper's value, ours (± 2 standard errors), the verdict, and why where it fails."""
    table = ["| finding | measure | sets | paper | ours | verdict |", "|---|---|---|---|---|---|"]
    notes = []
    for row in rows:
        if section is not None and row.section != section:
            continue
        table.append(f"| {row.claim} | {row.measure} | {row.sets} | {row.paper} | {_effect(row.effect, row.stderr)} | "
                     f"{VERDICT_MARKS[row.verdict]} |")
        if row.reason:
            notes.append(f"- {row.sets}, {row.claim}: {row.reason}.")
    return "\n".join(table + ([""] + notes if notes else []))
