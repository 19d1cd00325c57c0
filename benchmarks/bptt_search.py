"""Short BPTT runs on CIFAR-10 (ZCA, IPC 10) at equal CPU time, each scored by ``paper300`` with seed 0.

    python benchmarks/bptt_search.py configs.json --cpu-seconds 960 --data imagefolder:../shared/data/cifar10-jpeg.tar \
        --store /tmp/ddnb-dev --out benchmarks/results/bptt-search-cpu.json

``configs.json`` maps a name to ``BPTTOptions`` overrides. Every run starts from the same real images (seed 0)
and stops after the same process CPU time, so a busy machine changes the number of steps less than wall time
would; the starting images are scored too (``init_accuracy``). A screening tool, one seed: it chose the
``cifar10-cpu`` preset, it does not replace ``cifar10_cpu.py``'s three-seed score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddnb.data import DataConfig, load_dataset
from ddnb.distill import setup
from ddnb.distill.loop import RealSampler
from ddnb.store import Store
from ddnb.train import EvalConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", type=Path)
    parser.add_argument("--cpu-seconds", type=float, default=960.0)
    parser.add_argument("--data", default="imagefolder:../shared/data/cifar10-jpeg.tar")
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dataset = load_dataset(DataConfig(args.data, zca=True), Store(args.store) if args.store else Store())
    test, evaluation = (dataset.test.images, dataset.test.labels), EvalConfig("paper300", "convnet", (0,))
    configs = json.loads(args.configs.read_text())
    result = {"data": args.data, "ipc": 10, "evaluation": "paper300, seed 0, convnet", "cpu_seconds_per_config": args.cpu_seconds,
              "threads": torch.get_num_threads(), "configs": {}}
    for name, options in configs.items():
        generator = torch.Generator().manual_seed(0)
        method, synthetic, _ = setup("bptt", dataset, 10, generator, "real", None, **options)
        if "init_accuracy" not in result:
            result["init_accuracy"] = run(synthetic.images.detach(), synthetic.labels, test, evaluation, dataset.num_classes).mean
        real = RealSampler(dataset)
        method.prepare(synthetic, real, generator)
        cpu_start, wall_start, losses = time.process_time(), time.time(), []
        while time.process_time() - cpu_start < args.cpu_seconds:
            losses.append(method.step(synthetic, real, generator))
        wall = time.time() - wall_start
        accuracy = run(synthetic.images.detach(), synthetic.labels, test, evaluation, dataset.num_classes).mean
        result["configs"][name] = {"options": options, "steps": len(losses), "wall": wall, "s_per_step": wall / len(losses),
                                   "acc": accuracy, "loss_first": sum(losses[:5]) / 5, "loss_last": sum(losses[-5:]) / 5}
        print(name, result["configs"][name], flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
