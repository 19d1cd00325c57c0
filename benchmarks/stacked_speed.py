"""Stacked (torch.func vmap) training of many networks against training them one after another.

    python benchmarks/stacked_speed.py --device cpu --out benchmarks/results/stacked-speed-cpu.json

Two workloads the analyses repeat many times, each timed both ways in the same process on shapes data:
- ``evaluate``: networks trained with ``paper300`` on a 100-image set (multi-seed evaluation, mixing,
  leave-one-out all look like this), reduced to ``--steps`` iterations;
- ``pool``: networks trained with the ``real`` protocol (batch 256) for ``--steps`` iterations (model pools).
For each it reports seconds per network both ways, the ratio, and the largest parameter difference
between the two (they must train the same networks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ddnb.data import DataConfig, load_dataset
from ddnb.nets import build_net
from ddnb.stacked import stack, train_stacked
from ddnb.store import Store
from ddnb.train import get_protocol, resolve_device, train


def _time_both(net_name: str, images, labels, protocol, seeds: list[int], device) -> dict:
    start = time.perf_counter()
    singles = []
    for seed in seeds:
        net = build_net(net_name, seed, device=device)
        train(net, images, labels, protocol, seed)
        singles.append(net)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    stacked = stack([build_net(net_name, seed, device=device) for seed in seeds])
    train_stacked(stacked, images, labels, protocol, seeds, backend="vmap")
    batched = time.perf_counter() - start
    difference = max(float((stacked.params[name][m] - value).detach().abs().max())
                     for m, net in enumerate(singles) for name, value in net.named_parameters())
    return {"networks": len(seeds), "iterations": protocol.steps, "sequential_s_per_net": sequential / len(seeds),
            "stacked_s_per_net": batched / len(seeds), "speedup": sequential / batched, "max_param_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nets", nargs="*", default=["convnet-tiny", "convnet"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(DataConfig("shapes", train_per_class=1000, test_size=100), Store(), device)
    seeds = list(range(args.networks))
    workloads = {"evaluate": (data.train.images[::100], data.train.labels[::100], get_protocol("paper300", steps=args.steps)),
                 "pool": (data.train.images, data.train.labels, get_protocol("real", steps=args.steps))}
    report = {"device": str(device), "threads": torch.get_num_threads(), "results": []}
    for net_name in args.nets:
        for workload, (images, labels, protocol) in workloads.items():
            # untimed warm-up of both ways: the first call pays one-off costs (kernel selection, vmap tracing, allocator)
            _time_both(net_name, images, labels, dataclasses.replace(protocol, steps=2), seeds[:2], device)
            result = {"net": net_name, "workload": workload, **_time_both(net_name, images, labels, protocol, seeds, device)}
            print(json.dumps(result))
            report["results"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
