"""``shapes``: ddnb's embedded default data set of procedurally drawn 32x32 RGB shapes.

Ten classes (``SHAPE_CLASSES``) of filled shapes that stay distinct under rotation, drawn on
textured backgrounds with pixel noise, so a small ConvNet learns the task without solving it.
Nothing is downloaded: ``generate_shapes(n, seed, split)`` is deterministic and fully vectorised
(implicit shape functions on per-image rotated and scaled coordinate grids, antialiased edges).

Every image records its generating attributes, the ground truth of the semantics analysis
(e.g. "which test images are yellow circles"). Each is a tensor of length ``n``:

- ``colour`` (int64): shape fill colour, index into ``COLOUR_NAMES`` / ``PALETTE``. Every class has
  its own distribution: two dominant colours cover 70 % of its images, yellow is 2-14 %.
- ``size`` (float32): shape radius in pixels, 4-13 (every shape fits a circle of about this radius).
- ``x``, ``y`` (float32): shape centre in pixels; ``x`` is the column, ``y`` the row, and (0, 0) is
  the centre of the top-left pixel. Centres lie within 3 pixels of the image centre, so only the
  largest shapes touch the border.
- ``rotation`` (float32): counter-clockwise rotation of the shape in degrees, in [0, 360).
- ``background`` (int64): background texture, index into ``BACKGROUND_NAMES``.
- ``background_colour`` (int64): base colour of the background, index into ``COLOUR_NAMES``;
  never equal to ``colour`` (but neighbours like red/orange give deliberately low contrast).
- ``noise`` (float32): standard deviation of the Gaussian pixel noise (the same value added to all
  three channels of a pixel), in [0, 1] intensity units, before quantisation to uint8.

Bump ``GENERATOR_VERSION`` whenever the output for some (n, seed, split) changes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "ring", "triangle", "square", "star", "cross", "ellipse", "crescent", "hexagon", "heart",
)
COLOUR_NAMES: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "gray", "brown", "black",
)
PALETTE: Tensor = torch.tensor([
    [0.85, 0.15, 0.15], [0.95, 0.55, 0.10], [0.95, 0.90, 0.15], [0.20, 0.70, 0.25],
    [0.20, 0.80, 0.85], [0.15, 0.30, 0.85], [0.55, 0.25, 0.75], [0.95, 0.55, 0.75],
    [0.95, 0.95, 0.95], [0.50, 0.50, 0.50], [0.50, 0.30, 0.15], [0.08, 0.08, 0.08],
])
BACKGROUND_NAMES: tuple[str, ...] = ("flat", "gradient", "stripes", "checker", "noise")
GENERATOR_VERSION: int = 2  # 1: first draft, centres anywhere (too hard to learn in one epoch)

IMAGE_SIZE = 32
_CHUNK = 4096  # images rendered at once: bounds memory to ~100 MB of float temporaries

# Per class: two dominant colours (never yellow) and the class's share of yellow. The rest of the
# probability mass is spread evenly, so every colour occurs in every class and sub-concepts like
# "yellow circle" are present but a minority.
_CLASS_COLOURS: dict[str, tuple[str, str, float]] = {
    "circle": ("red", "blue", 0.10), "ring": ("green", "purple", 0.03),
    "triangle": ("orange", "cyan", 0.12), "square": ("blue", "brown", 0.02),
    "star": ("pink", "green", 0.08), "cross": ("white", "red", 0.03),
    "ellipse": ("cyan", "gray", 0.06), "crescent": ("purple", "orange", 0.14),
    "hexagon": ("brown", "black", 0.02), "heart": ("black", "pink", 0.05),
}
_DOMINANT_SHARES = (0.45, 0.25)

# Difficulty knobs, calibrated so the default ConvNet reaches ~80 % test accuracy after one epoch.
# The classifier ends in a Linear layer over a 4x4 feature map, so the centre jitter matters most.
_SIZE_RANGE = (4.0, 13.0)  # shape radius in pixels, uniform
_JITTER = 3.0  # largest offset of the centre from the image centre, in pixels
_CLIP_MARGIN = 0.75  # but keep the centre this many radii from the border (large shapes may clip)
_NOISE_MAX = 0.1  # pixel noise std is _NOISE_MAX * U^2: mostly mild, sometimes strong
_TEXTURE_AMPLITUDE = (0.05, 0.25)  # background modulation, in intensity units
_TEXTURE_PERIOD = (4.0, 12.0)  # stripe and checker period in pixels


def class_colour_probs() -> Tensor:
    """Fixed colour distribution of each class: [len(SHAPE_CLASSES), len(COLOUR_NAMES)], rows sum to 1."""
    probs = torch.zeros(len(SHAPE_CLASSES), len(COLOUR_NAMES), dtype=torch.float64)
    yellow = COLOUR_NAMES.index("yellow")
    for k, name in enumerate(SHAPE_CLASSES):
        first, second, yellow_share = _CLASS_COLOURS[name]
        special = [COLOUR_NAMES.index(first), COLOUR_NAMES.index(second), yellow]
        rest = 1.0 - sum(_DOMINANT_SHARES) - yellow_share
        probs[k] = rest / (len(COLOUR_NAMES) - len(special))
        probs[k, special] = torch.tensor([*_DOMINANT_SHARES, yellow_share], dtype=torch.float64)
    return probs


# outward unit normal of the star's edge from the tip (1, 0) to the notch 0.45 * (cos 36deg, sin 36deg)
_STAR_EDGE = (0.45 * math.sin(math.pi / 5), 1.0 - 0.45 * math.cos(math.pi / 5))
_STAR_NORMAL = (_STAR_EDGE[0] / math.hypot(*_STAR_EDGE), _STAR_EDGE[1] / math.hypot(*_STAR_EDGE))

# ---- implicit shapes: (u, v) in units of the radius, v pointing up; < 0 inside, ~signed distance


def _polygon(u: Tensor, v: Tensor, sides: int, inradius: float) -> Tensor:
    """Regular convex polygon: the largest projection onto an edge normal, minus the inradius."""
    dist = torch.full_like(u, -math.inf)
    for k in range(sides):  # a running maximum beats amax over a tiny trailing dimension
        angle = math.pi / 2 + 2 * math.pi * k / sides
        dist = torch.maximum(dist, u * math.cos(angle) + v * math.sin(angle))
    return dist - inradius


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star with straight edges from each tip (radius 1) to inner vertices (0.45)."""
    sector = 2 * math.pi / 5
    phase = torch.remainder(torch.atan2(u, v), sector)  # tips at angle 0 (pointing up)
    off_tip = torch.minimum(phase, sector - phase)  # fold onto the wedge between a tip and a notch
    r = torch.hypot(u, v)
    return (r * torch.cos(off_tip) - 1.0) * _STAR_NORMAL[0] + r * torch.sin(off_tip) * _STAR_NORMAL[1]


