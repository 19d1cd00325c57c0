"""Short BPTT runs at equal CPU time on a profile's data, each scored by the profile's evaluation.

    python benchmarks/bptt_search.py configs.json --cpu-seconds 960 --data imagefolder:../shared/data/cifar10-jpeg.tar \
        --store /tmp/ddnb-dev --out benchmarks/results/bptt-search-cpu.json
    python benchmarks/bptt_search.py configs.json --profile smoke --cpu-seconds 120 --seeds 2 \
        --out benchmarks/results/bptt-search-smoke.json

``configs.json`` maps a name to ``BPTTOptions`` overrides. Every run starts from the same real images (seed 0)
and stops after the same process CPU time, so a busy machine changes the number of steps less than wall time
would; the starting images are scored too (``init_accuracy``), and on a profile other than ``cifar10-cpu`` (the
default, whose random baseline is in the foundation results) a random real subset as well. ZCA, the IPC and the
evaluation's network and protocol are the profile's (``--seeds`` of its seeds). A screening tool: it chose the
``cifar10-cpu`` preset with one seed; it does not replace ``cifar10_cpu.py``'s three-seed score.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ddnb.data import load_dataset
from ddnb.distill import distill, preset, setup
from ddnb.distill.loop import RealSampler
from ddnb.profiles import get_profile
from ddnb.store import Store
from ddnb.train import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", type=Path)
    parser.add_argument("--cpu-seconds", type=float, default=960.0)
    parser.add_argument("--profile", default="cifar10-cpu", help="data, ZCA, IPC and evaluation come from this profile")
    parser.add_argument("--data", default=None, help="the profile's data set unless given (cifar10-cpu: the CIFAR-10 copy)")
    parser.add_argument("--seeds", type=int, default=1, help="evaluation seeds (the first of the profile's)")
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = args.data or ("imagefolder:../shared/data/cifar10-jpeg.tar" if args.profile == "cifar10-cpu" else None)
    profile = get_profile(args.profile, data)
    dataset = load_dataset(replace(profile.data, zca=preset("bptt", args.profile).zca), Store(args.store))
    evaluation = replace(profile.evaluation, seeds=tuple(range(args.seeds)))
    test, ipc = (dataset.test.images, dataset.test.labels), profile.ipc

    def score(images: torch.Tensor, labels: torch.Tensor) -> float:
        return run(images.detach(), labels, test, evaluation, dataset.num_classes).mean

    configs = json.loads(args.configs.read_text())
    result = {"profile": args.profile, "data": profile.data.name, "ipc": ipc, "configs": {},
              "evaluation": f"{evaluation.protocol}, {evaluation.net}, seeds {list(evaluation.seeds)}",
              "cpu_seconds_per_config": args.cpu_seconds, "threads": torch.get_num_threads()}
    if args.profile != "cifar10-cpu":
        subset = distill("random", dataset, ipc=ipc, seed=0)
        result["random_accuracy"] = score(subset.images, subset.labels)
    for name, options in configs.items():
        generator = torch.Generator().manual_seed(0)
        method, synthetic, _ = setup("bptt", dataset, ipc, generator, "real", None, **options)
        if "init_accuracy" not in result:
            result["init_accuracy"] = score(synthetic.images, synthetic.labels)
        real = RealSampler(dataset)
        method.prepare(synthetic, real, generator)
        cpu_start, wall_start, losses = time.process_time(), time.time(), []
        while time.process_time() - cpu_start < args.cpu_seconds:
            losses.append(method.step(synthetic, real, generator))
        wall = time.time() - wall_start
        accuracy = score(synthetic.images, synthetic.labels)
        result["configs"][name] = {"options": options, "steps": len(losses), "wall": wall, "s_per_step": wall / len(losses),
                                   "acc": accuracy, "loss_first": sum(losses[:5]) / 5, "loss_last": sum(losses[-5:]) / 5}
        print(name, result["configs"][name], flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
