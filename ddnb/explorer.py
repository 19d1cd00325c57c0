"""The distilled-image explorer: choose a set and a class, step through its images with a slider or the play
button, and see the test images each one helps most.

Every frame is rendered here, in Python, as a PNG; the widgets only choose which frame shows. All the links
between widgets are ``jslink``s (browser-side), so the explorer keeps working in the static book, where no
kernel runs: ``ToggleButtons.index`` picks a set's panel in a ``Stack``, ``Dropdown.index`` picks the class
panel inside it, and ``Play.value -> IntSlider.value -> Stack.selected_index`` picks the image.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import torch
from PIL import Image, ImageDraw

from ddnb.analysis.influence import InfluenceResult

SCALE, THUMB_SCALE, CAPTION = 4, 2, 14  # display size of a 32-pixel image: 128 px; thumbnails 64 px


def _to_image(pixels: torch.Tensor, scale: int) -> Image.Image:
    """Pixels [C, H, W] (clipped to [0, 1] for display) -> an upscaled PIL image (nearest: no blur)."""
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).convert("RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def frame(pixels: torch.Tensor, caption: str, helped: torch.Tensor | None, note: str = "") -> bytes:
    """One explorer frame as PNG bytes: the distilled image [C, H, W] with its caption, and beside it a 3x3 grid
    of the test images it helps most (``helped`` [9, C, H, W], most helped first), or ``note`` when there are none."""
    image = _to_image(pixels, SCALE)
    side, thumb = image.height, pixels.shape[-1] * THUMB_SCALE + 2
    body = max(side, 3 * thumb)  # the caption on top, the images below it, a footnote under the grid
    width = max(side + 16 + (3 * thumb if helped is not None else 220), int(ImageDraw.Draw(image).textlength(caption)) + 4)
    canvas = Image.new("RGB", (width, CAPTION + body + CAPTION), "white")
    canvas.paste(image, (0, CAPTION))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, 0), caption, fill="black")
    if helped is None:
        draw.multiline_text((side + 16, CAPTION + 4), note, fill="dimgray")
    else:
        for position, test_pixels in enumerate(helped[:9]):
            row, column = divmod(position, 3)
            canvas.paste(_to_image(test_pixels, THUMB_SCALE), (side + 16 + column * thumb, CAPTION + row * thumb))
        draw.text((side + 16, CAPTION + body + 1), "test images it helps most", fill="dimgray")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")  # optimize=True: 3% smaller, 7x slower
    return buffer.getvalue()


def frames(name: str, pixels: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
           influence: InfluenceResult | None, test_pixels: torch.Tensor | None) -> list[list[bytes]]:
    """PNG frames of one set, ``[class][image within class]``: ``pixels`` [M, C, H, W] un-normalised, ``labels``
    [M] (hard) or [M, classes] (soft: the argmax decides the class), ``test_pixels`` [T, C, H, W] the test images
    the influence matrix's columns refer to."""
    hard = labels if labels.dim() == 1 else labels.argmax(1)
    top = {}
    if influence is not None:
        order = influence.matrix.argsort(dim=1, descending=True)[:, :9].cpu()
        top = {int(row): order[position] for position, row in enumerate(influence.rows.tolist())}
    per_class = []
    for label, class_name in enumerate(classes):
        indices = (hard == label).nonzero().flatten().tolist()
        panel = []
        for position, index in enumerate(indices):
            caption = f"{name} · {class_name} · image {position + 1} of {len(indices)}"
            helped = test_pixels[top[index]] if index in top and test_pixels is not None else None
            note = ("influence not computed for this image:\nthis profile leaves out only some\nimages per class"
                    if influence is not None else "no influence matrix given")
            panel.append(frame(pixels[index], caption, helped, note))
        per_class.append(panel)
    return per_class


def explorer(sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str],
             influence: Mapping[str, InfluenceResult] | None = None, test_pixels: torch.Tensor | None = None,
             interval_ms: int = 900):
    """The explorer widget for ``sets``: display name -> (pixels [M, C, H, W] un-normalised, labels [M]).

    ``influence`` (by the same names) and ``test_pixels`` [T, C, H, W] add each image's most-helped test images.
    Returns an ``ipywidgets.VBox``; display it in a notebook (its state is saved with the notebook)."""
    import ipywidgets as widgets

    if not sets:
        raise ValueError("explorer needs at least one set")
    influence = influence or {}
    per_class = {name: frames(name, pixels, labels, classes, influence.get(name), test_pixels)
                 for name, (pixels, labels) in sets.items()}
    longest = max(len(panel) for panels in per_class.values() for panel in panels)
    method = widgets.ToggleButtons(options=list(sets), description="set")
    chosen_class = widgets.Dropdown(options=list(classes), description="class")
    play = widgets.Play(value=0, min=0, max=max(0, longest - 1), interval=interval_ms, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=max(0, longest - 1), description="image", readout=False)
    widgets.jslink((play, "value"), (slider, "value"))
    method_panels = []
    for panels in per_class.values():
        class_panels = []
        for panel in panels:
            children = [widgets.Image(value=png, format="png") for png in panel]
            children += [widgets.Label(f"this class has {len(panel)} images") for _ in range(longest - len(panel))]
            images = widgets.Stack(children, selected_index=0)
            widgets.jslink((slider, "value"), (images, "selected_index"))
            class_panels.append(images)
        stack = widgets.Stack(class_panels, selected_index=0)
        widgets.jslink((chosen_class, "index"), (stack, "selected_index"))
        method_panels.append(stack)
    sets_stack = widgets.Stack(method_panels, selected_index=0)
    widgets.jslink((method, "index"), (sets_stack, "selected_index"))
    return widgets.VBox([method, widgets.HBox([chosen_class, play, slider]), sets_stack])
