"""What the ``paper`` profile's book costs on one GPU, job by job, predicted from measured per-step costs.

    python benchmarks/paper_cost.py                                   # the H200 figures of 2026-12-04
    python benchmarks/paper_cost.py --figures DIR --out FILE.json     # a folder of gpu.sh results from another GPU

Every row is (how many) x (a measured unit cost); the sizes come from the code (``PROFILES["paper"]``, each method's
published settings), the unit costs from the JSON files of one GPU session (``--figures``, default
``benchmarks/results/h200-2026-12-04``, ddnb on an H200 with torch 2.11):

- a distillation step of each method at its published settings (``ddnb-cuda.json``: ``distill_speed.py`` helpers);
- a ConvNet SGD training step in fp32 at batch 100 and 256 (``step-variants-cuda.json``), as a line in the batch
  size, scaled for another network by its FLOPs per image (counted here on the CPU with ``torch.utils.flop_counter``;
  at least the line's fixed part);
  a forward pass alone is taken as a third of a training step;
- a Hessian-vector product of the ConvNet on 500 images (``curvature-speed-cuda.json``, the fastest variant);
- leave-one-out of a 100-image set, 101 networks x 300 steps, batched (``influence-speed-cuda.json``).

It is a prediction: stacked training (1.0-1.4x for the ConvNet), precision and kernel changes are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ddnb.distill import OPTIMISED, preset
from ddnb.nets import build_net
from ddnb.profiles import PROFILES

CIFAR_TRAIN, CIFAR_TEST, CLASSES = 50_000, 10_000, 10
FORWARD_SHARE = 1 / 3  # a forward pass's share of a training step (forward + backward ~ 3 forwards)


def training_flops_per_image(net_name: str) -> float:
    """FLOPs of one training step (forward + backward) per 32x32x3 image."""
    net = build_net(net_name)
    images, labels = torch.randn(2, 3, 32, 32), torch.arange(2)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(net(images), labels).backward()
    return counter.get_total_flops() / 2


class Costs:
    """Unit costs of one GPU session (seconds)."""

    def __init__(self, figures: Path):
        self.device = json.loads((figures / "ddnb-cuda.json").read_text())["device"]
        self.distill_step = {m: v["median_s"] for m, v in json.loads((figures / "ddnb-cuda.json").read_text())["methods"].items()}
        steps = json.loads((figures / "step-variants-cuda.json").read_text())
        ms_100, ms_256 = steps["fp32_batch100"], steps["fp32"]
        self.per_image = (ms_256 - ms_100) / 156 / 1e3
        self.fixed = ms_100 / 1e3 - 100 * self.per_image
        hvp = json.loads((figures / "curvature-speed-cuda.json").read_text())["hvp_per_product"]
        self.hvp_batch = hvp["batch"]
        self.hvp = hvp[hvp["fastest"]]["seconds_per_product"]
        loo = json.loads((figures / "influence-speed-cuda.json").read_text())["nets"]["convnet"]["batched"]
        self.loo_101x300 = loo["extrapolated_101x300_seconds"]
        self.flops = {"convnet": training_flops_per_image("convnet")}

    def train_step(self, images: int, net: str = "convnet") -> float:
        """Seconds of one SGD step on ``images`` images of ``net``: the ConvNet's, scaled by FLOPs, and at least the
        ConvNet's fixed per-step cost (launches dominate a small network)."""
        if net not in self.flops:
            self.flops[net] = training_flops_per_image(net)
        return max((self.fixed + self.per_image * images) * self.flops[net] / self.flops["convnet"], self.fixed)

    def hvps(self, images: int) -> float:
        """Seconds of one Hessian-vector product of the ConvNet's loss on ``images`` images."""
        return self.hvp * math.ceil(images / self.hvp_batch)


