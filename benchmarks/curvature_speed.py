"""Speed of the Hessian trace at equal accuracy: graph reuse and doubly stochastic sampling against the paper's way.

    python benchmarks/curvature_speed.py --device cpu --threads 2 --real-probes 16 --out benchmarks/results/curvature-speed-cpu.json
    python benchmarks/curvature_speed.py --device cuda --out benchmarks/results/curvature-speed-cuda.json \
        --batch-size 500 --hvp-batch 500 --hvp-vectors 16 --sample-size 128   # 24 s on an H200
    # a quick check that it runs (about 5 minutes on one busy core):
    python benchmarks/curvature_speed.py --device cpu --threads 1 --distilled-probes 8 --paper-max-probes 10 \
        --reference-probes 8 --hvp-batch 32 --hvp-vectors 2 --real-size 500 --real-probes 3 --sampled-probes 32 \
        --out /tmp/curvature-speed-check.json

The default ConvNet (320,010 parameters) at initialisation (seed 0) on shapes (32x32x3, 10 classes), all parts
in one process, side by side:

1. Seconds per Hessian-vector product on one batch, four ways: graph reuse (one ``autograd.grad`` per
   vector on a retained double-backward graph), one vmapped ``autograd.grad`` over all the vectors on that graph
   (``autograd_is_grads_batched``), ``torch.func`` vmap over ``vjp`` of ``grad``, and ``torch.func`` vmap over
   ``jvp`` of ``grad`` (forward-over-reverse). On CUDA (torch 2.11) plain ``is_grads_batched`` fails inside
   GroupNorm's double backward (a legacy-vmap batching rule of ``mul``; benchmarks/README.md), so the vmapped
   ``autograd.grad`` is tried in the variants of ``AUTOGRAD_VARIANTS`` and reported as the first that runs (its
   ``variant`` says which); every variant's outcome is kept, and when the plain one fails, a diagnosis over
   small layer stacks (``diagnose_batched_double_backward``). The create-graph gradient g and the per-product cost h of graph reuse give the
   predicted speed-up of graph reuse at k probes over many batches, k (g + h) / (g + k h).
2. A "distilled-like" set of 100 images (10 random real images per class, the size of an IPC-10 distilled
   set): ours (``hutchinson_trace``) against the naive way (``naive_hutchinson_trace``: PyHessian, the
   authors' code, every batch recomputed for every probe) with the same Rademacher probes, so per-probe
   values, estimates and standard errors agree to rounding: equal accuracy. Then the paper's stopping rule
   (running mean moves by < ``--tol`` relative, at most ``--paper-max-probes`` probes), ours with as many
   probes, and the rule's error against ours with ``--reference-probes`` other probes.
3. A real subsample of ``--real-size`` images: time to reach a standard error of ``--target`` x the trace
   with (a) naive full-data Hutchinson, (b) ours on the full data (graph reuse), (c) the doubly stochastic
   ``sampled_hutchinson_trace`` (``--probes-per-batch`` probes on each random batch of ``--sample-size``
   images). (a) and (b) are extrapolated from one naive probe (seconds g + h per probe) and ``--real-probes``
   probes of ours (g + k h): probes needed = (per-probe std / target)^2. (c) runs ``--sampled-probes``
   probes; its time to target is extrapolated the same way from its own batch-group std (measured directly
   if its standard error is already below target). The per-probe std of full-data Hutchinson comes from
   few probes, so it is also estimated as 2 (||H||_F^2 - sum_i H_ii^2) from the same products (lower
   noise), and the speed-ups carry a 95% interval from the F distribution of the two sample variances.
   The paper's stopping rule is applied to the full-data and the sampled sequences for context.

The JSON is written after each part, so a run stopped from outside keeps what it measured. Seconds are
wall-clock on whatever else the machine runs; on a shared machine rerun before trusting ratios.
The CPU run above took 6.8 minutes on two free cores (2026-12-02; the paper's rule on the distilled-like set
stops after a random number of probes, so the total varies a little).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import time
import traceback
from pathlib import Path

import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ddnb.analysis.curvature import (
    TraceEstimate,
    hessian_vector_products,
    hutchinson_trace,
    naive_hutchinson_trace,
    parameter_count,
    rademacher_probes,
    sampled_hutchinson_trace,
    trainable_parameters,
)
from ddnb.data import DataConfig, load_dataset, sample_per_class
from ddnb.nets import build_net
from ddnb.store import Store
from ddnb.train import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device):
    """(seconds, result) of one call."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _split(matrix: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[k, P] -> name -> [k, *shape] (views)."""
    pieces = matrix.split([p.numel() for p in params.values()], dim=1)
    return {name: piece.reshape(len(matrix), *p.shape) for (name, p), piece in zip(params.items(), pieces)}


