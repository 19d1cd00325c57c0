import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from ddnb.viz import attribute_examples, image_grid  # noqa: E402


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
