"""The distilled-image explorer: choose a set and a class, step through its images with a slider or the play
button, and see the test images each one helps most.

All the links between widgets are ``jslink``s (browser-side), so the explorer keeps working in the static book,
where no kernel runs: ``ToggleButtons.index`` picks a set's panel in a ``Stack``, ``Dropdown.index`` picks the
class panel inside it, and ``Play.value -> IntSlider.value -> Stack.selected_index`` picks the image.

The saved page holds every frame, so its size is kept down: images are stored as PNGs at their own resolution
(about 2 KB for a 32-pixel image) and enlarged by the browser without blur (CSS ``image-rendering: pixelated``),
each test image is one widget shared by every frame that shows it (a widget's state is saved once however many
boxes hold it), and all images share one layout. Set and class are what the controls already show.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import torch
from PIL import Image

from ddnb.analysis.influence import InfluenceResult
from ddnb.analysis.semantics import top_influenced

SCALE, THUMB_SCALE, HELPED = 4, 2, 9  # shown at 4x (128 px for 32-pixel images), test images at 2x; 9 per image
FRAME_CLASS = "ddnb-explorer-frame"  # the distilled image of a frame (the browser test looks for it)
STYLE = "<style>.ddnb-pixelated { image-rendering: pixelated; }</style>"
NO_INFLUENCE = "influence not computed for this image: this profile leaves out only some images per class"
NO_MATRIX = "no influence matrix given"


def png(pixels: torch.Tensor) -> bytes:
    """One image [C, H, W] (clipped to [0, 1] for display) as PNG bytes at its own resolution."""
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def most_helped(influence: InfluenceResult | None, k: int = HELPED) -> dict[int, list[int]]:
    """Distilled image index -> the ``k`` test images (column indices) it helps most, most helped first, for
    the images ``influence`` has a row for (none without a matrix)."""
    if influence is None:
        return {}
    top = top_influenced(influence.matrix.cpu(), min(k, influence.matrix.shape[1]))
    return {int(row): top[position].tolist() for position, row in enumerate(influence.rows.tolist())}


class _Widgets:
    """Builds the explorer's widgets, sharing the layouts, the notes and each test image's widget."""

    def __init__(self, test_pixels: torch.Tensor | None):
        import ipywidgets as widgets

        self.widgets, self.test_pixels = widgets, test_pixels
        self.thumbs: dict[int, object] = {}
        self.grid_layout = widgets.Layout(grid_template_columns="repeat(3, max-content)", grid_gap="2px")
        # flex-start: a flex row would otherwise stretch the image to the height of the text beside it
        self.image_layout, self.row_layout = widgets.Layout(margin="0", align_self="flex-start"), widgets.Layout()
        self.text_layout = widgets.Layout(margin="0 0 0 8px")
        self.notes = {text: widgets.HTML(f"<small>{text}</small>", layout=widgets.Layout(max_width="260px"))
                      for text in (NO_INFLUENCE, NO_MATRIX)}
        self.heading = widgets.HTML("<small>test images it helps most</small>")
        self.positions: dict[tuple[int, int], object] = {}

    def image(self, pixels: torch.Tensor, scale: int, classes: tuple[str, ...] = ()):
        # no tooltip: the static page's widget manager (html-manager 1.0.15) fails to draw an Image that has one
        width, height = pixels.shape[-1] * scale, pixels.shape[-2] * scale
        return self.widgets.Image(value=png(pixels), format="png", width=str(width), height=str(height),
                                  layout=self.image_layout, _dom_classes=("ddnb-pixelated",) + classes)

    def thumb(self, test_index: int):
        """The widget of test image ``test_index``, made once and shared by every frame that shows it."""
        if test_index not in self.thumbs:
            self.thumbs[test_index] = self.image(self.test_pixels[test_index], THUMB_SCALE)
        return self.thumbs[test_index]

    def position(self, number: int, count: int):
        """"image ``number`` of ``count``", one widget for every frame at that position."""
        if (number, count) not in self.positions:
            self.positions[number, count] = self.widgets.HTML(f"<small>image {number} of {count}</small>")
        return self.positions[number, count]

    def frame(self, pixels: torch.Tensor, number: int, count: int, helped: list[int] | None, note: str):
        """Distilled image ``number`` of ``count`` [C, H, W], and beside it the test images it helps most (or ``note``)."""
        side = [self.notes[note]] if helped is None else [
            self.heading, self.widgets.GridBox([self.thumb(index) for index in helped], layout=self.grid_layout)]
        text = self.widgets.VBox([self.position(number, count)] + side, layout=self.text_layout)
        return self.widgets.HBox([self.image(pixels, SCALE, classes=(FRAME_CLASS,)), text], layout=self.row_layout)


def explorer(sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str],
             influence: Mapping[str, InfluenceResult] | None = None, test_pixels: torch.Tensor | None = None,
             interval_ms: int = 900):
    """The explorer widget for ``sets``: display name -> (pixels [M, C, H, W] un-normalised, labels [M] hard or
    [M, classes] soft, where the argmax decides the class).

    ``influence`` (by the same names) and ``test_pixels`` [T, C, H, W], the test images its columns refer to, add
    each image's most-helped test images. Returns an ``ipywidgets.VBox``; display it in a notebook (its state is
    saved with the notebook)."""
    import ipywidgets as widgets

    if not sets:
        raise ValueError("explorer needs at least one set")
    influence = influence or {}
    build = _Widgets(test_pixels)
    members = {name: [(labels if labels.dim() == 1 else labels.argmax(1)).eq(label).nonzero().flatten().tolist()
                      for label in range(len(classes))] for name, (_, labels) in sets.items()}
    longest = max(len(indices) for per_class in members.values() for indices in per_class)
    method = widgets.ToggleButtons(options=list(sets), description="set")
    chosen_class = widgets.Dropdown(options=list(classes), description="class")
    play = widgets.Play(value=0, min=0, max=max(0, longest - 1), interval=interval_ms, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=max(0, longest - 1), description="image", readout=False)
    widgets.jslink((play, "value"), (slider, "value"))
    method_panels = []
    for name, (pixels, _) in sets.items():
        helped = most_helped(influence.get(name)) if test_pixels is not None else {}  # nothing to show without them
        note = NO_INFLUENCE if name in influence else NO_MATRIX
        class_panels = []
        for indices in members[name]:
            children = [build.frame(pixels[index], number + 1, len(indices), helped.get(index), note)
                        for number, index in enumerate(indices)]
            children += [widgets.Label(f"this class has {len(indices)} images") for _ in range(longest - len(indices))]
            images = widgets.Stack(children, selected_index=0)
            widgets.jslink((slider, "value"), (images, "selected_index"))
            class_panels.append(images)
        stack = widgets.Stack(class_panels, selected_index=0)
        widgets.jslink((chosen_class, "index"), (stack, "selected_index"))
        method_panels.append(stack)
    sets_stack = widgets.Stack(method_panels, selected_index=0)
    widgets.jslink((method, "index"), (sets_stack, "selected_index"))
    return widgets.VBox([widgets.HTML(STYLE), method, widgets.HBox([chosen_class, play, slider]), sets_stack])
