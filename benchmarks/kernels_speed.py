"""Training with eager, compiled and CUDA-graph kernels (``ddnb.kernels``): seconds per step of ``ddnb.train.train``.

    python benchmarks/kernels_speed.py --device cpu --out benchmarks/results/kernels-speed-cpu.json     (about 5 min)
    python benchmarks/kernels_speed.py --device cuda --kernels eager compile graphs --out benchmarks/results/kernels-speed-cuda.json

Two workloads of the book, one network each (the CPU's loop backend trains every pool, evaluation and
leave-one-out network this way): ``paper300``, the full-batch training on a 100-image set (its first ``--steps``
updates), and ``real``, batches of 256 real images. For each kernels setting and workload: the first run's
seconds (compiling included), then ``--repeats`` timed runs interleaved with the other settings' (one process, so
the ratios hold on a busy machine), their median seconds per step, and the largest parameter difference from the
eager network after the same updates (float rounding; the same draws). Data: generated ``shapes`` images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import ddnb
from ddnb.data import DataConfig, load_dataset
from ddnb.kernels import KERNELS, kernels
from ddnb.nets import build_net
from ddnb.train import get_protocol, resolve_device, train

WORKLOADS = {"paper300 (100 images, full batch)": ("paper300", 100, None), "real (batch 256)": ("real", 1000, 256)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--net", default="convnet")
    parser.add_argument("--kernels", nargs="+", default=["eager", "compile"], choices=KERNELS)
    parser.add_argument("--steps", type=int, default=5, help="updates per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    dataset = load_dataset(DataConfig("shapes", train_per_class=100, test_size=100), device=device)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "threads": torch.get_num_threads(),
              "ddnb": ddnb.__version__, "torch": torch.__version__, "net": args.net, "steps": args.steps, "workloads": {}}
    for workload, (name, count, batch_size) in WORKLOADS.items():
        images, labels = dataset.train.images[:count], dataset.train.labels[:count]
        protocol = get_protocol(name, steps=args.steps, batch_size=batch_size)

        def run(setting: str) -> tuple[float, dict[str, torch.Tensor]]:
            net = build_net(args.net, 0, device=device)
            with kernels(setting):
                _sync(device)
                start = time.perf_counter()
                train(net, images, labels, protocol, seed=0)
                _sync(device)
            return time.perf_counter() - start, {key: value.detach().cpu() for key, value in net.state_dict().items()}

        first = {setting: run(setting) for setting in args.kernels}
        seconds: dict[str, list[float]] = {setting: [] for setting in args.kernels}
        for _ in range(args.repeats):
            for setting in args.kernels:
                seconds[setting].append(run(setting)[0])
        eager = first[args.kernels[0]][1]
        rows = {}
        for setting in args.kernels:
            per_step = statistics.median(seconds[setting]) / args.steps
            rows[setting] = {"first_run_seconds": first[setting][0], "seconds_per_step": per_step,
                             "speedup": statistics.median(seconds[args.kernels[0]]) / args.steps / per_step,
                             "max_parameter_difference": max((first[setting][1][key] - eager[key]).abs().max().item() for key in eager)}
            print(workload, setting, json.dumps(rows[setting]), flush=True)
        report["workloads"][workload] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