def _cat(named: dict[str, torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    values = named.values() if isinstance(named, dict) else named
    return torch.cat([t.flatten(1) for t in values], dim=1)


AUTOGRAD_VARIANTS = ("is_grads_batched", "is_grads_batched_contiguous", "func_vmap_of_autograd_grad", "is_grads_batched_cudnn_off")


def hvp_autograd_batched(net, images, labels, matrix: torch.Tensor, variant: str = "is_grads_batched") -> torch.Tensor:
    """H @ V^T on one batch with a single vmapped double-backward of a retained create-graph gradient: [k, P].

    ``variant``: ``is_grads_batched`` (``torch.autograd.grad(..., is_grads_batched=True)``, the vectors as views of
    ``matrix``, as ``ddnb.analysis.curvature`` passes them), ``is_grads_batched_contiguous`` (the same with each
    vector piece made contiguous), ``func_vmap_of_autograd_grad`` (``torch.func.vmap`` over ``autograd.grad``:
    the same double-backward through torch.func's batching rules instead of ``is_grads_batched``'s legacy
    ``torch._vmap_internals``), or ``is_grads_batched_cudnn_off`` (the first, with cuDNN disabled for both passes).
    """
    if variant not in AUTOGRAD_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    flags = torch.backends.cudnn.flags(enabled=False) if variant.endswith("cudnn_off") else contextlib.nullcontext()
    with flags:
        params = trainable_parameters(net)
        grads = torch.autograd.grad(F.cross_entropy(net(images), labels), list(params.values()), create_graph=True)
        pieces = list(_split(matrix, params).values())
        if variant == "is_grads_batched_contiguous":
            pieces = [piece.contiguous() for piece in pieces]
        if variant == "func_vmap_of_autograd_grad":
            return _cat(vmap(lambda *v: torch.autograd.grad(grads, list(params.values()), grad_outputs=v, retain_graph=True))(*pieces))
        return _cat(torch.autograd.grad(grads, list(params.values()), grad_outputs=pieces, is_grads_batched=True))


def _loss_of(net, images, labels):
    return lambda params: F.cross_entropy(functional_call(net, params, (images,)), labels)


def hvp_func_vjp(net, images, labels, matrix: torch.Tensor) -> torch.Tensor:
    """torch.func: vmap over the pullback (vjp) of grad, the reverse-over-reverse HVP: [k, P]."""
    params = {name: p.detach() for name, p in trainable_parameters(net).items()}
    _, pullback = vjp(grad(_loss_of(net, images, labels)), params)
    return _cat(vmap(pullback)(_split(matrix, params))[0])


def hvp_func_jvp(net, images, labels, matrix: torch.Tensor) -> torch.Tensor:
    """torch.func: vmap over jvp of grad, the forward-over-reverse HVP: [k, P]."""
    params = {name: p.detach() for name, p in trainable_parameters(net).items()}
    gradient = grad(_loss_of(net, images, labels))
    return _cat(vmap(lambda tangent: jvp(gradient, (params,), (tangent,))[1])(_split(matrix, params)))


def _failure(error: Exception) -> dict:
    """An exception as JSON: its type and message, and the end of its traceback (C++ frames too when
    TORCH_SHOW_CPP_STACKTRACES=1 is set)."""
    return {"error": f"{type(error).__name__}: {error}"[:1500], "traceback": traceback.format_exc()[-4000:]}


def _timed_method(method, net, images, labels, matrix, reference, device) -> dict:
    """Seconds per product of one HVP method after a one-vector warm-up, and its deviation from graph reuse."""
    try:
        method(net, images, labels, matrix[:1])  # warm-up
        seconds, products = _timed(lambda: method(net, images, labels, matrix), device)
    except Exception as error:  # noqa: BLE001 - a method that fails on this device is a finding, not a crash
        return _failure(error)
    deviation = float((products - reference).abs().max() / reference.abs().max())
    return {"seconds_per_product": seconds / len(matrix), "max_relative_deviation": deviation}


def diagnose_batched_double_backward(device: torch.device, batch: int, vectors: int = 2) -> dict:
    """Which layer of the ConvNet breaks ``is_grads_batched``: the double-backward of small stacks, at two batch sizes.

    Each case is a prefix of the ConvNet's first block (3 -> 128 channels, 32 x 32) then Flatten and a linear head,
    on random data; "ok" or the error. Runs only when the full network's batched double-backward failed.
    """
    width = 128
    stacks = {
        "conv": lambda: [nn.Conv2d(3, width, 3, padding=1)],
        "conv+groupnorm": lambda: [nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(width, width)],
        "conv+relu+avgpool": lambda: [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)],
        "groupnorm_only": lambda: [nn.GroupNorm(3, 3)],
        "conv+relu+conv": lambda: [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)],
        "conv+groupnorm+relu+avgpool+conv": lambda: [nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(),
                                                     nn.AvgPool2d(2), nn.Conv2d(width, width, 3, padding=1)],
    }
    report = {}
    for n in sorted({min(batch, 100), batch}):
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(n, 3, 32, 32, generator=generator).to(device)
        labels = torch.randint(10, (n,), generator=generator).to(device)
        for name, layers in stacks.items():
            torch.manual_seed(0)
            body = nn.Sequential(*layers(), nn.Flatten()).to(device)
            features = body(images[:1]).shape[1]
            net = nn.Sequential(body, nn.Linear(features, 10)).to(device).eval()
            matrix = rademacher_probes(vectors, parameter_count(net), seed=1, device=device)
            for variant in ("is_grads_batched", "func_vmap_of_autograd_grad"):
                try:
                    hvp_autograd_batched(net, images, labels, matrix, variant)
                    outcome = "ok"
                except Exception as error:  # noqa: BLE001
                    outcome = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                report[f"batch {n}: {name}: {variant}"] = outcome
            _sync(device)
    return report


