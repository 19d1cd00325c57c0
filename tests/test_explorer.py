import io

import numpy as np
import torch
from PIL import Image

from ddnb.analysis.influence import InfluenceResult
from ddnb.explorer import CAPTION, SCALE, THUMB_SCALE, explorer, frames


def _png(data: bytes) -> torch.Tensor:
    """PNG bytes -> [H, W, 3] int64."""
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).long()


def test_frames_show_each_class_images_and_the_test_images_they_help_most():
    pixels = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    test_pixels = torch.zeros(12, 3, 8, 8)
    test_pixels[:, 0] = torch.arange(12).view(12, 1, 1) / 11  # test image j is a flat red of level j/11
    matrix = torch.zeros(2, 12)
    matrix[0, 7], matrix[0, 3] = 5.0, 4.0  # image 1 helps test image 7 most, then 3
    influence = InfluenceResult(matrix, torch.tensor([1, 4]), {})
    panels = frames("dm", pixels, labels, ["a", "b"], influence, test_pixels)
    assert [len(panel) for panel in panels] == [3, 3]
    with_influence = _png(panels[0][1])
    side, thumb = 8 * SCALE, 8 * THUMB_SCALE + 2
    first, second = with_influence[CAPTION + 2, side + 16 + 2], with_influence[CAPTION + 2, side + 16 + thumb + 2]
    assert first[0] == round(7 / 11 * 255) and second[0] == round(3 / 11 * 255)  # most helped first
    distilled = with_influence[CAPTION:CAPTION + side:SCALE, :side:SCALE]  # the distilled image, upscaled without blur
    assert torch.equal(distilled.permute(2, 0, 1), (pixels[1] * 255).round().to(torch.int64))


def test_explorer_links_every_control_in_the_browser(monkeypatch):
    import ipywidgets

    links = []  # browser-side links are all the static page has: every control must be one
    monkeypatch.setattr(ipywidgets, "jslink", lambda source, target: links.append((source[0], source[1], target[0], target[1])))
    pixels, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 0, 1, 1])
    box = explorer({"A": (pixels, labels), "B": (pixels.flip(0), labels)}, ["a", "b"])
    method, (chosen_class, play, slider), sets = box.children[0], box.children[1].children, box.children[2]
    assert len(sets.children) == 2 and all(len(stack.children) == 2 for stack in sets.children)
    assert (play, "value", slider, "value") in links
    assert (method, "index", sets, "selected_index") in links
    for stack in sets.children:
        assert (chosen_class, "index", stack, "selected_index") in links
        for images in stack.children:
            assert (slider, "value", images, "selected_index") in links
            assert [type(child).__name__ for child in images.children] == ["Image", "Image"]
