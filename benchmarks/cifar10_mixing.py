"""Section 3's mixing curve on CIFAR-10 at ``cifar10-cpu``, one k at a time, kept in a results file.

    python benchmarks/cifar10_mixing.py random --out benchmarks/results/mixing-cifar10-cpu.json
    python benchmarks/cifar10_mixing.py runs/dm-ipc10.safetensors --out benchmarks/results/mixing-cifar10-cpu.json

A set is ``random`` (the profile's IPC of random real images per class, seed 0: the foundation's baseline) or a set written by
``ddnb distill`` / ``ddnb import``. It is put into the analysis space (plain normalisation, as the paper's
analyses use), then for each k of the profile (or ``--ks``) k random real images per class are added and the
profile's evaluation trains one network per seed (``ddnb.analysis.substitution.mixing``: ``paper300``, ConvNet,
seeds 0-2). Each finished k is written to ``--out`` at once and a rerun skips the k already there, so a session
that ends mid-curve keeps its points and the next one adds the rest (a store in /tmp does not outlive a session).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date

import torch

import ddnb
from ddnb import paper
from ddnb.analysis import substitution
from ddnb.store import fingerprint

from cifar10_common import add_common_arguments, load_set, open_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", help="random, or a .safetensors set made at cifar10-cpu")
    parser.add_argument("--ks", type=int, nargs="*", default=None, help="real images per class to add (default: the profile's)")
    add_common_arguments(parser)
    args = parser.parse_args()
    profile, store, dataset = open_data(args)
    name, distilled = load_set(args.set, dataset, profile.ipc)
    images, labels = substitution.in_analysis_space(distilled, dataset), distilled.labels
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    entry = results.setdefault(name, {"set": args.set, "images": fingerprint(images), "data": args.data,
                                      "evaluation": f"{profile.evaluation.protocol}, {profile.evaluation.net}, "
                                                    f"seeds {list(profile.evaluation.seeds)}", "points": {}})
    if entry["images"] != fingerprint(images):
        parser.error(f"{args.out} holds other images under {name!r}; use another --out")
    reference = dict(zip(paper.MIXING_KS, paper.MIXING.get(name, ())))
    for k in args.ks if args.ks is not None else profile.analysis.mixing_ks:
        if str(k) in entry["points"]:
            continue
        start = time.perf_counter()
        result = substitution.mixing(images, labels, dataset, (k,), profile.evaluation, store)
        accuracies = result.accuracies[0]
        entry["points"][str(k)] = {"accs": accuracies.tolist(), "mean": float(result.mean[0]), "std": float(result.std[0]),
                                   "paper": reference.get(k), "seconds": time.perf_counter() - start,
                                   "threads": torch.get_num_threads(), "date": date.today().isoformat(),
                                   "ddnb": ddnb.__version__}
        entry["points"] = dict(sorted(entry["points"].items(), key=lambda item: int(item[0])))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name} k={k}: {result.mean[0]:.4f} ± {result.std[0]:.4f} in {time.perf_counter() - start:.0f} s", flush=True)
    means = [point["mean"] for point in entry["points"].values()]
    print(f"{name}: k {list(entry['points'])} -> {[round(m, 3) for m in means]}; "
          f"rises with k: {all(b > a for a, b in zip(means, means[1:]))}")


if __name__ == "__main__":
    main()