def hvp_methods(net, images, labels, vectors: int, device: torch.device) -> dict:
    """Seconds per product of each HVP method on one batch, and its largest deviation from graph reuse.

    ``autograd_is_grads_batched`` is reported under the first of ``AUTOGRAD_VARIANTS`` that runs on this device
    (its ``variant`` says which); every variant's outcome is kept under ``autograd_variants``.
    """
    matrix = rademacher_probes(vectors, parameter_count(net), seed=1, device=device)
    reuse = lambda: hessian_vector_products(net, images, labels, matrix, batch_size=len(images))  # noqa: E731
    reuse()  # warm-up
    params = list(trainable_parameters(net).values())
    graph = lambda: torch.autograd.grad(F.cross_entropy(net(images), labels), params, create_graph=True)  # noqa: E731
    graph_seconds, _ = _timed(graph, device)
    seconds, reference = _timed(reuse, device)
    report = {"batch": len(images), "vectors": vectors, "create_graph_gradient_seconds": graph_seconds,
              "graph_reuse": {"seconds_per_product": seconds / vectors,
                              "seconds_per_product_without_graph": (seconds - graph_seconds) / vectors}}
    variants = {variant: _timed_method(functools.partial(hvp_autograd_batched, variant=variant), net, images, labels,
                                       matrix, reference, device) for variant in AUTOGRAD_VARIANTS}
    working = [variant for variant, outcome in variants.items() if "error" not in outcome]
    report["autograd_is_grads_batched"] = {**variants[working[0]], "variant": working[0]} if working else \
        {"error": variants["is_grads_batched"]["error"], "variant": None}
    report["autograd_variants"] = variants
    if "error" in variants["is_grads_batched"]:
        report["is_grads_batched_diagnosis"] = diagnose_batched_double_backward(device, len(images))
    for name, method in [("func_vmap_vjp_of_grad", hvp_func_vjp), ("func_vmap_jvp_of_grad", hvp_func_jvp)]:
        report[name] = _timed_method(method, net, images, labels, matrix, reference, device)
    methods = {k: v["seconds_per_product"] for k, v in report.items()
               if isinstance(v, dict) and "seconds_per_product" in v and k != "autograd_variants"}
    report["fastest"] = min(methods, key=methods.get)
    return report


