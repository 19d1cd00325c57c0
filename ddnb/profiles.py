"""Named parameter sets: how big every step of the book is on a given machine.

| profile     | data    | target                      | budget                  |
|-------------|---------|-----------------------------|-------------------------|
| smoke       | shapes  | CI and tests                | whole book ~16 min from scratch on the slower 2-core host of 2026-12-07 (the CI run's durations: sets 7, their analyses and build 9) |
| quick       | shapes  | any laptop; ``make book``   | <= 15 min on 2 cores (benchmarks/README.md) |
| cifar10-cpu | CIFAR-10| 2-core CPU, resumable       | sets <= 60 min each; book 6 h or more of analyses on five sets (2026-12-07: 19 min a mixing curve per set, k = 2, 10, 50; 63 min for MTT's on a host 2x slower, partly beside a test run), over sessions |
| paper       | CIFAR-10| one GPU, the paper's settings | hours                 |
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ddnb.data import DataConfig
from ddnb.errors import DdnbError
from ddnb.train import EvalConfig


@dataclass(frozen=True)
class PoolConfig:
    """Sizes of the two model pools (the paper: 520 subset models of 100 epochs, 30 early models of one epoch)."""

    net: str = field(default="convnet", metadata={"help": "architecture of every pool network"})
    subset_fractions: tuple[float, ...] = field(default=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05),
                                                metadata={"help": "fractions of each class's training images"})
    models_per_fraction: int = field(default=4, metadata={"help": "subset networks per fraction"})
    subset_epochs: int = field(default=100, metadata={"help": "epochs of the 'real' protocol on each subset"})
    early_models: int = field(default=4, metadata={"help": "networks trained on all real data"})
    early_iterations: int | None = field(default=None, metadata={"help": "iterations of early training (None: one epoch)"})
    record_every: int = field(default=1, metadata={"help": "iterations between recorded test predictions"})
    snapshot_models: int = field(default=1, metadata={"help": "early networks whose parameters are kept per recorded iteration"})
    chunk: int = field(default=8, metadata={"help": "networks per stacked run (memory)"})
    seed: int = field(default=0, metadata={"help": "first network seed; subset draws follow from it"})


@dataclass(frozen=True)
class AnalysisSizes:
    """How much of each analysis a profile runs (the paper's values are the ``paper`` profile's)."""

    mixing_ks: tuple[int, ...] = field(default=(0, 2, 10, 50, 250), metadata={"help": "real images per class added to each set"})
    real_nets: tuple[str, ...] = field(default=("convnet", "convnet-tiny", "resnet18", "resnet34"),
                                       metadata={"help": "networks trained on real data that score the distilled sets"})
    real_epochs: int = field(default=50, metadata={"help": "epochs of the 'real' protocol for those networks"})
    real_epochs_by_net: tuple[tuple[str, int], ...] = field(default=(), metadata={
        "help": "(net, epochs) pairs overriding real_epochs for some networks (a ResNet on a CPU)"})
    feature_projection: str = field(default="umap", metadata={
        "help": "how the feature map reaches 2-D: umap (the paper's) or pca (fast, linear)"})
    pools: PoolConfig = field(default=PoolConfig(), metadata={"help": "subset and early-training model pools"})
    curvature_iterations: int = field(default=300, metadata={"help": "iterations of real training along which curvature is measured"})
    curvature_every: int = field(default=10, metadata={"help": "iterations between curvature measurements"})
    curvature_probes: int = field(default=64, metadata={"help": "Hutchinson probes per trace estimate"})
    curvature_real_images: int | None = field(default=None, metadata={"help": "real training images used for the real-data curvature (None: all)"})
    influence_test_images: int | None = field(default=None, metadata={"help": "test images scored by leave-one-out influence (None: all)"})
    influence_images_per_class: int | None = field(default=None, metadata={"help": "distilled images left out, per class (None: all)"})
    influence_steps: int = field(default=300, metadata={"help": "length of the paper300 training behind leave-one-out"})
    influence_cg_iterations: int = field(default=100, metadata={"help": "conjugate-gradient iterations of the influence-function estimate"})
    influence_dampings: tuple[float, ...] = field(default=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                                                  metadata={"help": "dampings of the influence-function estimate compared with LOO"})

    def epochs_of(self, net: str) -> int:
        """Epochs of the 'real' protocol for the real-trained ``net``."""
        return dict(self.real_epochs_by_net).get(net, self.real_epochs)


@dataclass(frozen=True)
class Profile:
    """Everything a profile fixes; notebooks receive it as parameters."""

    name: str = field(metadata={"help": "profile name"})
    description: str = field(metadata={"help": "one line for the top of every page"})
    data: DataConfig = field(metadata={"help": "the data set and how much of it"})
    evaluation: EvalConfig = field(metadata={"help": "how distilled sets are scored"})
    ipc: int = field(default=10, metadata={"help": "images per class of every distilled set"})
    analysis: AnalysisSizes = field(default=AnalysisSizes(), metadata={"help": "sizes of the analyses"})
    validation_per_class: int | None = field(default=None, metadata={
        "help": "training images per class held out when the sets are made; `ddnb search` scores settings on them (None: none)"})

    def set_data(self) -> DataConfig:
        """The data the distilled sets are made from: ``data`` less the validation split, if any."""
        return replace(self.data, validation_per_class=self.validation_per_class)


PROFILES = {
    "smoke": Profile(
        "smoke", "tiny networks and few steps, to test the whole pipeline",
        DataConfig("shapes", train_per_class=100, test_size=1000), EvalConfig(net="convnet-tiny", seeds=(0, 1)),
        analysis=AnalysisSizes(mixing_ks=(0, 2), real_nets=("convnet-tiny",), real_epochs=2,
                               pools=PoolConfig(net="convnet-tiny", subset_fractions=(0.02, 0.05, 0.1), models_per_fraction=2,
                                                subset_epochs=20, early_models=2, record_every=2, snapshot_models=1),
                               curvature_iterations=20, curvature_every=5, curvature_probes=16, curvature_real_images=500,
                               influence_test_images=500, influence_images_per_class=1, influence_steps=50,
                               influence_cg_iterations=20, influence_dampings=(1e-2, 1.0)),
    ),
    "quick": Profile(
        "quick", "every analysis meaningful on the embedded shapes data, minutes on a laptop",
        DataConfig("shapes", train_per_class=1000, test_size=5000), EvalConfig(net="convnet-tiny", seeds=(0, 1, 2)),
        # sized so that `make book` fits 15 minutes on 2 cores: with k up to 50 (72 s of training per set), 3 leave-one-out
        # rows per class of 300-step trainings (10 min for five sets) and longer distillations it took 38 minutes (2026-12-02);
        # 20.5 on a slow host after the jobs change (2026-12-04), then halved: curvature probes, early-pool records, CG
        # iterations, and cheaper BPTT and GM presets (beside their code)
        analysis=AnalysisSizes(mixing_ks=(0, 10), real_nets=("convnet-tiny", "convnet"), real_epochs=2,
                               pools=PoolConfig(net="convnet-tiny", subset_fractions=(0.01, 0.02, 0.05, 0.1), models_per_fraction=4,
                                                subset_epochs=30, early_models=4, record_every=2, snapshot_models=1),
                               curvature_iterations=40, curvature_every=4, curvature_probes=16, curvature_real_images=2000,
                               influence_test_images=2000, influence_images_per_class=1, influence_steps=100,
                               influence_cg_iterations=30, influence_dampings=(1e-2, 1e-1, 1.0)),
    ),
    "cifar10-cpu": Profile(
        "cifar10-cpu", "CIFAR-10 with reduced steps and pools, hours on a 2-core CPU",
        DataConfig("cifar10"), EvalConfig(seeds=(0, 1, 2)),
        # k up to 10 is where the paper's sets dip (real images added lower their accuracy); the ZCA-made sets of
        # 2026-12-03 did not (BPTT, MTT and GM rose with k, DM stayed flat), which the findings page states for the
        # current ones. k = 50 is 600-image trainings, 14 minutes per set (847 s for 3 seeds, 2026-12-02)
        # ResNet-18 for 2 epochs (the paper: 91 % after full training) is about 25 minutes on 2 cores (68 on the slower
        # host of 2026-12-07, 10 s a step, partly beside a 1-thread run; ConvNet's 5 epochs there 28.5 min beside a
        # test run; a real-trained network checkpoints every 5 minutes and resumes after a kill); three early
        # networks keep their parameters for recognition with error bars; curvature to iteration 300, where the
        # paper's BPTT and MTT curves have collapsed
        analysis=AnalysisSizes(mixing_ks=(0, 2, 10, 50), real_nets=("convnet-tiny", "convnet", "resnet18"), real_epochs=5,
                               real_epochs_by_net=(("resnet18", 2),),
                               pools=PoolConfig(subset_fractions=(0.005, 0.01, 0.02, 0.05), models_per_fraction=2, subset_epochs=20,
                                                early_models=3, record_every=4, snapshot_models=3),
                               curvature_iterations=300, curvature_every=20, curvature_probes=32, curvature_real_images=5000,
                               # leave-one-out of every image is 101 ConvNet trainings of 300 steps per set, 1.6 h on 2 cores
                               # (57 s each, 2026-12-02; up to 3x that on the slower machines of earlier sessions); one image
                               # per class is 11 of them (10.5 min measured)
                               influence_test_images=2000, influence_images_per_class=1,
                               # a CG iteration is one curvature product per left-out image: 2 dampings x 20 iterations took
                               # 3.1 min on 2 cores (2026-12-03); the defaults, 5 dampings down to 1e-4 (slowest to converge)
                               # x 100 iterations, are up to 12.5x the products
                               influence_cg_iterations=20, influence_dampings=(1e-1, 1.0)),
        # settings are chosen on 5,000 held-out training images, never on the test split
        validation_per_class=500,
    ),
    "paper": Profile(
        "paper", "CIFAR-10 with the paper's settings, for one GPU",
        DataConfig("cifar10"), EvalConfig(seeds=(0, 1, 2, 3, 4)),
        analysis=AnalysisSizes(pools=PoolConfig(subset_fractions=tuple(f / 1000 for f in range(5, 51, 5)), models_per_fraction=52,
                                                early_models=30, chunk=16, snapshot_models=2)),
    ),
}


def get_profile(name: str, data: str | None = None) -> Profile:
    """A named profile, optionally pointed at another data set (e.g. ``imagefolder:PATH``)."""
    if name not in PROFILES:
        raise DdnbError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    return profile if data is None else replace(profile, data=replace(profile.data, name=data))
