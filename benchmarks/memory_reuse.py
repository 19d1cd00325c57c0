"""What keeping freed memory in the heap (``ddnb/memory.py``) saves, per distillation step on the CPU.

    python benchmarks/memory_reuse.py --methods gm dm --out benchmarks/results/memory-reuse-cpu.json

For each method (IPC 10, default ConvNet, the CPU options of ``distill_speed.py``) two fresh processes run
the same steps, one with glibc's default malloc (``DDNB_KEEP_FREED_MEMORY=0``) and one as ``import ddnb``
leaves it. Each reports the median seconds per step and, over those steps, the kernel (system) CPU
seconds, the minor page faults and the peak resident set. The processes run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {"default malloc": "0", "freed memory kept": "1"}


def child(method: str, repeats: int) -> dict:
    """One variant, in this process: time ``repeats`` steps after a warm-up step."""
    import torch

    from distill_speed import CPU_OPTIONS, _timed
    from ddnb.data import DataConfig, load_dataset
    from ddnb.distill import setup
    from ddnb.distill.loop import RealSampler
    from ddnb.store import Store

    dataset = load_dataset(DataConfig("shapes", train_per_class=300, test_size=100))
    generator = torch.Generator().manual_seed(0)
    step_method, synthetic, _ = setup(method, dataset, 10, generator, store=Store(tempfile.mkdtemp()), **CPU_OPTIONS[method])
    real = RealSampler(dataset)
    step_method.prepare(synthetic, real, generator)
    step = lambda: step_method.step(synthetic, real, generator)  # noqa: E731
    step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = _timed(step, torch.device("cpu"), repeats)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds_per_step": statistics.median(seconds), "user_seconds": after.ru_utime - before.ru_utime,
            "system_seconds": after.ru_stime - before.ru_stime, "minor_page_faults": after.ru_minflt - before.ru_minflt,
            "peak_resident_bytes": after.ru_maxrss * 1024, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=["gm", "dm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    report = {}
    for method in args.methods:
        report[method] = {}
        for variant, flag in VARIANTS.items():
            output = subprocess.run([sys.executable, __file__, "--child", method, str(args.repeats)], check=True, text=True,
                                    capture_output=True, env=os.environ | {"DDNB_KEEP_FREED_MEMORY": flag}).stdout
            report[method][variant] = json.loads(output.strip().splitlines()[-1])
        default, kept = (report[method][v]["seconds_per_step"] for v in VARIANTS)
        report[method]["speed_up"] = default / kept
        print(method, {v: round(report[method][v]["seconds_per_step"], 2) for v in VARIANTS}, f"{default / kept:.2f}x", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
