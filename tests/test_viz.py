import matplotlib

matplotlib.use("Agg")
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ddnb.viz import attribute_examples, curves, image_grid, tile  # noqa: E402


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
    (ax,) = figure.axes
    assert ax.images[0].get_array().shape == (10 * 9 - 1, 2 * 9 - 1, 3)  # ten rows of two 8x8 images, 1-pixel gaps
    assert [label.get_text().split(" ")[0] for label in ax.get_yticklabels()] == [str(c) for c in range(10)]
    assert _title_gap_inches(figure) < 0.3  # a reader sees which grid the title names


def test_a_grid_shows_each_class_in_its_own_row_pixel_for_pixel():
    pixels = torch.rand(6, 3, 4, 4)
    labels = torch.tensor([2, 0, 1, 0, 2, 1])  # unsorted, as a set may be
    shown = image_grid(pixels, labels, ["a", "b", "c"]).axes[0].images[0].get_array()
    for row, indices in enumerate([[1, 3], [2, 5], [0, 4]]):
        for column, index in enumerate(indices):
            cell = shown[row * 5:row * 5 + 4, column * 5:column * 5 + 4]
            assert torch.equal(torch.from_numpy(cell.data), pixels[index].permute(1, 2, 0))
    assert (tile([[pixels[0]], [None]])[5:] == 1).all()  # an empty cell is white


def test_curves_shade_nothing_where_the_spread_is_unknown():
    """A NaN spread (the standard error of a single probe group) leaves a gap in the band, without a warning."""
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = curves([0, 1, 2], {"a": ([1.0, 2.0, 3.0], [nan, 0.5, 0.5]), "b": ([1.0, 2.0, 3.0], [nan] * 3)}, "t", "trace")
    bands = [band.get_paths() for band in figure.axes[0].collections]
    assert len(bands[0]) == 1 and bands[0][0].vertices[:, 0].min() == 1 and bands[1] == []