def _cross(u: Tensor, v: Tensor) -> Tensor:
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - 1.0, av - 0.3), torch.maximum(au - 0.3, av - 1.0))


def _crescent(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(torch.hypot(u, v) - 1.0, 0.8 - torch.hypot(u - 0.5, v))


def _heart(u: Tensor, v: Tensor) -> Tensor:
    """Classic heart: a diamond plus two discs on its upper edges."""
    au, w = u.abs(), v + 0.08
    diamond = (au + w.abs() - 0.8) / math.sqrt(2)
    return torch.minimum(diamond, torch.hypot(au - 0.4, w - 0.4) - 0.566)


_SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": lambda u, v: torch.hypot(u, v) - 1.0,
    "ring": lambda u, v: (torch.hypot(u, v) - 0.72).abs() - 0.28,
    "triangle": lambda u, v: _polygon(u, v, 3, 0.5),
    "square": lambda u, v: _polygon(u, v, 4, 0.72),
    "star": _star,
    "cross": _cross,
    "ellipse": lambda u, v: (torch.hypot(u, v / 0.55) - 1.0) * 0.55,
    "crescent": _crescent,
    "hexagon": lambda u, v: _polygon(u, v, 6, 0.88),
    "heart": _heart,
}


# ---- sampling


def _generator(seed: int, split: str) -> torch.Generator:
    """A generator seeded from (seed, split) through a stable hash (Python's hash() is salted)."""
    digest = hashlib.sha256(f"ddnb.shapes:{split}:{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _sample_attributes(labels: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
    """Draw every recorded attribute (see the module docstring) for the given labels [n]."""
    n = len(labels)
    colour = torch.multinomial(class_colour_probs()[labels], 1, generator=gen).squeeze(1)
    # a uniform non-zero offset makes the background colour uniform over the other colours
    bg_colour = (colour + torch.randint(1, len(COLOUR_NAMES), (n,), generator=gen)) % len(COLOUR_NAMES)
    low, high = _SIZE_RANGE
    size = low + (high - low) * torch.rand(n, generator=gen)
    middle = (IMAGE_SIZE - 1) / 2
    jitter = (middle - _CLIP_MARGIN * size).clamp(0.0, _JITTER)
    x = middle + jitter * (2 * torch.rand(n, generator=gen) - 1)
    y = middle + jitter * (2 * torch.rand(n, generator=gen) - 1)
    return {
        "colour": colour, "size": size, "x": x, "y": y,
        "rotation": _uniform(n, 0.0, 360.0, gen),
        "background": torch.randint(len(BACKGROUND_NAMES), (n,), generator=gen),
        "background_colour": bg_colour,
        "noise": _NOISE_MAX * torch.rand(n, generator=gen) ** 2,
    }


# ---- rendering


def _shape_alpha(labels: Tensor, attrs: dict[str, Tensor]) -> Tensor:
    """Antialiased coverage in [0, 1] of each image's shape: [b, 32, 32]."""
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    dx = grid.view(1, 1, -1) - attrs["x"].view(-1, 1, 1)
    dy = attrs["y"].view(-1, 1, 1) - grid.view(1, -1, 1)  # rows grow downwards, v points up
    theta = torch.deg2rad(attrs["rotation"]).view(-1, 1, 1)
    radius = attrs["size"].view(-1, 1, 1)
    u = (torch.cos(theta) * dx + torch.sin(theta) * dy) / radius  # rotate the grid by -theta
    v = (torch.cos(theta) * dy - torch.sin(theta) * dx) / radius
    dist = torch.empty_like(u)
    for k, name in enumerate(SHAPE_CLASSES):
        idx = labels == k
        dist[idx] = _SHAPES[name](u[idx], v[idx])
    return (0.5 - dist * radius).clamp(0.0, 1.0)  # one-pixel ramp across the edge


def _texture(kind: Tensor, gen: torch.Generator) -> Tensor:
    """Per-pixel background modulation in [-1, 1] for each texture kind [b]: [b, 32, 32]."""
    b = len(kind)
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32) - (IMAGE_SIZE - 1) / 2
    angle = _uniform(b, 0.0, math.pi, gen).view(-1, 1, 1)
    along = torch.cos(angle) * grid.view(1, 1, -1) + torch.sin(angle) * grid.view(1, -1, 1)
    freq = (2 * math.pi / _uniform(b, *_TEXTURE_PERIOD, gen)).view(-1, 1, 1)
    phase = _uniform(b, 0.0, 2 * math.pi, gen).view(-1, 1, 1)
    coarse = torch.rand(b, 1, 6, 6, generator=gen) * 2 - 1
    field = torch.zeros(b, IMAGE_SIZE, IMAGE_SIZE)  # "flat" stays zero
    # each texture is evaluated only on its own images: sin() over every pixel is the slow part
    idx = kind == BACKGROUND_NAMES.index("gradient")
    field[idx] = (along[idx] / 16).clamp(-1, 1)
    idx = kind == BACKGROUND_NAMES.index("stripes")
    field[idx] = torch.sin(freq[idx] * along[idx] + phase[idx])
    idx = kind == BACKGROUND_NAMES.index("checker")
    across = torch.cos(angle[idx]) * grid.view(1, -1, 1) - torch.sin(angle[idx]) * grid.view(1, 1, -1)
    field[idx] = torch.sign(torch.sin(freq[idx] * along[idx] + phase[idx]) * torch.sin(freq[idx] * across))
    idx = kind == BACKGROUND_NAMES.index("noise")
    field[idx] = F.interpolate(coarse[idx], size=IMAGE_SIZE, mode="bilinear", align_corners=False).squeeze(1)
    return field


