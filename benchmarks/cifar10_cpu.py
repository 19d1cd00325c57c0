"""Score distilled sets made at the ``cifar10-cpu`` profile against issue 3's targets (IPC 10, default ConvNet).

    /usr/bin/time -v ddnb distill --method dm --profile cifar10-cpu --data imagefolder:../shared/data/cifar10-jpeg.tar \
        --device cpu --out runs/dm-ipc10 2> runs/dm.log
    python benchmarks/cifar10_cpu.py runs/dm-ipc10.safetensors --time-log runs/dm.log \
        --data imagefolder:../shared/data/cifar10-jpeg.tar --out benchmarks/results/cifar10-cpu-dm.json

Each set is trained with ``paper300`` on ``--seeds`` fresh ConvNets and tested on the real test split; the
random baseline (10 random real images per class, the same evaluation) is read from the foundation results;
for a ZCA set, random real images whitened the same way are scored beside it (``random_same_space``).
The distillation's wall time comes from the ``/usr/bin/time -v`` log of the command that made the set, and
the tqdm rate at its start (the first steps, before anything else shared the CPU) from the same log; for
MTT, ``--experts-time-log`` adds the wall time of ``ddnb experts`` (a budget of its own).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
from pathlib import Path

import torch

import ddnb
from ddnb.data import DataConfig, load_dataset
from ddnb.distill import Distilled, distill
from ddnb.store import Store
from ddnb.train import EvalConfig, run

# issue 3: accuracy points over random real images each method must add, and the time budget (minutes)
TARGET_GAIN = {"dm": 0.08, "gm": 0.03, "mtt": 0.10, "bptt": 0.08}
BUDGET_MINUTES = 60
FOUNDATION = Path(__file__).with_name("results") / "foundation-cifar10.json"


def wall_seconds(log: str) -> float | None:
    """The 'Elapsed (wall clock) time' of a ``/usr/bin/time -v`` log, in seconds."""
    match = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", log)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def step_rates(log: str) -> list[float]:
    """Seconds per step reported by the progress bar, in order (``1.76s/it``; ``it/s`` inverted)."""
    rates = []
    for value, unit in re.findall(r"([\d.]+)(s/it|it/s)[,\]]", log):
        rates.append(float(value) if unit == "s/it" else 1 / float(value))
    return rates


def score(path: Path, data: str, seeds: int, store: Store, time_log: Path | None) -> dict:
    distilled = Distilled.load(path)
    zca = bool(distilled.config.get("data", {}).get("zca", False))
    dataset = load_dataset(DataConfig(data, zca=zca), store)
    test, config = (dataset.test.images, dataset.test.labels), EvalConfig("paper300", "convnet", tuple(range(seeds)))
    summary = run(distilled.images, distilled.labels, test, config, dataset.num_classes, progress=True)
    method = distilled.config.get("method")
    entry = {"set": str(path), "method": method, "steps": distilled.config.get("steps") or len(distilled.losses),
             "options": distilled.config.get("options"), "zca": zca, "evaluation": summary.as_dict(),
             "target_gain": TARGET_GAIN.get(method)}
    if zca:  # the target compares with plain random images; random images whitened the same way are scored too
        subset = distill("random", dataset, ipc=len(distilled.labels) // dataset.num_classes, seed=0)
        entry["random_same_space"] = run(subset.images, subset.labels, test, config, dataset.num_classes, progress=True).as_dict()
    return entry | (timing(time_log) if time_log is not None else {})


def timing(time_log: Path) -> dict:
    """Wall time and progress-bar rates of the command that made a set, from its ``/usr/bin/time -v`` log."""
    log = time_log.read_text(errors="replace")
    rates = step_rates(log)
    return {"distill_seconds": wall_seconds(log), "budget_seconds": BUDGET_MINUTES * 60,
            "seconds_per_step_first_20": statistics.median(rates[:20]) if rates else None,
            "seconds_per_step_median": statistics.median(rates) if rates else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", type=Path, help="distilled sets (.safetensors) made at cifar10-cpu")
    parser.add_argument("--time-log", type=Path, nargs="*", default=[], help="the /usr/bin/time -v log of each set, in order")
    parser.add_argument("--experts-time-log", type=Path, default=None,
                        help="the /usr/bin/time -v log of the `ddnb experts` run behind the MTT set (its own 60-minute budget)")
    parser.add_argument("--data", default="imagefolder:../shared/data/cifar10-jpeg.tar")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.time_log and len(args.time_log) != len(args.sets):
        parser.error("give one --time-log per set, or none")
    random = json.loads(FOUNDATION.read_text())["random_paper300"]
    entries = [score(path, args.data, args.seeds, Store(args.store), log)
               for path, log in zip(args.sets, args.time_log or [None] * len(args.sets))]
    experts_seconds = wall_seconds(args.experts_time_log.read_text(errors="replace")) if args.experts_time_log else None
    for entry in entries:
        gain = entry["evaluation"]["mean"] - random["mean"]
        if entry["method"] == "mtt" and experts_seconds is not None:
            entry["experts_seconds"] = experts_seconds
        timed = [entry.get("distill_seconds")] + ([entry["experts_seconds"]] if "experts_seconds" in entry else [])
        entry |= {"gain_over_random": gain,
                  "meets_accuracy_target": entry["target_gain"] is not None and gain >= entry["target_gain"],
                  "meets_time_budget": all(t is not None and t <= BUDGET_MINUTES * 60 for t in timed)}
    result = {"data": args.data, "ipc": 10, "protocol": "paper300", "net": "convnet", "random_baseline": random,
              "sets": entries, "ddnb": ddnb.__version__, "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for entry in entries:
        print(f"{entry['method']}: {entry['evaluation']['mean']:.4f} ± {entry['evaluation']['std']:.4f} "
              f"(random {random['mean']:.4f}, gain {entry['gain_over_random']:+.4f}, target +{entry['target_gain']}), "
              f"distilled in {entry.get('distill_seconds')} s")


if __name__ == "__main__":
    main()