def trace_speed(net, images, labels, probes: int, batch_size: int, device: torch.device) -> dict:
    """Ours vs naive with the same ``probes`` Rademacher probes on one set."""
    ours_seconds, ours = _timed(lambda: hutchinson_trace(net, images, labels, probes, seed=0, batch_size=batch_size), device)
    naive_seconds, naive = _timed(
        lambda: naive_hutchinson_trace(net, images, labels, max_probes=probes, tol=0.0, seed=0, batch_size=batch_size), device)
    return {"images": len(images), "probes": probes, "batch_size": batch_size,
            "ours": {"seconds": ours_seconds, "estimate": ours.estimate, "stderr": ours.stderr},
            "naive": {"seconds": naive_seconds, "estimate": naive.estimate, "stderr": naive.stderr},
            "max_abs_difference_per_probe": float((ours.values - naive.values).abs().max()),
            "speedup": naive_seconds / ours_seconds}


def _error(estimate: float, reference: dict) -> dict:
    """An estimate's error against a reference {"estimate", "stderr"}: absolute, relative, in reference stderrs."""
    error = estimate - reference["estimate"]
    return {"error": error, "relative_error": error / abs(reference["estimate"]),
            "error_in_reference_stderrs": error / reference["stderr"] if reference["stderr"] > 0 else None}  # NaN: unknown


def paper_rule(net, images, labels, max_probes: int, tol: float, batch_size: int, device: torch.device,
               reference: dict) -> dict:
    """The authors' stopping rule (tolerance ``tol``), ours with as many probes, and its error vs ``reference``."""
    naive_seconds, naive = _timed(
        lambda: naive_hutchinson_trace(net, images, labels, max_probes=max_probes, tol=tol, seed=0, batch_size=batch_size), device)
    probes = len(naive.values)
    ours_seconds, ours = _timed(lambda: hutchinson_trace(net, images, labels, probes, seed=0, batch_size=batch_size), device)
    return {"images": len(images), "tol": tol, "max_probes": max_probes, "probes_used": probes,
            "stopped_by_tolerance": probes < max_probes,
            "naive": {"seconds": naive_seconds, "estimate": naive.estimate, "stderr": naive.stderr},
            "ours": {"seconds": ours_seconds, "estimate": ours.estimate, "stderr": ours.stderr},
            "speedup": naive_seconds / ours_seconds, "reference": reference, "vs_reference": _error(naive.estimate, reference)}


def tolerance_stop(values: torch.Tensor, tol: float) -> int | None:
    """How many of ``values`` [k] the paper's rule uses (as ``naive_hutchinson_trace``); None if it never stops."""
    previous = 0.0
    for count in range(1, len(values) + 1):
        mean = float(values[:count].mean())
        if abs(mean - previous) / (abs(previous) + 1e-6) < tol:
            return count
        previous = mean
    return None


