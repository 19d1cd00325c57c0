"""Paper section 5: what the test images a distilled image influences most have in common.

Attributes are boolean masks over the test images: on ``shapes`` the generator's ground truth
(``shapes_attributes``), on other data colour attributes read from the pixels (``colour_attributes``).
For one distilled image, test images are ranked by its influence (largest first: removing the image
raises their loss most). Among its top k, an attribute's precision is compared with its base rate in the
same class: the enrichment, with a hypergeometric p-value (one-sided, "more than chance"). Many pairs are
tested, so ``rank_enrichments`` also gives Benjamini-Hochberg q-values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddnb.data.dataset import Dataset, Split
from ddnb.data.shapes import BACKGROUND_NAMES, COLOUR_NAMES

# Colour rule for photographs (ddnb's own, documented so a reader can judge it): a pixel has colour X when
# its hue lies in X's range with saturation >= 0.35 and value >= 0.3 (white: saturation < 0.15 and value
# >= 0.8; black: value < 0.2); an image has X when at least ``min_fraction`` of its central crop does.
HUE_RANGES = {"red": ((0.0, 0.04), (0.95, 1.0)), "yellow": ((0.11, 0.19),), "green": ((0.22, 0.45),), "blue": ((0.55, 0.72),)}


def _hsv(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation and value of pixels [N, 3, H, W] in [0, 1] -> three [N, H, W] tensors."""
    r, g, b = pixels.clamp(0, 1).unbind(1)
    value, _ = pixels.clamp(0, 1).max(1)
    chroma = value - pixels.clamp(0, 1).min(1).values
    safe = chroma.clamp_min(1e-8)
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    return hue % 1.0, chroma / value.clamp_min(1e-8), value


def colour_attributes(pixels: torch.Tensor, crop: int = 16, min_fraction: float = 0.3) -> dict[str, torch.Tensor]:
    """Colour attributes (yellow, red, blue, green, white, black) of images [N, 3, H, W] in [0, 1] from the
    central ``crop`` x ``crop`` pixels (where the object usually is): {name: bool [N]}."""
    top, left = (pixels.shape[-2] - crop) // 2, (pixels.shape[-1] - crop) // 2
    hue, saturation, value = _hsv(pixels[..., top:top + crop, left:left + crop])
    vivid = (saturation >= 0.35) & (value >= 0.3)
    masks = {name: vivid & torch.stack([(hue >= low) & (hue < high) for low, high in ranges]).any(0)
             for name, ranges in HUE_RANGES.items()}
    masks["white"] = (saturation < 0.15) & (value >= 0.8)
    masks["black"] = value < 0.2
    return {name: mask.float().flatten(1).mean(1) >= min_fraction for name, mask in masks.items()}


def shapes_attributes(split: Split) -> dict[str, torch.Tensor]:
    """Ground-truth attributes of a ``shapes`` split: shape colour, background texture and colour, size."""
    attributes = split.attributes
    out = {colour: attributes["colour"] == index for index, colour in enumerate(COLOUR_NAMES)}
    out |= {f"{name} background": attributes["background"] == index for index, name in enumerate(BACKGROUND_NAMES)}
    out |= {f"on {colour}": attributes["background_colour"] == index for index, colour in enumerate(COLOUR_NAMES)}
    out["large"], out["small"] = attributes["size"] >= 10, attributes["size"] <= 6
    return out


