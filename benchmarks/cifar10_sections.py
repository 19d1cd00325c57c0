"""Sections 3 and 4 on CIFAR-10 at ``cifar10-cpu``, one analysis at a time, kept in a results file.

    python benchmarks/cifar10_sections.py --sets random benchmarks/sets/dm-ipc10.safetensors \
        --analyses pixels real-nets features --out benchmarks/results/sections-cifar10-cpu.json

The library calls of the book's substitution and dynamics pages (``notebooks/``), for the sets named (``random``:
the profile's IPC of random real images per class, seed 0; or set files from ``ddnb distill`` / ``ddnb import``),
each analysis written to ``--out`` as soon as it is done and skipped by a rerun, because a session's store does
not outlive it. Mixing has its own script (``cifar10_mixing.py``), leave-one-out too (``cifar10_semantics.py``).

- ``pixels``: un-normalised pixel statistics of each set beside 1,000 real test images (fraction outside [0, 1]).
  Every "first N" of a split is ``Split.head(N)``, balanced over classes (the image folder is sorted by class).
- ``real-nets``: the profile's real-trained networks (``real`` protocol, ``real_epochs``) scoring each set.
- ``features``: penultimate features of the last real-trained network, 2,000 test images plus the sets, mapped to
  2-D (UMAP or PCA); the figure is written beside ``--out``.
- ``pools``: the subset and early-training model pools (accuracies).
- ``agreement``: each set's distilled-trained networks against accuracy-matched subset and early networks.
- ``recognition``: accuracy of the early networks on each set along real training.
- ``curvature``: Hessian trace along real training on the real subsample and each set (common probes).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import torch

import ddnb
from ddnb import viz
from ddnb.analysis import curvature, dynamics, substitution
from ddnb.distill import Distilled
from ddnb.nets import build_net
from ddnb.store import Store
from ddnb.train import get_protocol

from cifar10_common import add_common_arguments, load_set, open_data

ANALYSES = ("pixels", "real-nets", "features", "pools", "agreement", "recognition", "curvature")


class Sections:
    """The analyses of one run: the profile, data, sets and the models they share (made once, through the store)."""

    def __init__(self, profile, dataset, sets: dict[str, Distilled], store: Store, figure_stem: Path) -> None:
        self.profile, self.sizes, self.dataset, self.sets, self.store = profile, profile.analysis, dataset, sets, store
        self.inputs = {name: substitution.in_analysis_space(s, dataset) for name, s in sets.items()}
        self.figure_stem = figure_stem
        self._models, self._pools = None, None

    def models(self) -> dict[str, torch.nn.Module]:
        if self._models is None:
            protocol = get_protocol("real", epochs=self.sizes.real_epochs)
            self._models = {net: substitution.real_trained_model(self.dataset, net, protocol, 0, self.store, progress=True) for net in self.sizes.real_nets}
        return self._models

    def pools(self) -> tuple[dynamics.SubsetPool, dynamics.EarlyPool]:
        if self._pools is None:
            self._pools = (dynamics.subset_pool(self.dataset, self.sizes.pools, self.store),
                           dynamics.early_pool(self.dataset, self.sizes.pools, self.store))
        return self._pools

    def pixels(self) -> dict:
        real = self.dataset.transform.decode(self.dataset.test.head(1000).images)
        sets = {"real test": real, **{name: s.pixels() for name, s in self.sets.items()}}
        histograms = substitution.pixel_histograms(sets)
        return {name: {"outside_0_1": h.below + h.above, "below_0": h.below, "above_1": h.above, "mean": float(sets[name].mean()),
                       "std": float(sets[name].std()), "min": float(sets[name].min()), "max": float(sets[name].max())}
                for name, h in histograms.items()}

    def real_nets(self) -> dict:
        models = self.models()
        scores = substitution.recognition_by_real_models(models, {name: (self.inputs[name], s.labels) for name, s in self.sets.items()})
        tested = substitution.recognition_by_real_models(models, {"real test": (self.dataset.test.images, self.dataset.test.labels)})
        return {net: scores[net] | tested[net] for net in models}

    def features(self) -> dict:
        import matplotlib
        matplotlib.use("Agg")
        net = self.sizes.real_nets[-1]
        test = self.dataset.test.head(2000)
        mapped = substitution.feature_map(self.models()[net], {"test": test.images, **self.inputs})
        figure = viz.feature_scatter(mapped.points, test.labels, {n: s.labels for n, s in self.sets.items()},
                                     title=f"{self.dataset.name}: penultimate features of {net} ({mapped.method})")
        path = self.figure_stem.with_name(f"{self.figure_stem.name}-features.png")
        figure.savefig(path, dpi=90, bbox_inches="tight")
        return {"net": net, "method": mapped.method, "figure": path.name}

    def pools_summary(self) -> dict:
        subsets, early = self.pools()
        return {"subset": {f"{float(f):.3f}": float(a) for f, a in zip(subsets.fractions, subsets.accuracies)},
                "early": {"iterations": early.iterations.tolist(), "mean_accuracy": early.accuracies.mean(0).tolist()}}

    def agreement(self) -> dict:
        subsets, early = self.pools()
        evaluations = substitution.evaluate_sets(self.sets, self.dataset, self.profile.evaluation, self.store)
        out = {}
        for name, result in evaluations.items():
            matched = dynamics.matched_agreement(result.predictions, self.dataset.test.labels.cpu(), subsets, early)
            out[name] = {"distilled_accuracy": float(matched.distilled_accuracy.mean()), "subset": float(matched.subset.mean()),
                         "subset_gap": matched.subset_gap, "early": float(matched.early.mean()),
                         "early_iterations": sorted(set(matched.early_iterations.tolist()))}
        return out

    def recognition(self) -> dict:
        _, early = self.pools()
        curves = {name: dynamics.recognition(early, self.sizes.pools.net, self.inputs[name], s.labels).mean(0).tolist()
                  for name, s in self.sets.items()}
        return {"iterations": early.iterations.tolist(), "real test": early.accuracies.mean(0).tolist()} | curves

    def curvature(self) -> dict:
        sizes, dataset = self.sizes, self.dataset
        real_count = sizes.curvature_real_images or len(dataset.train)
        real = dataset.train.head(real_count)
        sets = {"real": (real.images, real.labels),
                **{name: (self.inputs[name], s.labels) for name, s in self.sets.items()}}
        net = build_net(sizes.pools.net, 0, dataset.image_shape[0], dataset.image_shape[-1], dataset.num_classes)
        traces = curvature.training_trace_curve(net, dataset.train.images, dataset.train.labels, sets,
                                                list(range(0, sizes.curvature_iterations + 1, sizes.curvature_every)),
                                                probes=sizes.curvature_probes, sampled={"real": 128} if real_count > 1000 else None,
                                                progress=True)
        return {name: {"iterations": c.iterations.tolist(), "trace": c.traces.tolist(), "stderr": c.stderrs.tolist()}
                for name, c in traces.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["random"], help="random, or .safetensors sets made at the profile")
    parser.add_argument("--analyses", nargs="+", default=list(ANALYSES), choices=ANALYSES)
    add_common_arguments(parser)
    args = parser.parse_args()
    profile, store, dataset = open_data(args)
    sets = dict(load_set(source, dataset, profile.ipc) for source in args.sets)
    sections = Sections(profile, dataset, sets, store, args.out.with_suffix(""))
    run = {"pixels": sections.pixels, "real-nets": sections.real_nets, "features": sections.features, "pools": sections.pools_summary,
           "agreement": sections.agreement, "recognition": sections.recognition, "curvature": sections.curvature}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for analysis in args.analyses:
        key = f"{analysis}: {' + '.join(sections.sets)}"
        if key in results:
            print(f"{key}: already in {args.out}")
            continue
        start = time.perf_counter()
        result = run[analysis]()
        results[key] = {"result": result, "sets": args.sets, "profile": profile.name, "data": args.data,
                        "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
                        "date": date.today().isoformat(), "ddnb": ddnb.__version__}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{key} in {time.perf_counter() - start:.0f} s: {json.dumps(result)[:400]}", flush=True)


if __name__ == "__main__":
    main()