def hutchinson_variance(matrix: torch.Tensor, products: torch.Tensor) -> float:
    """Var(v^T H v) over Rademacher v, 2 (||H||_F^2 - sum_i H_ii^2), unbiased from k >= 2 probes [k, P] and H @ probes.

    ||H v||^2 is unbiased for ||H||_F^2, and (v_i * H v_i) . (v_j * H v_j) for two different probes is unbiased
    for sum_i H_ii^2: all k products inform both, where a sample variance of k values has k - 1 degrees of freedom.
    """
    matrix, products = matrix.double(), products.double()
    frobenius = products.pow(2).sum(1).mean()
    diagonals = matrix * products  # row i: an unbiased estimate of diag(H) [P]
    total = diagonals.sum(0)
    pairs = (total @ total - diagonals.pow(2).sum()) / (len(matrix) * (len(matrix) - 1))  # mean over i != j
    return float(2 * (frobenius - pairs))


def full_data_costs(net, images, labels, probes: int, batch_size: int, device: torch.device) -> dict:
    """(a) one naive full-data probe (g + h seconds) and (b) ours with ``probes`` probes (g + k h): g, h, per-probe std."""
    matrix = rademacher_probes(probes, parameter_count(net), seed=0, device=device)
    naive_seconds, naive = _timed(
        lambda: naive_hutchinson_trace(net, images, labels, max_probes=1, tol=0.0, seed=0, batch_size=batch_size), device)
    ours_seconds, products = _timed(lambda: hessian_vector_products(net, images, labels, matrix, batch_size), device)
    ours = TraceEstimate.from_values((matrix.double() * products.double()).sum(1))
    per_probe = (ours_seconds - naive_seconds) / (probes - 1)  # h: one double-backward pass over the data
    return {"images": len(images), "probes": probes, "naive_seconds_per_probe": naive_seconds, "ours_seconds": ours_seconds,
            "graph_seconds": naive_seconds - per_probe, "seconds_per_extra_probe": per_probe,
            "estimate": ours.estimate, "stderr": ours.stderr, "values": ours.values.tolist(),
            "naive_value_difference": float(abs(naive.values[0] - ours.values[0])),
            "per_probe_std_sample": float(ours.values.std()),
            "per_probe_std_formula": math.sqrt(max(hutchinson_variance(matrix, products), 0.0))}


def sampled_costs(net, images, labels, probes: int, sample_size: int, per_batch: int, batch_size: int,
                  device: torch.device) -> dict:
    """(c) the doubly stochastic estimator: seconds and std per batch group, and its variance components."""
    seconds, estimate = _timed(lambda: sampled_hutchinson_trace(
        net, images, labels, probes, probe_seed=1, images_per_batch=sample_size, probes_per_batch=per_batch,
        chunk_size=batch_size), device)
    groups = estimate.values.view(-1, per_batch)  # [groups, probes_per_batch]; seed 1: independent of (a) and (b)
    within = float(groups.var(1).mean()) if per_batch > 1 else float("nan")  # probe noise given the batch
    return {"sample_size": sample_size, "probes_per_batch": per_batch, "probes": probes, "groups": len(groups),
            "seconds": seconds, "seconds_per_group": seconds / len(groups), "estimate": estimate.estimate,
            "stderr": estimate.stderr, "group_std": estimate.stderr * math.sqrt(len(groups)),
            "within_batch_probe_variance": within,
            "between_batch_variance": float(groups.mean(1).var()) - within / per_batch,
            "group_means": groups.mean(1).tolist()}


def _speedup_interval(ratio: float, numerator_dof: int, denominator_dof: int) -> list[float]:
    """95% interval of a speed-up proportional to a ratio of two sample variances (F distribution)."""
    f = scipy.stats.f(numerator_dof, denominator_dof)
    return [ratio / f.ppf(0.975), ratio / f.ppf(0.025)]