def attributes_of_test(dataset: Dataset, count: int | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Attributes {name: bool [T]} of the test images ``dataset.test.head(count)`` (all if None), and where they
    come from: the generator's ground truth on ``shapes``, else ``colour_attributes`` of the decoded pixels."""
    test = dataset.test.head(count)
    if dataset.name == "shapes":
        return {k: v.cpu() for k, v in shapes_attributes(test).items()}, "the generator's ground truth"
    pixels = dataset.transform.decode(test.images).cpu()
    return colour_attributes(pixels), "the colour rule of ddnb.analysis.semantics (central crop, HSV thresholds)"


def top_influenced(influence: torch.Tensor, k: int = 9, among: torch.Tensor | None = None) -> torch.Tensor:
    """Indices [M, k] of the test images each distilled image influences most (influence [M, T]; larger first),
    optionally only ``among`` a boolean mask [T] or [M, T] of candidates."""
    scores = influence if among is None else influence.masked_fill(~among.expand_as(influence), float("-inf"))
    return scores.topk(k, dim=1).indices


@dataclass
class PrecisionRecall:
    """Precision and recall [K] of an attribute among the top k = 1..K ranked test images, and its base rate."""

    precision: torch.Tensor
    recall: torch.Tensor
    base_rate: float


def precision_recall(scores: torch.Tensor, has_attribute: torch.Tensor, candidates: torch.Tensor | None = None) -> PrecisionRecall:
    """Rank candidates (bool [T], default all) by ``scores`` [T], largest first; precision and recall of
    ``has_attribute`` (bool [T]) among the top k for every k."""
    candidates = torch.ones_like(has_attribute) if candidates is None else candidates
    order = scores.masked_fill(~candidates, float("-inf")).argsort(descending=True)[: int(candidates.sum())]
    hits = has_attribute[order].float().cumsum(0)
    total = float(has_attribute[candidates].sum())
    k = torch.arange(1, len(order) + 1)
    return PrecisionRecall(hits / k, hits / max(total, 1.0), total / len(order))


@dataclass
class Enrichment:
    """An attribute among one distilled image's top k test images of its class, against the class's base rate."""

    image: int
    attribute: str
    k: int
    hits: int  # top-k images with the attribute
    base_rate: float  # fraction with the attribute among the candidates
    enrichment: float  # (hits / k) / base_rate
    p_value: float  # P(at least ``hits`` by chance), hypergeometric
    q_value: float = float("nan")  # Benjamini-Hochberg over the pairs ranked together


def enrichment(scores: torch.Tensor, has_attribute: torch.Tensor, candidates: torch.Tensor, k: int,
               image: int = 0, attribute: str = "") -> Enrichment:
    """Enrichment of ``has_attribute`` (bool [T]) among the top ``k`` of ``candidates`` (bool [T]) by ``scores`` [T]."""
    population, with_attribute = int(candidates.sum()), int((has_attribute & candidates).sum())
    k = min(k, population)
    top = top_influenced(scores[None], k, candidates)[0]
    hits = int(has_attribute[top].sum())
    base_rate = with_attribute / max(population, 1)
    from scipy.stats import hypergeom  # here, not at the top: scipy.stats adds 1.3 s to every notebook kernel's start

    p_value = float(hypergeom.sf(hits - 1, population, with_attribute, k)) if with_attribute else 1.0
    ratio = (hits / k) / base_rate if base_rate > 0 else float("nan")
    return Enrichment(image, attribute, k, hits, base_rate, ratio, p_value)


def _benjamini_hochberg(p_values: torch.Tensor) -> torch.Tensor:
    order = p_values.argsort()
    ranked = p_values[order] * len(p_values) / torch.arange(1, len(p_values) + 1, dtype=p_values.dtype)
    monotone = ranked.flip(0).cummin(0).values.flip(0).clamp(max=1.0)
    return torch.empty_like(monotone).scatter_(0, order, monotone)


def rank_enrichments(influence: torch.Tensor, image_labels: torch.Tensor, test_labels: torch.Tensor,
                     attributes: dict[str, torch.Tensor], k: int = 50, min_count: int = 5) -> list[Enrichment]:
    """Every (distilled image, attribute) pair, each image judged among test images of its own class: sorted by
    p-value, with Benjamini-Hochberg q-values. influence [M, T]; image_labels [M]; test_labels [T].
    Attributes with fewer than ``min_count`` images in a class are skipped for that class."""
    results = []
    for image, label in enumerate(image_labels.tolist()):
        same_class = test_labels == label
        for name, mask in attributes.items():
            if int((mask & same_class).sum()) >= min_count:
                results.append(enrichment(influence[image], mask, same_class, k, image, name))
    if not results:
        return []
    q_values = _benjamini_hochberg(torch.tensor([r.p_value for r in results], dtype=torch.float64))
    for result, q in zip(results, q_values.tolist()):
        result.q_value = q
    return sorted(results, key=lambda r: (r.p_value, -r.enrichment))