def _render(labels: Tensor, attrs: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    """Composite shape over textured background, add noise, quantise: uint8 [b, 3, 32, 32]."""
    b = len(labels)
    texture = _texture(attrs["background"], gen) * _uniform(b, *_TEXTURE_AMPLITUDE, gen).view(-1, 1, 1)
    image = PALETTE[attrs["background_colour"]].view(b, 3, 1, 1) + texture.unsqueeze(1)
    alpha = _shape_alpha(labels, attrs).unsqueeze(1)
    image += alpha * (PALETTE[attrs["colour"]].view(b, 3, 1, 1) - image)  # in place: memory-bound
    # grey (luminance) noise: a third of the random numbers of per-channel noise, just as disruptive
    image += attrs["noise"].view(-1, 1, 1, 1) * torch.randn(b, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    return image.clamp_(0.0, 1.0).mul_(255).add_(0.5).to(torch.uint8)  # +0.5 then truncate = round


def generate_shapes(n: int, seed: int = 0, split: str = "train") -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Generate ``n`` labelled shape images, bit-identical for the same (n, seed, split).

    Returns images uint8 [n, 3, 32, 32], labels int64 [n] (indices into ``SHAPE_CLASSES``, balanced
    to within one image per class) and the attributes dict name -> tensor [n] of the module docstring.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    gen = _generator(seed, split)
    labels = (torch.arange(n) % len(SHAPE_CLASSES))[torch.randperm(n, generator=gen)]
    attrs = _sample_attributes(labels, gen)
    images = torch.empty(n, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):  # chunks bound memory; the stream order keeps it deterministic
        part = slice(start, start + _CHUNK)
        images[part] = _render(labels[part], {k: t[part] for k, t in attrs.items()}, gen)
    return images, labels, attrs