def real_set_speed(full: dict, sampled: dict, target: float, tol: float) -> dict:
    """Seconds to a standard error of ``target`` x |trace| for (a), (b), (c), and the speed-ups at that accuracy.

    The trace for the target is the inverse-variance mean of the full-data and sampled estimates (independent
    probes); it is also the reference for the paper rule's error.
    """
    weights = [1 / full["stderr"] ** 2, 1 / sampled["stderr"] ** 2]
    trace = (weights[0] * full["estimate"] + weights[1] * sampled["estimate"]) / sum(weights)
    reference = {"estimate": trace, "stderr": sum(weights) ** -0.5}
    goal = target * abs(trace)
    report = {"target_rel_stderr": target, "target_stderr": goal, "reference": reference,
              "agreement_in_stderrs": (full["estimate"] - sampled["estimate"]) / math.hypot(full["stderr"], sampled["stderr"])}
    for how in ("sample", "formula"):
        probes = (full[f"per_probe_std_{how}"] / goal) ** 2
        groups = (sampled["group_std"] / goal) ** 2
        seconds = {"naive_full": probes * full["naive_seconds_per_probe"],
                   "ours_full": full["graph_seconds"] + probes * full["seconds_per_extra_probe"],
                   "sampled": groups * sampled["seconds_per_group"]}
        report[f"by_{how}_std"] = {"full_probes_needed": probes, "sampled_groups_needed": groups, "seconds_to_target": seconds,
                                   "speedup_sampled_vs_naive": seconds["naive_full"] / seconds["sampled"],
                                   "speedup_sampled_vs_ours_full": seconds["ours_full"] / seconds["sampled"],
                                   "speedup_ours_full_vs_naive": seconds["naive_full"] / seconds["ours_full"]}
    sample = report["by_sample_std"]
    report["by_sample_std"]["speedup_sampled_vs_naive_95"] = _speedup_interval(
        sample["speedup_sampled_vs_naive"], full["probes"] - 1, sampled["groups"] - 1)
    report["sampled_reached_target_directly"] = sampled["stderr"] <= goal
    report["paper_rule"] = real_paper_rule(full, sampled, tol, reference)
    return report


