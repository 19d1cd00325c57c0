import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from ddnb.viz import image_grid  # noqa: E402


def test_image_grid_has_a_row_per_class_and_its_title_just_above_it():
    labels = torch.arange(10).repeat_interleave(2)  # CIFAR-10's ten rows: the default margin grows with the height
    figure = image_grid(torch.rand(20, 3, 8, 8), labels, [str(c) for c in range(10)], title="BPTT")
    axes = figure.axes
    assert len(axes) == 20 and sum(bool(ax.images) for ax in axes) == 20
    figure.canvas.draw()
    title = figure.texts[0].get_window_extent()
    grid_top = max(ax.get_window_extent().y1 for ax in axes)
    gap_inches = (title.y0 - grid_top) / figure.dpi
    assert title.y0 >= grid_top and gap_inches < 0.3  # a reader sees which grid the title names
