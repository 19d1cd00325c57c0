"""Section 5 on CIFAR-10 at ``cifar10-cpu``: leave-one-out influence of a set, then colour enrichment with p-values.

    python benchmarks/cifar10_semantics.py runs/dm-ipc10.safetensors --out benchmarks/results/semantics-cifar10-cpu.json

The same library calls as the book's semantics page (``notebooks/semantics.ipynb``), for one set, kept in a
results file because a session's store does not outlive it:

1. the set in the analysis space (plain normalisation), ConvNet ``build_net("convnet", 0)`` as the shared
   initialisation, ``paper300`` with the profile's ``influence_steps``;
2. exact leave-one-out of the profile's ``influence_images_per_class`` images per class on its first
   ``influence_test_images`` test images, balanced over classes (``ddnb.analysis.influence.distilled_influence``);
3. colour attributes of those test images (``ddnb.analysis.semantics.colour_attributes``: HSV thresholds on the
   central 16 x 16 crop) and every (distilled image, colour) pair's enrichment among the image's top-k test
   images of its own class, with hypergeometric p-values and Benjamini-Hochberg q-values;
4. the gradient-dot-product (TracIn-like) estimate's agreement with leave-one-out, and with ``--dampings`` the
   influence function's (conjugate gradient; about 2 s per Hessian-vector product on 2 CPU cores here).

The influence matrix is also written beside ``--out`` (``<stem>-<set>.safetensors`` and its JSON sidecar), so a
later session can redo steps 3-4 without the trainings, and so is a figure of the strongest pairs (``<stem>-<set>.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import date
from pathlib import Path

import torch

import ddnb
from ddnb.analysis import influence, semantics, substitution
from ddnb.distill import Distilled
from ddnb.store import artifact_path, fingerprint
from ddnb.train import get_protocol

from cifar10_common import add_common_arguments, load_set, open_data


def leave_one_out(distilled: Distilled, test_images: torch.Tensor, test_labels: torch.Tensor, rows: torch.Tensor, protocol,
                  net: str, saved: Path) -> influence.InfluenceResult:
    """The LOO result, read from ``saved`` when that holds these rows, steps, set and test images, else computed
    (``distilled_influence``) and written there with the seconds it took (``meta["seconds"]``)."""
    if artifact_path(saved).exists():
        result = influence.InfluenceResult.load(saved)
        same = (result.rows.tolist() == rows.tolist() and result.config["protocol"]["steps"] == protocol.steps
                and result.config["train_sha256"] == fingerprint(distilled.images)
                and result.config["test_sha256"] == fingerprint(test_images))
        if same:
            return result
    start = time.perf_counter()
    result = influence.distilled_influence(distilled, test_images, test_labels, net, seed=0, protocol=protocol, indices=rows,
                                           progress=True)
    result.meta["seconds"] = time.perf_counter() - start
    result.save(saved)
    return result


def strongest_pairs_figure(ranked: list, result: influence.InfluenceResult, distilled: Distilled, test_pixels: torch.Tensor,
                           test_labels: torch.Tensor, attributes: dict, classes: list[str], path: Path, pairs: int = 3) -> None:
    """For the ``pairs`` strongest (image, colour) pairs: the distilled image, then the 9 test images of its class it
    influences most, the ones with the colour framed, as the paper shows them (so a reader can judge the rule)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = ranked[:pairs]
    figure, axes = plt.subplots(len(chosen), 10, figsize=(11, 1.35 * len(chosen)), squeeze=False)
    for line, entry in enumerate(chosen):
        image, label = int(result.rows[entry.image]), int(distilled.labels[result.rows[entry.image]])
        top = semantics.top_influenced(result.matrix[entry.image][None], 9, test_labels == label)[0]
        axes[line, 0].imshow(distilled.pixels()[image].clamp(0, 1).permute(1, 2, 0).cpu())
        axes[line, 0].set_title(f"{classes[label]} {image}", fontsize=7)
        for column, index in enumerate(top.tolist()):
            ax = axes[line, column + 1]
            ax.imshow(test_pixels[index].clamp(0, 1).permute(1, 2, 0))
            if attributes[entry.attribute][index]:
                ax.add_patch(plt.Rectangle((0, 0), 31, 31, fill=False, edgecolor="black", linewidth=2.5))
        axes[line, 1].set_title(f"{entry.attribute} (thick frame): {entry.hits}/{entry.k} in its top {entry.k} vs base rate {entry.base_rate:.2f}, "
                                f"p = {entry.p_value:.1g}, q = {entry.q_value:.2g}", fontsize=7, loc="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.subplots_adjust(wspace=0.05, hspace=0.45)  # not tight_layout: the long row captions would shrink the images
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", help="random, or a .safetensors set made at cifar10-cpu")
    parser.add_argument("--dampings", type=float, nargs="*", default=[], help="influence-function dampings to compare (default none)")
    add_common_arguments(parser)
    args = parser.parse_args()
    profile, _, dataset = open_data(args)
    sizes = profile.analysis
    name, distilled = load_set(args.set, dataset, profile.ipc)
    # in the analysis space (plain normalisation), as the book's semantics page puts it
    distilled = dataclasses.replace(distilled, images=substitution.in_analysis_space(distilled, dataset), transform=dataset.transform)
    test_count = sizes.influence_test_images or len(dataset.test)
    test = dataset.test.head(test_count)  # balanced over classes: the image folder's test split is sorted by class
    test_images, test_labels = test.images, test.labels
    rows = influence.rows_per_class(distilled.labels, sizes.influence_images_per_class)
    rows = torch.arange(len(distilled.labels)) if rows is None else rows
    protocol = get_protocol("paper300", steps=sizes.influence_steps)
    saved = args.out.with_name(f"{args.out.stem}-{name}.safetensors")
    result = leave_one_out(distilled, test_images, test_labels, rows, protocol, profile.evaluation.net, saved)
    seconds = result.meta["seconds"]
    print(f"{name}: leave-one-out of {len(rows)} images on {test_count} test images ({seconds:.0f} s)", flush=True)

    attributes, source = semantics.attributes_of_test(dataset, test_count)
    image_labels = distilled.labels[result.rows]
    k = min(50, test_count // 20)
    ranked = semantics.rank_enrichments(result.matrix, image_labels, test_labels, attributes, k=k)
    own = semantics.colour_attributes(distilled.pixels().cpu())  # does the distilled image itself show the colour?
    pairs = [{"image": int(result.rows[e.image]), "class": dataset.classes[int(image_labels[e.image])], "attribute": e.attribute,
              "hits": e.hits, "k": e.k, "base_rate": e.base_rate, "enrichment": e.enrichment, "p": e.p_value, "q": e.q_value}
             | ({"image_has_it": bool(own[e.attribute][result.rows[e.image]])} if e.attribute in own else {})
             for e in ranked]

    figure = args.out.with_name(f"{args.out.stem}-{name}.png")
    strongest_pairs_figure(ranked, result, distilled, dataset.transform.decode(test_images).cpu(), test_labels, attributes,
                           dataset.classes, figure)

    agreements = {label: a.summary() for label, a in influence.estimate_agreement(
        distilled, result, test_images, test_labels, profile.evaluation.net, 0, protocol, args.dampings,
        sizes.influence_cg_iterations).items()}

    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[name] = {
        "set": args.set, "data": args.data, "profile": profile.name, "net": profile.evaluation.net,
        "protocol": f"paper300, {protocol.steps} steps", "left_out": result.rows.tolist(), "test_images": test_count,
        "loo_seconds": seconds, "threads": torch.get_num_threads(), "date": date.today().isoformat(), "ddnb": ddnb.__version__,
        "attributes": {"source": source, "rule": "see ddnb.analysis.semantics.HUE_RANGES and colour_attributes",
                       "counts": {a: int(mask.sum()) for a, mask in attributes.items()}},
        "top_k": k, "pairs_tested": len(pairs), "pairs_q_below_0.05": sum(p["q"] < 0.05 for p in pairs),
        "strongest": pairs[:10], "figure": figure.name, "agreement_with_loo": agreements,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    best = pairs[0] if pairs else None
    if best:
        print(f"{name}: strongest pair image {best['image']} ({best['class']}) x {best['attribute']}: {best['hits']}/{best['k']} "
              f"vs base rate {best['base_rate']:.2f}, enrichment {best['enrichment']:.2f}, p = {best['p']:.2g}, q = {best['q']:.2g}")


if __name__ == "__main__":
    main()
