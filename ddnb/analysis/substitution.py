"""Paper section 3: can distilled data substitute for real data?

- ``evaluate_set``: the plain score of a set (several seeds), the one evaluator of ddnb;
- ``mixing`` / ``mixing_point``: add k real images per class to a set and train with the paper's protocol (one stacked
  run over seeds; each seed draws its own real images and network);
- ``recognition_by_real_models``: accuracy of networks trained on real data on each distilled set;
- ``pixel_histograms``: distribution of un-normalised pixel values;
- ``feature_map`` / ``project``: a 2-D map (UMAP or PCA) of penultimate features of test and distilled images.

Every function takes sets in the analysis input space (``in_analysis_space``: normalised, never ZCA),
as the paper's analyses do. Nothing here reads or writes the store: ``ddnb.sections`` keeps the results.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ddnb.data import Dataset, sample_per_class
from ddnb.distill.result import Distilled
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.stacked import StackedEvaluation, evaluate_seeds
from ddnb.train import EvalConfig, Protocol, evaluate, train

PAPER_KS = (0, 2, 10, 50, 250)


def in_analysis_space(distilled: Distilled, dataset: Dataset) -> torch.Tensor:
    """The set's images [M, C, H, W] re-encoded for ``dataset`` (e.g. a ZCA set into plain normalisation); a set
    already in that space is returned as it is (bit for bit: a decode-encode round trip would change its last bits)."""
    device = dataset.train.images.device
    if distilled.images.shape[1:] != dataset.train.images.shape[1:]:
        raise DdnbError(f"distilled images {tuple(distilled.images.shape[1:])} do not fit the data set's {dataset.image_shape}")
    if distilled.transform.same_as(dataset.transform):
        return distilled.images.to(device)
    return dataset.transform.encode(distilled.pixels().to(device))


@dataclass
class MixingResult:
    """Test accuracy [len(ks), len(seeds)] of networks trained on a set plus k real images per class."""

    ks: list[int]
    seeds: list[int]
    accuracies: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.accuracies.mean(1)

    @property
    def std(self) -> torch.Tensor:
        return self.accuracies.std(1) if len(self.seeds) > 1 else torch.zeros(len(self.ks))


def evaluate_set(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, config: EvalConfig,
                 progress: bool = False) -> StackedEvaluation:
    """One network per seed of ``config`` trained on images [M, C, H, W] / labels [M] and tested on ``dataset``'s
    test split: the one evaluator of ddnb (``ddnb evaluate`` and the book). ``progress``: a bar over the steps."""
    device = dataset.train.images.device
    return evaluate_seeds(images.to(device), labels.to(dataset.train.labels.device),
                          (dataset.test.images, dataset.test.labels), config, dataset.num_classes, progress=progress)


def mixing_point(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, k: int, config: EvalConfig,
                 progress: bool = False) -> torch.Tensor:
    """Accuracies [seeds] for one k: seed s adds its own k real images per class and trains its own network
    (k = 0: the set alone, ``evaluate_set``). ``progress``: a bar over the training steps."""
    if labels.dim() != 1:
        raise DdnbError("mixing needs hard labels [M]; soft-label sets cannot be mixed with real images as the paper does")
    if k == 0:
        return evaluate_set(images, labels, dataset, config, progress).accuracies
    train = dataset.train
    images, labels = images.to(train.images.device), labels.to(train.labels.device)
    extra = torch.stack([sample_per_class(train.labels, k, 10_000 + seed, dataset.num_classes) for seed in config.seeds])
    pool_images, pool_labels = torch.cat([images, train.images]), torch.cat([labels, train.labels])
    own = torch.arange(len(images)).expand(len(config.seeds), -1)
    subsets = torch.cat([own, extra + len(images)], dim=1)  # [S, M + k*C] indices into the pooled images
    test = (dataset.test.images, dataset.test.labels)
    return evaluate_seeds(pool_images, pool_labels, test, config, dataset.num_classes, subsets, progress=progress).accuracies


def mixing(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, ks: Sequence[int] = PAPER_KS,
           config: EvalConfig = EvalConfig()) -> MixingResult:
    """Train on ``images`` [M, C, H, W] / ``labels`` [M] plus k random real training images per class, for each
    k in ``ks``, one network per seed of ``config`` (the real images drawn differently per seed too).

    The paper's protocol (``paper300``: full batch, 300 steps) trains on all M + k*classes images at once.
    """
    return MixingResult(list(ks), list(config.seeds), torch.stack([mixing_point(images, labels, dataset, k, config) for k in ks]))


def real_trained_model(dataset: Dataset, net: str, protocol: Protocol, seed: int = 0, progress: bool = False,
                       **checkpoints: Any) -> nn.Module:
    """A ``net`` trained on all of ``dataset.train`` with ``protocol``; ``progress``: a bar over the training
    (off by default: in a notebook it would end up on the page). ``checkpoints``: ``train``'s ``resume``,
    ``checkpoint_every_s`` and ``on_checkpoint`` (a long training that survives a kill)."""
    channels, size = dataset.image_shape[0], dataset.image_shape[-1]
    model = build_net(net, seed, channels, size, dataset.num_classes, device=dataset.train.images.device)
    train(model, dataset.train.images, dataset.train.labels, protocol, seed, progress=progress, **checkpoints)
    return model


def recognition_by_real_models(models: Mapping[str, nn.Module], sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
                               ) -> dict[str, dict[str, float]]:
    """Accuracy in [0, 1] of each real-trained model on each set: ``{model: {set: accuracy}}``.

    Keys stay attached to their numbers all the way to the plot (the paper's bar chart swapped them).
    """
    return {name: {set_name: evaluate(model, images, labels.to(images.device)).accuracy
                   for set_name, (images, labels) in sets.items()} for name, model in models.items()}


ROUNDING = 1e-5  # decoding real pixels back from model inputs leaves float32 noise (-3e-8 for a 0): not "outside [0, 1]"


@dataclass
class Histogram:
    """Density of values per bin: ``edges`` [bins + 1], ``density`` [bins] (integrates to 1)."""

    edges: torch.Tensor
    density: torch.Tensor
    below: float  # fraction of values under 0
    above: float  # fraction of values over 1


def pixel_histograms(sets: Mapping[str, torch.Tensor], bins: int = 100, value_range: tuple[float, float] | None = None
                     ) -> dict[str, Histogram]:
    """Histograms of un-normalised pixel values (all channels) of each set of pixels [N, C, H, W], on shared bins."""
    if value_range is None:
        low = min(float(pixels.min()) for pixels in sets.values())
        high = max(float(pixels.max()) for pixels in sets.values())
        value_range = (min(low, 0.0), max(high, 1.0))
    out = {}
    for name, pixels in sets.items():
        values = pixels.detach().float().flatten().cpu()
        density, edges = torch.histogram(values, bins=bins, range=value_range, density=True)
        below, above = (values < -ROUNDING).float().mean(), (values > 1 + ROUNDING).float().mean()
        out[name] = Histogram(edges, density, float(below), float(above))
    return out


@dataclass
class FeatureMap:
    """2-D coordinates of penultimate features: ``points[name]`` [N, 2]; ``method`` says how they were made."""

    points: dict[str, torch.Tensor]
    method: str


PROJECTIONS = ("umap", "pca")


def project(features: torch.Tensor, projection: str = "umap", seed: int = 0) -> torch.Tensor:
    """Rows of ``features`` [N, D] mapped to 2-D [N, 2]: ``"umap"`` (umap-learn, seeded, single-threaded so
    repeatable) or ``"pca"`` (the top two principal components: linear and fast; clusters overlap more)."""
    if projection == "pca":
        centred = features - features.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return centred @ v[:2].T
    if projection != "umap":
        raise DdnbError(f"unknown projection {projection!r}: use one of {', '.join(PROJECTIONS)}")
    try:
        import umap
    except ImportError as error:
        raise DdnbError("the UMAP feature map needs umap-learn (pip install -r requirements.txt), "
                           "or choose the 'pca' projection") from error
    reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1)  # seeded runs are single-threaded: repeatable
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # it warns even when asked for 1
        return torch.from_numpy(reducer.fit_transform(features.double().numpy())).float()


@torch.no_grad()
def feature_map(net: nn.Module, sets: Mapping[str, torch.Tensor], projection: str = "umap", seed: int = 0) -> FeatureMap:
    """Penultimate features (``net.features``) of every set of images [N, C, H, W], mapped jointly to 2-D by
    ``projection`` (see ``project``)."""
    net.eval()
    features = {name: torch.cat([net.features(part) for part in images.split(500)]).flatten(1).cpu()
                for name, images in sets.items()}
    coordinates = project(torch.cat(list(features.values())), projection, seed)
    points, start = {}, 0
    for name, value in features.items():
        points[name], start = coordinates[start:start + len(value)], start + len(value)
    return FeatureMap(points, projection)
