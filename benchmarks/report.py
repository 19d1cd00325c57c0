"""Rewrite the tables of benchmarks/README.md from results/*.json (so no number is typed by hand).

    python benchmarks/report.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).parent


def _load(name: str) -> dict | None:
    path = HERE / "results" / name
    return json.loads(path.read_text()) if path.exists() else None


def foundation_table() -> str:
    rows = ["| data | check | ours | paper or target | seconds | device |", "|---|---|---|---|---|---|"]
    for name in ("foundation-cifar10.json", "foundation-shapes.json"):
        report = _load(name)
        if report is None:
            continue
        if "random_paper300" in report:
            r = report["random_paper300"]
            accs = ", ".join(f"{a:.3f}" for a in r["accs"])
            rows.append(f"| {report['data']} | {r['ipc']} random real / class, paper300, {len(r['accs'])} seeds "
                        f"| {r['mean']:.3f} ± {r['std']:.3f} ({accs}) | {r['paper']} | {r['seconds']:.0f} | {report['device']} |")
        if "real_one_epoch" in report:
            r = report["real_one_epoch"]
            rows.append(f"| {report['data']} | ConvNet, 1 epoch of `real` ({r['iterations']} iterations) | {r['accuracy']:.3f} "
                        f"| {r['paper']} | {r['seconds']:.0f} ({r['seconds_per_iteration']:.2f}/it) | {report['device']} |")
    return "\n".join(rows)


def speed_table() -> str:
    rows = ["| device | method | s/step | GFLOP/step | GFLOP/s | fraction of training throughput | peak memory (MB; GPU: allocated, CPU: process RSS) |",
            "|---|---|---|---|---|---|---|"]
    for name in ("distill-speed-cpu.json", "distill-speed-cuda.json"):
        report = _load(name)
        if report is None:
            continue
        reference = report["training_step"]
        rows.append(f"| {report['device']} | plain training step (batch 256) | {reference['seconds']:.3f} | "
                    f"{reference['flops'] / 1e9:.1f} | {reference['flops_per_second'] / 1e9:.1f} | 1.00 | |")
        for method, r in report["methods"].items():
            rows.append(f"| {report['device']} | {method} | {r['seconds']:.3f} | {r['flops'] / 1e9:.1f} | "
                        f"{r['flops_per_second'] / 1e9:.1f} | {r['fraction_of_training_throughput']:.2f} | "
                        f"{r['peak_memory_bytes'] / 2**20:.0f} |")
    return "\n".join(rows)


def influence_table() -> str:
    rows = ["| device | net | steps timed | batched s/model-step | one-by-one s/model-step | speed-up | 101 x 300 (batched / one-by-one, extrapolated) | threads |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("influence-speed-cpu.json", "influence-speed-cuda.json"):
        report = _load(name)
        for net, r in (report or {}).get("nets", {}).items():
            batched, sequential = r["batched"], r["sequential"]
            rows.append(f"| {report['device']} | {net} | {r['steps']} | {batched['seconds_per_model_step']:.3f} | "
                        f"{sequential['seconds_per_model_step']:.3f} | {r['speedup']:.2f} | "
                        f"{batched['extrapolated_101x300_seconds'] / 60:.0f} / {sequential['extrapolated_101x300_seconds'] / 60:.0f} min | "
                        f"{report['threads']} |")
    return "\n".join(rows)


def stacked_table() -> str:
    rows = ["| device | net | workload | networks | iterations | one-by-one s/net | stacked s/net | speed-up | max parameter difference |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in ("stacked-speed-cpu.json", "stacked-speed-cuda.json"):
        report = _load(name)
        for r in (report or {}).get("results", []):
            rows.append(f"| {report['device']} | {r['net']} | {r['workload']} | {r['networks']} | {r['iterations']} | "
                        f"{r['sequential_s_per_net']:.2f} | {r['stacked_s_per_net']:.2f} | {r['speedup']:.2f} | {r['max_param_difference']:.1e} |")
    return "\n".join(rows)


def memory_table() -> str:
    rows = ["| method | malloc | s/step | kernel CPU s | minor page faults | peak RSS (GB) | speed-up |", "|---|---|---|---|---|---|---|"]
    report = _load("memory-reuse-cpu.json") or {}
    for method, variants in report.items():
        for variant, r in variants.items():
            if variant == "speed_up":
                continue
            speed_up = f"{variants['speed_up']:.2f}x" if variant == "freed memory kept" else ""
            rows.append(f"| {method} | {variant} | {r['seconds_per_step']:.2f} | {r['system_seconds']:.1f} | "
                        f"{r['minor_page_faults']:,} | {r['peak_resident_bytes'] / 1e9:.2f} | {speed_up} |")
    return "\n".join(rows)


def cifar10_table() -> str:
    rows = ["| method | steps | paper300 accuracy, 3 seeds | gain over random (target) | random in the set's ZCA space "
            "| distillation wall time (budget 60 min each) | s/step at start / median |", "|---|---|---|---|---|---|---|"]
    for path in sorted((HERE / "results").glob("cifar10-cpu-*.json")):
        report = json.loads(path.read_text())
        for r in report["sets"]:
            e, seconds = r["evaluation"], r.get("distill_seconds")
            experts = "" if r.get("experts_seconds") is None else f" + experts {r['experts_seconds'] / 60:.0f} min"
            wall = "" if seconds is None else f"{seconds / 60:.0f} min{experts} ({'within' if r['meets_time_budget'] else 'over'})"
            rates = "" if r.get("seconds_per_step_first_20") is None else f"{r['seconds_per_step_first_20']:.2f} / {r['seconds_per_step_median']:.2f}"
            same = r.get("random_same_space")
            same = "" if same is None else f"{same['mean']:.3f} ± {same['std']:.3f} (gain {e['mean'] - same['mean']:+.3f})"
            rows.append(f"| {r['method']} | {r['steps']} | {e['mean']:.3f} ± {e['std']:.3f} | {r['gain_over_random']:+.3f} "
                        f"(+{r['target_gain']}, {'met' if r['meets_accuracy_target'] else 'not met'}) | {same} | {wall} | {rates} |")
    return "\n".join(rows)


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    tables = (("foundation", foundation_table()), ("speed", speed_table()), ("influence", influence_table()), ("stacked", stacked_table()),
              ("cifar10", cifar10_table()), ("memory", memory_table()))
    for marker, table in tables:
        block = f"<!-- {marker} -->\n{table}\n<!-- /{marker} -->"
        text = re.sub(rf"<!-- {marker} -->.*?<!-- /{marker} -->", lambda _: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
