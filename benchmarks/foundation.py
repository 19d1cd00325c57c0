"""Foundation checks on a real data set, with timings: the random baseline and one epoch of real training.

    python benchmarks/foundation.py --data imagefolder:../shared/data/cifar10-jpeg.tar --out benchmarks/results/foundation-cifar10.json

Reports (1) ``ipc`` random real images per class trained with ``paper300`` over ``seeds`` networks
(the paper's random baseline is 0.273), and (2) the test accuracy of the default ConvNet after one epoch
of the ``real`` protocol (batch 256, SGD 0.01, momentum 0.9), with seconds per iteration.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import ddnb
from ddnb.data import DataConfig, load_dataset
from ddnb.distill import distill
from ddnb.nets import build_net
from ddnb.train import PROTOCOLS, EvalConfig, evaluate, resolve_device, run, train


def random_baseline(dataset, ipc: int, seeds: int) -> dict:
    subset = distill("random", dataset, ipc=ipc, seed=0)
    start = time.perf_counter()
    summary = run(subset.images, subset.labels, (dataset.test.images, dataset.test.labels),
                  EvalConfig("paper300", "convnet", tuple(range(seeds))), dataset.num_classes, progress=True)
    return summary.as_dict() | {"ipc": ipc, "seconds": time.perf_counter() - start, "paper": 0.273}


def one_real_epoch(dataset, seed: int = 0) -> dict:
    reference = "design target 0.60-0.95" if dataset.name == "shapes" else "about 0.6 (paper, original CIFAR-10)"
    net = build_net("convnet", seed, device=dataset.train.images.device)
    start = time.perf_counter()
    result = train(net, dataset.train.images, dataset.train.labels, PROTOCOLS["real"], seed, progress=True)
    seconds = time.perf_counter() - start
    accuracy = evaluate(net, dataset.test.images, dataset.test.labels).accuracy
    return {"accuracy": accuracy, "iterations": len(result.losses), "seconds": seconds,
            "seconds_per_iteration": seconds / len(result.losses), "paper": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parts", default="random,real", help="comma-separated: random (baseline), real (one epoch)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    start = time.perf_counter()
    dataset = load_dataset(DataConfig(args.data), device=device)
    report = {"data": args.data, "device": str(device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "ddnb": ddnb.__version__, "torch": torch.__version__,
              "load_seconds": time.perf_counter() - start}
    parts = args.parts.split(",")
    if "random" in parts:
        report["random_paper300"] = random_baseline(dataset, args.ipc, args.seeds)
        print(json.dumps(report["random_paper300"]))
    if "real" in parts:
        report["real_one_epoch"] = one_real_epoch(dataset)
        print(json.dumps(report["real_one_epoch"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
