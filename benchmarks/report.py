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


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    for marker, table in (("foundation", foundation_table()), ("speed", speed_table())):
        block = f"<!-- {marker} -->\n{table}\n<!-- /{marker} -->"
        text = re.sub(rf"<!-- {marker} -->.*?<!-- /{marker} -->", lambda _: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
