import io
import json

import numpy as np
import torch
from PIL import Image

from ddnb.analysis.influence import InfluenceResult
from ddnb.explorer import FRAME_CLASS, NO_INFLUENCE, SCALE, THUMB_SCALE, explorer, most_helped, png


def _pixels(data: bytes) -> torch.Tensor:
    """PNG bytes -> [3, H, W] int64."""
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).long().permute(2, 0, 1)


def _images(widget) -> list:
    """Every Image widget under ``widget``, depth first."""
    if type(widget).__name__ == "Image":
        return [widget]
    return [image for child in getattr(widget, "children", ()) for image in _images(child)]


def _example(generator_seed: int = 0):
    pixels = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(generator_seed))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    test_pixels = torch.zeros(12, 3, 8, 8)
    test_pixels[:, 0] = torch.arange(12).view(12, 1, 1) / 11  # test image j is a flat red of level j/11
    matrix = torch.arange(24.0).view(2, 12).flip(1)  # both rows help test image 0 most, then 1, 2, ...
    matrix[0, 7], matrix[0, 3] = 50.0, 40.0  # image 1 helps test image 7 most, then 3
    return pixels, labels, test_pixels, InfluenceResult(matrix, torch.tensor([1, 4]), {})


def test_images_are_stored_at_their_own_resolution_exactly():
    pixels = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_pixels(png(pixels)), (pixels * 255).round().long())
    assert torch.equal(_pixels(png(pixels * 3 - 1)), ((pixels * 3 - 1).clamp(0, 1) * 255).round().long())


def test_frames_show_the_test_images_each_image_helps_most_first_and_share_them():
    pixels, labels, test_pixels, influence = _example()
    assert most_helped(influence, 3) == {1: [7, 3, 0], 4: [0, 1, 2]}
    box = explorer({"dm": (pixels, labels)}, ["a", "b"], {"dm": influence}, test_pixels)
    (class_a, class_b) = box.children[-1].children[0].children
    first, with_influence = class_a.children[0], class_a.children[1]
    distilled, *helped = _images(with_influence)
    assert FRAME_CLASS in distilled._dom_classes and distilled.width == str(8 * SCALE)
    assert torch.equal(_pixels(distilled.value), (pixels[1] * 255).round().long())
    assert [int(_pixels(image.value)[0, 0, 0]) for image in helped] == [round(j / 11 * 255) for j in (7, 3, 0, 1, 2, 4, 5, 6, 8)]
    assert helped[0].width == str(8 * THUMB_SCALE)
    assert len(_images(first)) == 1 and NO_INFLUENCE in first.children[1].children[1].value  # image 0 has no row
    other = _images(class_b.children[1])[1:]  # image 4 shows test images 0, 1, 2 too: the same widgets
    assert other[0] is helped[2] and other[1] is helped[3]
    unique = {id(image) for image in _images(box)}
    assert len(unique) == 6 + 9  # each distilled image once, each test image once, however often it is shown


def test_saved_state_grows_by_a_few_kilobytes_per_frame():
    from ipywidgets import Widget

    pixels = torch.rand(200, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def state_bytes(count: int) -> int:
        Widget.close_all()
        explorer({"A": (pixels[:count], torch.arange(count) % 10)}, [str(c) for c in range(10)])
        return len(json.dumps(Widget.get_manager_state()))

    image_bytes = sum(len(png(image)) for image in pixels[100:]) * 4 / 3 / 100  # base64
    per_frame = (state_bytes(200) - state_bytes(100)) / 100
    assert per_frame - image_bytes < 2_500  # beyond its image, a frame costs three small models (image, two boxes)


def test_explorer_links_every_control_in_the_browser(monkeypatch):
    import ipywidgets

    links = []  # browser-side links are all the static page has: every control must be one
    monkeypatch.setattr(ipywidgets, "jslink", lambda source, target: links.append((source[0], source[1], target[0], target[1])))
    pixels, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 0, 1, 1])
    box = explorer({"A": (pixels, labels), "B": (pixels.flip(0), labels)}, ["a", "b"])
    method, (chosen_class, play, slider), sets = box.children[1], box.children[2].children, box.children[3]
    assert len(sets.children) == 2 and all(len(stack.children) == 2 for stack in sets.children)
    assert (play, "value", slider, "value") in links
    assert (method, "index", sets, "selected_index") in links
    for stack in sets.children:
        assert (chosen_class, "index", stack, "selected_index") in links
        for images in stack.children:
            assert (slider, "value", images, "selected_index") in links
            assert [len(_images(frame)) for frame in images.children] == [1, 1]