def real_paper_rule(full: dict, sampled: dict, tol: float, reference: dict) -> dict:
    """The stopping rule on the full-data values (naive seconds) and on the sampled group means, vs ``reference``."""
    report = {"tol": tol}
    stop = tolerance_stop(torch.tensor(full["values"]), tol)
    if stop is None:
        report["naive_full"] = {"stopped": False, "probes_tried": full["probes"],
                                "seconds_at_least": full["probes"] * full["naive_seconds_per_probe"]}
    else:
        estimate = sum(full["values"][:stop]) / stop
        report["naive_full"] = {"stopped": True, "probes_used": stop, "seconds": stop * full["naive_seconds_per_probe"],
                                "estimate": estimate, "vs_reference": _error(estimate, reference)}
    means = torch.tensor(sampled["group_means"])
    stop = tolerance_stop(means, tol)
    if stop is None:
        report["sampled"] = {"stopped": False, "groups_tried": len(means)}
    else:
        estimate = float(means[:stop].mean())
        report["sampled"] = {"stopped": True, "groups_used": stop, "seconds": stop * sampled["seconds_per_group"],
                             "estimate": estimate, "vs_reference": _error(estimate, reference)}
    return report


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--store", default=None, help="artifact store for the shapes cache (default: $DDNB_STORE or ~/.cache/ddnb)")
    parser.add_argument("--batch-size", type=int, default=250, help="images per batch of a full-data pass")
    parser.add_argument("--distilled-probes", type=int, default=16, help="probes of ours and naive on the distilled-like set")
    parser.add_argument("--paper-max-probes", type=int, default=100, help="PyHessian's maxIter; 0 skips the rule")
    parser.add_argument("--tol", type=float, default=1e-3, help="the paper's stopping tolerance")
    parser.add_argument("--reference-probes", type=int, default=32, help="probes of ours for the rule's reference (distilled-like)")
    parser.add_argument("--real-size", type=int, default=5000, help="images in the real subsample (a multiple of 10)")
    parser.add_argument("--real-probes", type=int, default=4, help="full-data probes of ours (>= 2) for g, h and the std")
    parser.add_argument("--sample-size", type=int, default=32, help="images per random batch of the sampled estimator")
    parser.add_argument("--probes-per-batch", type=int, default=2)
    parser.add_argument("--sampled-probes", type=int, default=256, help="probes of the sampled estimator")
    parser.add_argument("--target", type=float, default=0.05, help="standard error to reach, relative to the trace")
    parser.add_argument("--hvp-batch", type=int, default=100)
    parser.add_argument("--hvp-vectors", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def _print(name: str, part: dict) -> None:
    print(name, json.dumps({k: v for k, v in part.items() if k not in ("values", "group_means")}), flush=True)


def distilled_part(net, images, labels, args, device: torch.device) -> dict:
    """Part 2: ours vs naive with the same probes, and the paper's rule against ours with all the probes."""
    report = {"speed": trace_speed(net, images, labels, args.distilled_probes, args.batch_size, device)}
    _print("distilled-like", report["speed"])
    if args.paper_max_probes:
        # probes of seed 1: independent of the rule's (seed 0), so its error is not shrunk by shared probes
        seconds, ours = _timed(lambda: hutchinson_trace(net, images, labels, args.reference_probes, seed=1,
                                                        batch_size=args.batch_size), device)
        reference = {"probes": args.reference_probes, "seed": 1, "seconds": seconds, "estimate": ours.estimate, "stderr": ours.stderr}
        report["paper_rule"] = paper_rule(net, images, labels, args.paper_max_probes, args.tol, args.batch_size, device, reference)
        _print("paper rule", report["paper_rule"])
    return report


def real_part(net, images, labels, args, device: torch.device, hvp: dict) -> dict:
    """Part 3: full-data costs and variance, the sampled estimator, and times to the target standard error."""
    full = full_data_costs(net, images, labels, args.real_probes, args.batch_size, device)
    _print("real full data", full)
    sampled = sampled_costs(net, images, labels, args.sampled_probes, args.sample_size, args.probes_per_batch,
                            args.batch_size, device)
    # the group size that minimises variance x time, (within g / (between h))^(1/2), with g, h of part 1
    g, h = hvp["create_graph_gradient_seconds"], hvp["graph_reuse"]["seconds_per_product_without_graph"]
    ratio = sampled["within_batch_probe_variance"] * g / (sampled["between_batch_variance"] * h)
    sampled["suggested_probes_per_batch"] = math.sqrt(ratio) if ratio > 0 else None
    _print("real sampled", sampled)
    comparison = real_set_speed(full, sampled, args.target, args.tol)
    _print("real comparison", comparison)
    return {"full": full, "sampled": sampled, "comparison": comparison}


def main() -> None:
    args = _arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dataset = load_dataset(DataConfig("shapes", train_per_class=args.real_size // 10, test_size=10),
                           Store(args.store) if args.store else None, device)
    real = (dataset.train.images, dataset.train.labels)
    small = sample_per_class(dataset.train.labels.cpu(), 10, seed=1, num_classes=10).to(device)
    net = build_net("convnet", seed=0, device=device).eval()
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "net": "convnet", "parameters": parameter_count(net), "data": "shapes",
              "options": {k: v for k, v in vars(args).items() if k != "out"}}
    start = time.perf_counter()

    def write() -> None:  # after every part, so that a run stopped from outside keeps what it measured
        report["total_seconds"] = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    report["hvp_per_product"] = hvp = hvp_methods(net, real[0][: args.hvp_batch], real[1][: args.hvp_batch], args.hvp_vectors, device)
    _print("hvp", {k: v for k, v in hvp.items() if k not in ("autograd_variants", "is_grads_batched_diagnosis")})
    for variant, outcome in hvp["autograd_variants"].items():
        print("  autograd variant", variant, outcome.get("seconds_per_product") or outcome["error"][:300], flush=True)
    for case, outcome in hvp.get("is_grads_batched_diagnosis", {}).items():
        print("  diagnosis", case, outcome, flush=True)
    g, h = hvp["create_graph_gradient_seconds"], hvp["graph_reuse"]["seconds_per_product_without_graph"]
    report["predicted_speedup_at_64_probes"] = 64 * (g + h) / (g + 64 * h)
    write()
    report["distilled_like_100"] = distilled_part(net, real[0][small], real[1][small], args, device)
    write()
    report[f"real_subsample_{len(real[0])}"] = real_part(net, *real, args, device, hvp)
    write()


if __name__ == "__main__":
    main()
