import matplotlib

matplotlib.use("Agg")
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ddnb.viz import attribute_examples, curves, image_grid  # noqa: E402


def _title_gap_inches(figure) -> float:
    figure.canvas.draw()
    title = figure.texts[0].get_window_extent()
    grid_top = max(ax.get_window_extent().y1 for ax in figure.axes)
    assert title.y0 >= grid_top  # above the grid, not over it
    return (title.y0 - grid_top) / figure.dpi


# ten rows, as for CIFAR-10's classes: matplotlib's default margin grows with the height
@pytest.mark.parametrize("draw", [
    lambda: image_grid(torch.rand(20, 3, 8, 8), torch.arange(10).repeat_interleave(2), [str(c) for c in range(10)], "BPTT"),
    lambda: attribute_examples(torch.rand(30, 3, 8, 8), {str(c): torch.arange(30) % 10 == c for c in range(10)}, 2, "red"),
], ids=["image_grid", "attribute_examples"])
def test_image_grids_have_a_row_per_class_and_their_title_just_above(draw):
    figure = draw()
    assert len(figure.axes) == 20 and sum(bool(ax.images) for ax in figure.axes) == 20
    assert _title_gap_inches(figure) < 0.3  # a reader sees which grid the title names


def test_curves_shade_nothing_where_the_spread_is_unknown():
    """A NaN spread (the standard error of a single probe group) leaves a gap in the band, without a warning."""
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = curves([0, 1, 2], {"a": ([1.0, 2.0, 3.0], [nan, 0.5, 0.5]), "b": ([1.0, 2.0, 3.0], [nan] * 3)}, "t", "trace")
    bands = [band.get_paths() for band in figure.axes[0].collections]
    assert len(bands[0]) == 1 and bands[0][0].vertices[:, 0].min() == 1 and bands[1] == []
