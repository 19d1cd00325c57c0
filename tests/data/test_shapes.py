"""Tests of the embedded ``shapes`` data set: determinism, ranges, attribute semantics, learnability."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ddnb
from ddnb.data.shapes import (
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    GENERATOR_VERSION,
    PALETTE,
    SHAPE_CLASSES,
    class_colour_probs,
    generate_shapes,
)

ATTRIBUTES = {
    "colour": torch.int64, "size": torch.float32, "x": torch.float32, "y": torch.float32,
    "rotation": torch.float32, "background": torch.int64, "background_colour": torch.int64,
    "noise": torch.float32,
}
CIRCLE, YELLOW = SHAPE_CLASSES.index("circle"), COLOUR_NAMES.index("yellow")


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """10k test images: enough for per-class colour statistics (about 1000 images per class)."""
    return generate_shapes(10_000, seed=0, split="test")


def test_constants_are_consistent():
    assert len(SHAPE_CLASSES) == 10 and len(set(SHAPE_CLASSES)) == 10
    assert "yellow" in COLOUR_NAMES and len(set(COLOUR_NAMES)) == len(COLOUR_NAMES)
    assert PALETTE.shape == (len(COLOUR_NAMES), 3) and PALETTE.dtype == torch.float32
    assert PALETTE.min() >= 0 and PALETTE.max() <= 1
    # named colours must be told apart by eye, so no two palette entries may nearly coincide
    gaps = torch.cdist(PALETTE, PALETTE) + torch.eye(len(PALETTE))
    assert gaps.min() > 0.15
    assert len(BACKGROUND_NAMES) >= 3 and "flat" in BACKGROUND_NAMES
    assert isinstance(GENERATOR_VERSION, int) and GENERATOR_VERSION >= 1


def test_output_dtypes_shapes_and_ranges(sample):
    images, labels, attrs = sample
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == len(SHAPE_CLASSES) - 1
    assert set(attrs) >= set(ATTRIBUTES)
    for name, dtype in ATTRIBUTES.items():
        assert attrs[name].shape == (10_000,) and attrs[name].dtype == dtype, name
    # images use the intensity range, not a sliver of it
    assert images.min() == 0 and images.max() == 255 and images.float().std() > 40


def test_empty_request():
    images, labels, attrs = generate_shapes(0)
    assert images.shape == (0, 3, 32, 32) and labels.shape == (0,)
    assert all(t.shape == (0,) for t in attrs.values())
    with pytest.raises(ValueError):
        generate_shapes(-1)


def _assert_same(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_same_arguments_give_identical_output():
    # 4500 images spans more than one render chunk, so chunking must not break determinism
    _assert_same(generate_shapes(4500, seed=7, split="train"), generate_shapes(4500, seed=7, split="train"))


def test_global_rng_is_neither_used_nor_disturbed():
    torch.manual_seed(1)
    first = generate_shapes(64, seed=5)
    after = torch.rand(1)
    torch.manual_seed(2)  # a different global state must not change the data
    second = generate_shapes(64, seed=5)
    _assert_same(first, second)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)


def test_seed_and_split_change_output():
    base = generate_shapes(256, seed=0, split="train")
    for other in (generate_shapes(256, seed=1, split="train"), generate_shapes(256, seed=0, split="test")):
        assert not torch.equal(base[0], other[0])
        assert not torch.equal(base[1], other[1])
        assert not torch.equal(base[2]["x"], other[2]["x"])


def test_split_mixing_does_not_depend_on_python_hash_salt():
    code = "from ddnb.data.shapes import generate_shapes; print(int(generate_shapes(32, 3, 'val')[0].sum()))"
    root = str(Path(ddnb.__file__).parents[1])  # importable even without an installed package
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(generate_shapes(32, 3, "val")[0].sum())


def test_every_class_present_and_balanced(sample):
    counts = torch.bincount(sample[1], minlength=len(SHAPE_CLASSES))
    assert counts.min() >= 999 and counts.max() <= 1001


def test_attributes_valid(sample):
    attrs = sample[2]
    indexed = (("colour", COLOUR_NAMES), ("background_colour", COLOUR_NAMES), ("background", BACKGROUND_NAMES))
    for name, names in indexed:
        assert attrs[name].min() >= 0 and attrs[name].max() < len(names), name
        assert len(attrs[name].unique()) == len(names), f"some {name} never occurs"
    assert (attrs["background_colour"] != attrs["colour"]).all()
    assert attrs["size"].min() >= 4 and attrs["size"].max() <= 13  # documented radius range
    assert (attrs["size"] < 6).float().mean() > 0.15, "small shapes keep the task hard"
    for axis in ("x", "y"):  # documented: within 3 pixels of the image centre, and not all at it
        offset = (attrs[axis] - 15.5).abs()
        assert offset.max() <= 3 and offset.mean() > 1
    assert attrs["rotation"].min() >= 0 and attrs["rotation"].max() < 360
    assert attrs["noise"].min() >= 0 and attrs["noise"].max() < 0.3
    assert all(torch.isfinite(attrs[k]).all() for k in ("size", "x", "y", "rotation", "noise"))


def _colour_frequencies(labels: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Empirical colour distribution of every class: [classes, colours]."""
    counts = torch.zeros(len(SHAPE_CLASSES), len(COLOUR_NAMES))
    counts.index_put_((labels, colour), torch.ones(len(labels)), accumulate=True)
    return counts / counts.sum(1, keepdim=True)


