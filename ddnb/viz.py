"""Figures for the book (matplotlib) and the header box of every executed page."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ddnb import __version__


def page_header(profile: str, data: str, device: str, seeds: Sequence[int], ipc: int) -> str:
    """The box at the top of every executed page (a markdown quote; notebook outputs take no MyST directives)."""
    lines = ["**How this page was made**", f"**profile** `{profile}` · **data** `{data}` · **IPC** {ipc} · "
             f"**device** `{device}` · **seeds** {', '.join(map(str, seeds))} · **ddnb** {__version__}"]
    if data.startswith("shapes"):
        lines.append("This run uses the embedded **shapes** data (generated shapes, 10 classes), **not CIFAR-10**: "
                     "numbers differ from the paper's, and the paper's values are shown only as a reference.")
    return "\n>\n".join(f"> {line}" for line in lines)


def image_grid(pixels: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str = "", per_row: int | None = None):
    """One row per class of images [N, 3, H, W] (un-normalised pixels, clipped to [0, 1] for display)."""
    num_classes = len(classes)
    per_class = max(1, len(pixels) // num_classes)
    columns = per_row or per_class
    figure, axes = plt.subplots(num_classes, columns, figsize=(columns * 0.8, num_classes * 0.8), squeeze=False)
    order = torch.argsort(labels if labels.dim() == 1 else labels.argmax(1), stable=True)
    for ax in axes.flat:
        ax.axis("off")
    for position, index in enumerate(order.tolist()):
        row, column = divmod(position, per_class)
        if column < columns:
            axes[row, column].imshow(pixels[index].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
    for row, name in enumerate(classes):
        axes[row, 0].text(-4, 16, name, ha="right", va="center", fontsize=8)
    _title_just_above(figure, title)
    return figure


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
    names = list(attributes)
    figure, axes = plt.subplots(len(names), per_attribute, figsize=(per_attribute * 0.7, len(names) * 0.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, name in enumerate(names):
        having = attributes[name].nonzero().flatten()[:per_attribute].tolist()
        for column, index in enumerate(having):
            axes[row, column].imshow(pixels[index].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axes[row, 0].text(-4, pixels.shape[-2] / 2, f"{name} ({int(attributes[name].sum())})", ha="right", va="center", fontsize=8)
    _title_just_above(figure, title)
    return figure