def rows(costs: Costs, methods: tuple[str, ...] = tuple(OPTIMISED)) -> list[dict]:
    """(job, count, unit, seconds) of every job of the paper book."""
    profile = PROFILES["paper"]
    sizes, pools, ipc = profile.analysis, profile.analysis.pools, profile.ipc
    set_images, seeds, sets = ipc * CLASSES, len(profile.evaluation.seeds), 1 + len(methods)
    epoch = math.ceil(CIFAR_TRAIN / 256)
    out = []

    def add(job: str, count: float, unit: str, seconds_each: float) -> None:
        out.append({"job": job, "count": count, "unit": unit, "seconds_each": seconds_each, "seconds": count * seconds_each})

    for method in methods:
        settings = preset(method, "paper", ipc)
        add(f"distilled/{method}", settings.steps, "distillation step (published settings)", costs.distill_step[method])
        if method == "mtt":
            experts = settings.options
            add("expert (MTT)", experts.experts * experts.expert_epochs_trained * epoch, "ConvNet step, batch 256", costs.train_step(256))
    add("evaluation (paper300)", sets * seeds * 300, "step, full batch of 100", costs.train_step(set_images))
    for k in sizes.mixing_ks:
        add(f"mixing k={k}", sets * seeds * 300, f"step, full batch of {set_images + k * CLASSES}", costs.train_step(set_images + k * CLASSES))
    for net in sizes.real_nets:
        add(f"model/{net} (real data)", sizes.epochs_of(net) * epoch, f"{net} step, batch 256", costs.train_step(256, net))
    for fraction in pools.subset_fractions:
        images = round(fraction * CIFAR_TRAIN)
        add(f"subset pool {fraction:.3f}", pools.models_per_fraction * pools.subset_epochs * math.ceil(images / 256),
            f"step, batch {min(images, 256)}", costs.train_step(min(images, 256)))
    add("early pool (training)", pools.early_models * epoch, "step, batch 256", costs.train_step(256))
    records = pools.early_models * math.ceil(epoch / pools.record_every)
    add("early pool (test predictions)", records, "forward of the 10,000 test images", FORWARD_SHARE * costs.train_step(256) * CIFAR_TEST / 256)
    points = sizes.curvature_iterations // sizes.curvature_every + 1
    real_images = sizes.curvature_real_images or CIFAR_TRAIN
    add("curvature (each set)", sets * points * sizes.curvature_probes, f"HVP on {set_images} images", costs.hvps(set_images))
    add("curvature (real data)", points * sizes.curvature_probes, f"HVP on {real_images} images", costs.hvps(real_images))
    rows_per_set = (sizes.influence_images_per_class or ipc) * CLASSES
    add("leave-one-out", sets, f"{rows_per_set + 1} trainings x {sizes.influence_steps} steps, batched",
        costs.loo_101x300 * (rows_per_set + 1) / 101 * sizes.influence_steps / 300)
    add("influence functions", sets * rows_per_set * len(sizes.influence_dampings) * sizes.influence_cg_iterations,
        f"CG iteration (HVP on {set_images} images)", costs.hvps(set_images))
    return out


def table(rows_: list[dict], device: str) -> str:
    """Markdown table of the rows, largest first, with the total."""
    total = sum(r["seconds"] for r in rows_)
    lines = [f"| job ({device}) | count | unit | s each | hours | share |", "|---|---|---|---|---|---|"]
    for r in sorted(rows_, key=lambda r: -r["seconds"]):
        lines.append(f"| {r['job']} | {r['count']:,} | {r['unit']} | {r['seconds_each']:.4f} | {r['seconds'] / 3600:.2f} | "
                     f"{r['seconds'] / total:.1%} |")
    lines.append(f"| **total** | | | | **{total / 3600:.1f}** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=Path(__file__).parent / "results" / "h200-2026-12-04")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows and the total as JSON")
    args = parser.parse_args()
    costs = Costs(args.figures)
    result = rows(costs)
    print(table(result, costs.device))
    if args.out:
        args.out.write_text(json.dumps({"device": costs.device, "figures": str(args.figures), "rows": result,
                                        "total_hours": sum(r["seconds"] for r in result) / 3600}, indent=1) + "\n")


if __name__ == "__main__":
    main()
