import colorsys

import pytest
import torch
from scipy.stats import hypergeom

from ddnb.analysis.semantics import (_benjamini_hochberg, _hsv, attributes_of_test, colour_attributes, enrichment, precision_recall,
                                     rank_enrichments, shapes_attributes, top_influenced)
from ddnb.data.shapes import COLOUR_NAMES, generate_shapes


def test_hsv_matches_colorsys():
    pixels = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    hue, saturation, value = _hsv(pixels)
    for n in range(5):
        expected = colorsys.rgb_to_hsv(*pixels[n, :, 1, 0].tolist())
        assert (float(hue[n, 1, 0]), float(saturation[n, 1, 0]), float(value[n, 1, 0])) == pytest.approx(expected, abs=1e-5)


def test_the_colour_rule_recovers_the_colours_in_the_centre_of_shapes_images():
    """Large shapes of a colour are found; what is found has that colour on the shape or the background
    (thin shapes leave the central crop to the background, which the rule cannot tell from an object)."""
    images, labels, attrs = generate_shapes(2000, seed=5, split="test")
    pixels, large = images.float() / 255, attrs["size"] >= 9
    found = colour_attributes(pixels)
    for name in ("yellow", "red", "green", "blue", "white", "black"):
        index = COLOUR_NAMES.index(name)
        shape, anywhere = attrs["colour"] == index, (attrs["colour"] == index) | (attrs["background_colour"] == index)
        precision = float((found[name] & anywhere).sum() / found[name].sum())
        recall = float((found[name] & shape & large).sum() / (shape & large).sum())
        assert precision > 0.8 and recall > 0.8, (name, precision, recall)


def test_shapes_attributes_are_the_generators_ground_truth():
    from ddnb.data.dataset import Split

    images, labels, attrs = generate_shapes(100, seed=1)
    named = shapes_attributes(Split(images.float(), labels, attrs))
    assert torch.equal(named["yellow"], attrs["colour"] == COLOUR_NAMES.index("yellow"))
    assert sum(int(named[c].sum()) for c in COLOUR_NAMES) == 100


def test_precision_recall_and_top_k_follow_the_ranking():
    scores = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.0])
    has = torch.tensor([True, False, False, True, True])
    curve = precision_recall(scores, has)
    assert curve.precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5, 0.6])
    assert curve.recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0]) and curve.base_rate == pytest.approx(0.6)
    assert top_influenced(scores[None], 2).tolist() == [[0, 2]]
    assert top_influenced(scores[None], 2, among=has).tolist() == [[0, 3]]


def test_enrichment_p_value_is_the_hypergeometric_tail_and_q_values_are_benjamini_hochberg():
    scores = torch.arange(20.0)
    has = torch.zeros(20, dtype=torch.bool)
    has[-4:] = True  # the 4 highest-scored images have the attribute
    result = enrichment(scores, has, torch.ones(20, dtype=torch.bool), k=5)
    assert result.hits == 4 and result.base_rate == pytest.approx(0.2) and result.enrichment == pytest.approx(4.0)
    assert result.p_value == pytest.approx(float(hypergeom.sf(3, 20, 4, 5)))
    q = _benjamini_hochberg(torch.tensor([0.01, 0.04, 0.03, 0.2], dtype=torch.float64))
    assert q.tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


def test_a_planted_influence_pattern_ranks_first():
    generator = torch.Generator().manual_seed(0)
    test_labels = torch.arange(2).repeat_interleave(50)
    yellow = torch.rand(100, generator=generator) < 0.2
    influence = torch.randn(2, 100, generator=generator)
    influence[1] += 3 * yellow.float()  # image 1 (class 1) helps the yellow test images most
    ranked = rank_enrichments(influence, torch.tensor([0, 1]), test_labels, {"yellow": yellow, "other": ~yellow}, k=10)
    assert (ranked[0].image, ranked[0].attribute) == (1, "yellow") and ranked[0].q_value < 0.05


def test_test_attributes_are_ground_truth_on_shapes_and_the_colour_rule_elsewhere(shapes_small):
    import dataclasses

    truth, source = attributes_of_test(shapes_small, 50)
    head = shapes_small.test.head(50)  # the test images the analyses score: 5 per class
    assert "ground truth" in source and all(len(mask) == 50 for mask in truth.values())
    assert all(torch.equal(mask, shapes_attributes(head)[name].cpu()) for name, mask in truth.items())
    photographs = dataclasses.replace(shapes_small, name="imagefolder:photos")  # any data without a generator
    colours, source = attributes_of_test(photographs, 50)
    assert "colour rule" in source
    expected = colour_attributes(shapes_small.transform.decode(head.images).cpu())
    assert colours.keys() == expected.keys() and all(torch.equal(colours[k], expected[k]) for k in expected)