def test_colour_distribution_depends_on_class(sample):
    _, labels, attrs = sample
    freq = _colour_frequencies(labels, attrs["colour"])
    probs = class_colour_probs().float()
    assert torch.allclose(probs.sum(1), torch.ones(len(SHAPE_CLASSES)))
    assert (freq - probs).abs().max() < 0.05  # the sample follows the documented table
    # dominant colours cover most of each class, and they are not the same in every class
    assert (freq.topk(2, dim=1).values.sum(1) > 0.6).all()
    assert len(freq.argmax(1).unique()) >= 5


def test_yellow_circles_are_a_present_minority(sample):
    _, labels, attrs = sample
    yellow = attrs["colour"] == YELLOW
    circles = labels == CIRCLE
    assert (yellow & circles).sum() >= 30  # enough to analyse as a concept
    assert 0.05 <= yellow[circles].float().mean() <= 0.15
    per_class = torch.stack([yellow[labels == k].float().mean() for k in range(len(SHAPE_CLASSES))])
    assert per_class.min() < 0.04, "yellow should be rarer in some classes"


def _pixel(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of pixel (x, y) of every image: [n, 3]."""
    return images[torch.arange(len(images)), :, y.round().long(), x.round().long()].float() / 255


def test_shape_colour_appears_at_the_centre(sample):
    images, labels, attrs = sample
    hollow = torch.tensor([SHAPE_CLASSES.index(c) for c in ("ring", "crescent")])  # centre is outside
    keep = (attrs["size"] >= 8) & (attrs["noise"] < 0.02) & ~torch.isin(labels, hollow)
    assert keep.sum() > 200
    centre = _pixel(images[keep], attrs["x"][keep], attrs["y"][keep])
    assert (centre - PALETTE[attrs["colour"][keep]]).abs().max() < 0.1


def test_flat_background_shows_background_colour(sample):
    images, _, attrs = sample
    corner = torch.tensor([0.0, 31.0])
    # the corner farthest from the shape, for flat, almost noise-free images
    cx = corner[(attrs["x"] < 15.5).long()]
    cy = corner[(attrs["y"] < 15.5).long()]
    far = torch.hypot(cx - attrs["x"], cy - attrs["y"]) > attrs["size"] * 1.5 + 1
    keep = far & (attrs["background"] == BACKGROUND_NAMES.index("flat")) & (attrs["noise"] < 0.02)
    assert keep.sum() > 100
    pixel = _pixel(images[keep], cx[keep], cy[keep])
    assert (pixel - PALETTE[attrs["background_colour"][keep]]).abs().max() < 0.1


def _convnet_tiny() -> nn.Sequential:
    """ConvNet-Tiny: the default ConvNet at width 16 (7,754 parameters)."""
    layers: list[nn.Module] = []
    for block in range(3):
        conv = nn.Conv2d(3 if block == 0 else 16, 16, 3, padding=1)
        layers += [conv, nn.GroupNorm(16, 16), nn.ReLU(), nn.AvgPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 4 * 4, len(SHAPE_CLASSES)))


def _normalise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> float, standardised per channel with the train statistics."""
    train, test = train.float() / 255, test.float() / 255
    mean, std = train.mean((0, 2, 3), keepdim=True), train.std((0, 2, 3), keepdim=True)
    return (train - mean) / std, (test - mean) / std


def test_task_is_learnable_but_not_solved():
    """One epoch of ConvNet-Tiny (20k images, batch 64, SGD 0.01 / 0.9) lands in a calibrated band.

    Measured at GENERATOR_VERSION 2: 0.55-0.59 over three init seeds (the default ConvNet on 50k
    images reaches ~0.79). The same recipe gives ~0.89 on centred, noise-free, large shapes (too
    easy) and ~0.30 with shapes anywhere in the image (too hard), so both bounds can fail.
    """
    train_x, train_y, _ = generate_shapes(20_000, seed=0, split="train")
    test_x, test_y, _ = generate_shapes(2_000, seed=0, split="test")
    train_x, test_x = _normalise(train_x, test_x)
    with torch.random.fork_rng():  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(0)
        net = _convnet_tiny()
    assert sum(p.numel() for p in net.parameters()) == 7_754
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for batch in torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0)).split(64):
        loss = nn.functional.cross_entropy(net(train_x[batch]), train_y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
    assert 0.42 < accuracy < 0.75, f"test accuracy {accuracy:.3f} outside the calibrated band"
