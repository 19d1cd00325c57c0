import dataclasses
import sys

import pytest
import torch
from safetensors import safe_open

from ddnb.analysis.substitution import (PROJECTIONS, evaluate_set, feature_map, in_analysis_space, mixing, pixel_histograms, project,
                                        real_trained_model, recognition_by_real_models)
from ddnb.data import DataConfig, load_dataset
from ddnb.distill import Distilled, distill
from ddnb.errors import DdnbError
from ddnb.train import EvalConfig, get_protocol, run

CONFIG = EvalConfig("paper300", "convnet-tiny", seeds=(0, 1), steps=100)


def test_mixing_without_real_images_is_the_plain_evaluation_and_real_images_help_random_sets(shapes_small):
    subset = distill("random", shapes_small, ipc=10, seed=0)
    result = mixing(subset.images, subset.labels, shapes_small, ks=(0, 40), config=CONFIG)
    assert result.accuracies.shape == (2, 2) and result.ks == [0, 40]
    plain = run(subset.images, subset.labels, (shapes_small.test.images, shapes_small.test.labels), CONFIG)
    assert result.accuracies[0].tolist() == pytest.approx(plain.accs, abs=0.01)
    assert result.mean[1] > result.mean[0] + 0.05  # 10 -> 50 real images per class: clearly better
    assert (result.std >= 0).all()


def test_a_zca_set_is_re_encoded_into_the_analysis_space(store):
    zca = load_dataset(DataConfig("shapes", train_per_class=50, test_size=10, zca=True), store)
    plain = load_dataset(DataConfig("shapes", train_per_class=50, test_size=10), store)
    subset = distill("random", zca, ipc=2, seed=0)
    assert torch.allclose(in_analysis_space(subset, plain), plain.transform.encode(subset.pixels()), atol=1e-5)
    assert torch.allclose(subset.pixels(), plain.transform.decode(in_analysis_space(subset, plain)), atol=1e-4)
    already = distill("random", plain, ipc=2, seed=0)
    assert torch.equal(in_analysis_space(already, plain), already.images)  # bit for bit: no decode-encode round trip
    assert not subset.transform.same_as(plain.transform) and already.transform.same_as(plain.transform)


def test_a_zca_set_is_saved_without_the_whitening_matrices_and_analysed_the_same(store, tmp_path):
    zca = load_dataset(DataConfig("shapes", train_per_class=50, test_size=10, zca=True), store)
    plain = load_dataset(DataConfig("shapes", train_per_class=50, test_size=10), store)
    subset = distill("random", zca, ipc=2, seed=0)
    path = subset.save(tmp_path / "zca-set")
    names = safe_open(str(path), "pt").keys()
    assert "transform.zca" not in names and "transform.zca_inverse" not in names and "pixels" in names
    assert path.stat().st_size < 5 * subset.images.numel() * 4 + 10_000  # images, pixels, means: no D x D matrix
    loaded = Distilled.load(path)
    assert torch.equal(loaded.images, subset.images) and torch.equal(loaded.pixels(), subset.pixels())
    assert loaded.transform.same_as(zca.transform) and not loaded.transform.same_as(plain.transform)
    assert torch.equal(in_analysis_space(loaded, zca), subset.images)  # its own space: the images as they are
    assert torch.equal(in_analysis_space(loaded, plain), in_analysis_space(subset, plain))
    with pytest.raises(DdnbError, match="fingerprint"):
        loaded.transform.decode(loaded.images)
    assert torch.equal(Distilled.load(loaded.save(tmp_path / "again")).pixels(), subset.pixels())


def test_evaluate_set_is_the_plain_training_protocol_per_seed_in_the_sets_own_space(store):
    config = EvalConfig("paper300", "convnet-tiny", seeds=(0, 1), steps=30)
    data = DataConfig("shapes", train_per_class=50, test_size=100)
    zca, plain = load_dataset(dataclasses.replace(data, zca=True), store), load_dataset(data, store)
    whitened = distill("random", zca, ipc=5, seed=0)
    own = evaluate_set(whitened.images, whitened.labels, zca, config)
    # trained on the images as made, tested on the whitened test split: what run() gives on the zca data
    direct = run(whitened.images, whitened.labels, (zca.test.images, zca.test.labels), config)
    assert own.accuracies.tolist() == pytest.approx(direct.accs, abs=1e-6)
    analysed = evaluate_set(in_analysis_space(whitened, plain), whitened.labels, plain, config)  # re-encoded without ZCA
    assert not torch.equal(analysed.predictions, own.predictions)


def test_pixel_histograms_share_bins_and_count_values_outside_the_unit_range():
    inside, wide = torch.rand(2, 3, 4, 4), torch.linspace(-1, 2, 96).view(2, 3, 4, 4)
    histograms = pixel_histograms({"real": inside, "distilled": wide}, bins=30)
    assert torch.equal(histograms["real"].edges, histograms["distilled"].edges)
    width = histograms["real"].edges.diff()
    assert float((histograms["distilled"].density * width).sum()) == pytest.approx(1.0)
    assert histograms["real"].below == 0 and histograms["distilled"].below == pytest.approx(1 / 3, abs=0.02)
    assert histograms["distilled"].above == pytest.approx(1 / 3, abs=0.02)
    decoded = pixel_histograms({"real": torch.tensor([-3e-8, 0.0, 0.5, 1.0, 1 + 1e-7])})["real"]  # decode's float noise
    assert decoded.below == 0 and decoded.above == 0
    assert pixel_histograms({"x": torch.tensor([-0.01, 0.5])})["x"].below == 0.5


def test_real_models_are_repeatable_and_score_sets_under_their_own_names(shapes_small):
    protocol = get_protocol("real", steps=20)
    first = real_trained_model(shapes_small, "convnet-tiny", protocol, seed=0)
    again = real_trained_model(shapes_small, "convnet-tiny", protocol, seed=0)
    assert torch.equal(first.head.weight, again.head.weight)
    test = (shapes_small.test.images, shapes_small.test.labels)
    wrong = (shapes_small.test.images, (shapes_small.test.labels + 1) % 10)
    scores = recognition_by_real_models({"tiny": first}, {"test": test, "shifted": wrong})
    assert set(scores["tiny"]) == {"test", "shifted"} and scores["tiny"]["test"] > scores["tiny"]["shifted"]


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_feature_map_places_every_set_in_one_2d_space(shapes_small, projection):
    from ddnb.nets import build_net

    sets = {"test": shapes_small.test.images[:60], "distilled": shapes_small.train.images[:10]}
    first = feature_map(build_net("convnet-tiny", 0), sets, projection)
    assert first.points["test"].shape == (60, 2) and first.points["distilled"].shape == (10, 2)
    assert first.method == projection
    assert torch.equal(feature_map(build_net("convnet-tiny", 0), sets, projection).points["test"], first.points["test"])


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_projection_keeps_clusters_apart(projection):
    generator = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(4, 64, generator=generator)
    labels = torch.arange(4).repeat_interleave(50)
    points = project(centres[labels] + torch.randn(200, 64, generator=generator), projection, seed=0)
    distances = torch.cdist(points, points).fill_diagonal_(float("inf"))
    assert (labels[distances.argmin(1)] == labels).float().mean() > 0.95  # each point's nearest neighbour is of its cluster


def test_projection_errors_are_clear(monkeypatch):
    with pytest.raises(DdnbError, match="unknown projection 'tsne'"):
        project(torch.randn(10, 4), "tsne")
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(DdnbError, match="umap-learn"):
        project(torch.randn(10, 4), "umap")
