"""Speed of one distillation step per method, against a plain training step of the same network.

    python benchmarks/distill_speed.py --device cpu --out benchmarks/results/distill-speed-cpu.json
    python benchmarks/distill_speed.py --device cuda --out benchmarks/results/distill-speed-cuda.json   (< 8 min)
    DDNB_KEEP_FREED_MEMORY=0 python benchmarks/distill_speed.py --device cpu --memory --out benchmarks/results/memory-bounds-cpu.json

For each method at IPC 10 with the default ConvNet (32x32x3, 10 classes) it reports the median seconds
per step, the FLOPs of one step (counted by ``torch.utils.flop_counter``), the achieved FLOP/s, and that
as a fraction of the FLOP/s of a plain training step (batch 256, forward + backward + SGD) measured in
the same process. Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and, on the CPU, the largest
resident set of the whole process during one step (sampled every 5 ms; it includes the data set and
PyTorch itself, about 1 GB here, so compare methods by their differences). Options are reduced on the CPU (fewer loops per step) so that a
step takes seconds; FLOPs and throughput are per step of the options shown.

``--memory`` compares each method's memory bound instead, each variant in a fresh process, one after another: DM and GM with all classes'
real images in one pass against the default 256 images a pass (at the published 256 per class), MTT and BPTT with
and without recomputing the unrolled steps. It reports seconds per step and the step's own peak: on the CPU the
largest resident set during the step less the one before it, which needs glibc to hand freed memory back
(``DDNB_KEEP_FREED_MEMORY=0``, checked).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ddnb.data import DataConfig, load_dataset
from ddnb.distill import OPTIMISED, setup
from ddnb.distill.loop import RealSampler
from ddnb.nets import build_net
from ddnb.store import Store
from ddnb.train import resolve_device

SMALL_EXPERTS = {"experts": 1, "expert_epochs_trained": 2, "expert_snapshot_iterations": 10, "max_start_epoch": 1}
CPU_OPTIONS = {
    "dm": {"real_per_class": 64},
    "gm": {"outer_loop": 2, "inner_loop": 5, "real_per_class": 64},
    "mtt": {"syn_steps": 10, **SMALL_EXPERTS},
    "bptt": {"window": 10, "unroll": 20, "real_batch": 500},
}
GPU_OPTIONS = {"dm": {}, "gm": {}, "mtt": SMALL_EXPERTS, "bptt": {}}  # published settings; experts kept small to stay in time
# --memory: (method, options on top of the device's, [variant options]); the bound's default comes last
CPU_MEMORY = [("dm", {"real_per_class": 256}, [{"classes_per_pass": 10}, {}]),
              ("gm", {"real_per_class": 256, "outer_loop": 1}, [{"classes_per_pass": 10}, {}]),
              ("mtt", {"syn_steps": 20}, [{"recompute": False}, {"recompute": True}]),
              ("bptt", {"window": 20, "unroll": 20}, [{"recompute": False}, {"recompute": True}])]
GPU_MEMORY = [(method, {}, variants) for method, _, variants in CPU_MEMORY]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_cpu_memory(fn) -> int:
    """Largest resident set of this process (bytes) while ``fn`` runs, sampled every 5 ms."""
    process, peak, running = psutil.Process(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        running[0] = False
        sampler.join()
    return peak[0]


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def training_reference(device: torch.device, repeats: int) -> dict:
    """FLOP/s of a plain SGD step of the default ConvNet on a batch of 256."""
    net = build_net("convnet", device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(256, 3, 32, 32, device=device), torch.randint(10, (256,), device=device)

    def step():
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    flops, seconds = _flops(step), statistics.median(_timed(step, device, repeats))
    return {"flops": flops, "seconds": seconds, "flops_per_second": flops / seconds}


def method_step(name: str, options: dict, dataset, device: torch.device, repeats: int, store: Store, count_flops: bool = True) -> dict:
    """Median seconds, FLOPs and peak memory of one step of ``name`` at IPC 10 (``step_memory_bytes``: the step's own,
    above what was allocated before it)."""
    generator = torch.Generator().manual_seed(0)
    method, synthetic, settings = setup(name, dataset, 10, generator, store=store, **options)
    real = RealSampler(dataset)
    method.prepare(synthetic, real, generator)
    step = lambda: method.step(synthetic, real, generator)  # noqa: E731
    step()  # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device.type == "cuda" else psutil.Process().memory_info().rss
    flops = _flops(step) if count_flops else 0
    seconds = statistics.median(_timed(step, device, repeats))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_cpu_memory(step)
    return {"options": settings.__dict__, "seconds": seconds, "flops": flops, "flops_per_second": flops / seconds,
            "peak_memory_bytes": peak, "step_memory_bytes": peak - before}


def _variant(name: str, options: dict, device: str, repeats: int, store_root: str) -> dict:
    """``method_step`` in a fresh process: its resident set starts from nothing else's leftovers."""
    device = torch.device(device)
    dataset = load_dataset(DataConfig("shapes", train_per_class=300, test_size=100), device=device)
    return method_step(name, options, dataset, device, repeats, Store(store_root), count_flops=False)


def memory_bounds(device: torch.device, repeats: int, store: Store) -> dict:
    """Seconds and step memory of each method with and without its memory bound (``--memory``), each variant in a
    process of its own, one after another."""
    if device.type == "cpu" and os.environ.get("DDNB_KEEP_FREED_MEMORY") != "0":
        raise SystemExit("--memory on the CPU needs DDNB_KEEP_FREED_MEMORY=0 (freed memory must leave the resident set)")
    base = CPU_OPTIONS if device.type == "cpu" else GPU_OPTIONS
    report = {}
    for name, options, variants in (CPU_MEMORY if device.type == "cpu" else GPU_MEMORY):
        rows = []
        for variant in variants:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                rows.append(pool.submit(_variant, name, {**base[name], **options, **variant}, str(device), repeats, str(store.root)).result())
        report[name] = {"variants": [{"options": variant, "seconds": row["seconds"], "step_memory_bytes": row["step_memory_bytes"],
                                      "peak_memory_bytes": row["peak_memory_bytes"]} for variant, row in zip(variants, rows)],
                        "time_ratio": rows[-1]["seconds"] / rows[0]["seconds"],
                        "memory_ratio": rows[-1]["step_memory_bytes"] / rows[0]["step_memory_bytes"]}
        print(name, json.dumps(report[name]))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(OPTIMISED))
    parser.add_argument("--memory", action="store_true", help="compare each method's memory bound on and off instead")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    store = Store(tempfile.mkdtemp(prefix="ddnb-bench-"))  # experts for MTT, thrown away afterwards
    if args.memory:  # each variant loads its own data in its own process
        report["memory"] = memory_bounds(device, args.repeats, store)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        return
    dataset = load_dataset(DataConfig("shapes", train_per_class=300, test_size=100), device=device)
    reference = training_reference(device, args.repeats)
    report |= {"training_step": reference, "methods": {}}
    presets = GPU_OPTIONS if device.type == "cuda" else CPU_OPTIONS
    for name in args.methods:
        result = method_step(name, presets.get(name, {}), dataset, device, args.repeats, store)
        result["fraction_of_training_throughput"] = result["flops_per_second"] / reference["flops_per_second"]
        report["methods"][name] = result
        print(name, json.dumps({k: v for k, v in result.items() if k != "options"}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
