"""Where one ConvNet-128 training step spends its time, and which instance normalisation runs it fastest.

    python benchmarks/step_profile.py --device cuda --out benchmarks/results/step-profile-cuda.json   (about 2 min)
    python benchmarks/step_profile.py --device cpu --quick --out /tmp/step-profile-cpu.json          (a check that it runs)

The step is the paper's ConvNet (``build_net("convnet")``: width 128, depth 3, instance norm = ``GroupNorm(C, C)``,
ReLU, 2x2 average pooling, 320,010 parameters), one SGD step (lr 0.01, momentum 0.9; forward, cross-entropy,
backward, update) on a fixed batch of 256 random 32x32x3 images, as ``distill_speed.py``'s training reference.

1. ``profile``: ``torch.profiler`` over a few steps after warm-up, in three precisions: ``fp32`` (TF32 off for
   cuDNN and matmul), ``tf32`` (TF32 on for both) and ``bf16`` (autocast to bfloat16, TF32 on). For each, the
   ``--top`` operators and kernels by self device time (self CPU time on the CPU), per step and as a share of the
   profiled step's total, and the step's wall time from CUDA events.
2. ``candidates``: formulations of the instance normalisation (and of the pooling: ``pool_mean``), each timed in the same process (per-step CUDA
   events, median of ``--repeats`` steps after ``--warmup``; wall clock on the CPU): today's ``GroupNorm(C, C)``,
   ``F.instance_norm``, a manual ``var_mean`` over (2, 3) with the affine, channels_last variants, cuDNN's
   autotuner (``cudnn.benchmark``), and ``torch.compile`` of the network (forward and backward; modes ``default``,
   ``reduce-overhead`` (CUDA graphs) and ``max-autotune-no-cudagraphs``; the optimiser's update stays eager, foreach). Each candidate is also
   checked against today's module: the largest absolute difference of the logits and of every parameter
   gradient on one batch, against today's module in the same precision (``vs_today_same_precision``: is it the
   same function?) and against today's module in strict fp32 (``vs_fp32``: what the precision costs). The
   speed-up is against today's module in strict fp32 (``baseline``); issue 23 asks for <= 1 ms per step on an H200.

torch.compile candidates are skipped on the CPU (unless ``--compile``) and when less than their allowance of
``--budget`` seconds is left; a failure is recorded, not raised. The JSON is rewritten after every candidate, so
a run stopped from outside keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddnb.nets import build_net
from ddnb.train import resolve_device

PRECISIONS = ("fp32", "tf32", "bf16")


class InstanceNorm(nn.Module):
    """Per-image, per-channel normalisation with a per-channel affine, computed one of several ways.

    ``how``: "instance_norm" (``F.instance_norm``, cuDNN's batch norm over N * C channels on a GPU) or "manual"
    (``torch.var_mean`` over H and W, then scale and shift; in float32 whatever the input dtype, as autocast
    runs GroupNorm). Same parameters (``weight``, ``bias``) and eps as ``nn.GroupNorm(C, C)``.
    """

    def __init__(self, source: nn.GroupNorm, how: str):
        super().__init__()
        self.how, self.eps = how, source.eps
        self.weight, self.bias = nn.Parameter(source.weight.detach().clone()), nn.Parameter(source.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "instance_norm":
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)
        return ((xf - mean) * scale + self.bias.view(1, -1, 1, 1)).to(x.dtype)


class MeanPool(nn.Module):
    """2x2 average pooling as a mean over a reshaped view: its backward is a broadcast, not ``avg_pool2d_backward``
    (a quarter of an H200 step's kernel time in tf32 and bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def with_norm(net: nn.Module, how: str, pool: str = "avg_pool2d") -> nn.Module:
    """A deep copy of ``net`` with every ``GroupNorm(C, C)`` replaced by ``InstanceNorm(how)`` (same weights), and
    with ``pool="mean"`` every ``AvgPool2d(2)`` by ``MeanPool``."""
    net = copy.deepcopy(net)
    for name, module in list(net.body.named_children()):
        if isinstance(module, nn.GroupNorm) and how != "groupnorm":
            assert module.num_groups == module.num_channels
            net.body._modules[name] = InstanceNorm(module, how)
        if isinstance(module, nn.AvgPool2d) and pool == "mean":
            net.body._modules[name] = MeanPool()
    return net


@contextlib.contextmanager
def precision(mode: str, device: torch.device, benchmark: bool = False):
    """fp32: TF32 off; tf32: on; bf16: autocast to bfloat16 with TF32 on. Restores the flags afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode != "fp32"
    torch.backends.cudnn.benchmark = benchmark
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Step:
    """One SGD step of ``model`` (a module or its compiled form) on a fixed batch; owns its optimiser."""

    def __init__(self, net: nn.Module, model, images: torch.Tensor, labels: torch.Tensor):
        self.net, self.model, self.images, self.labels = net, model, images, labels
        self.optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def __call__(self) -> None:
        loss = F.cross_entropy(self.model(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def time_steps(step, device: torch.device, warmup: int, repeats: int) -> dict:
    """Milliseconds per step: median and quartiles of ``repeats`` steps after ``warmup`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"ms": statistics.median(times), "q1_ms": quartiles[0], "q3_ms": quartiles[2], "repeats": repeats, "warmup": warmup}


def outputs_and_grads(net: nn.Module, model, images, labels) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits (float32) and every parameter's gradient (float32) of one forward and backward; no update."""
    net.zero_grad(set_to_none=True)
    logits = model(images)
    F.cross_entropy(logits, labels).backward()
    grads = [p.grad.detach().float().clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return logits.detach().float().clone(), grads


def difference(a: tuple, b: tuple) -> dict:
    """Largest absolute differences of logits and of gradients between two ``outputs_and_grads`` results."""
    (logits_a, grads_a), (logits_b, grads_b) = a, b
    grad = max(float((x - y).abs().max()) for x, y in zip(grads_a, grads_b))
    return {"logits_max_abs": float((logits_a - logits_b).abs().max()), "logits_scale": float(logits_b.abs().max()),
            "grads_max_abs": grad, "grads_scale": max(float(y.abs().max()) for y in grads_b),
            "grads_max_rel": max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)) for x, y in zip(grads_a, grads_b))}


def _device_time(event) -> float:
    """Self device time (us) of a profiler average, whatever the torch version names it."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def _is_kernel(event) -> bool:
    """A device-side event (kernel, memcpy, memset), not the CPU-side operator that launched it."""
    kind = getattr(event, "device_type", None)
    return kind is not None and getattr(kind, "name", str(kind)).upper() not in ("CPU",)


def _rows(events, timer, steps: int, top: int) -> tuple[float, list[dict]]:
    rows = sorted(((e.key, timer(e), e.count) for e in events if timer(e) > 0), key=lambda r: -r[1])
    total = sum(t for _, t, _ in rows)
    return total, [{"name": name, "ms_per_step": t / steps / 1e3, "share": t / total, "calls_per_step": count / steps}
                   for name, t, count in rows[:top]]


def profile_step(net: nn.Module, images, labels, mode: str, device: torch.device, steps: int, warmup: int, top: int) -> dict:
    """The top kernels by device time and the top operators by the device time of the kernels they launch
    themselves (on the CPU: operators by self CPU time) over ``steps`` profiled steps after ``warmup``."""
    from torch.profiler import ProfilerActivity, profile

    net = copy.deepcopy(net)
    step = Step(net, net, images, labels)
    with precision(mode, device):
        timing = time_steps(step, device, warmup, max(steps, 5))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            _sync(device)
    events = prof.key_averages()
    result = {"step_ms": timing["ms"], "profiled_steps": steps}
    if device.type == "cuda":
        total, result["top_kernels"] = _rows([e for e in events if _is_kernel(e)], _device_time, steps, top)
        _, result["top_ops"] = _rows([e for e in events if not _is_kernel(e)], _device_time, steps, top)
        result["clock"] = "device time: kernels' own; ops' the kernels they launch directly"
    else:
        total, result["top_ops"] = _rows(list(events), lambda e: float(e.self_cpu_time_total), steps, top)
        result["clock"] = "self CPU time"
    result["profiled_ms_per_step"] = total / steps / 1e3
    return result


def candidate_list(device: torch.device, compile_too: bool) -> list[dict]:
    """Every (formulation, precision, layout, compile) tried, today's first (the baseline)."""
    eager = [dict(norm="groupnorm", precision="fp32")]
    eager += [dict(norm="groupnorm", precision=p) for p in ("tf32", "bf16")]
    eager += [dict(norm="groupnorm", precision=p, benchmark=True) for p in ("fp32", "tf32", "bf16")]
    eager += [dict(norm=n, precision=p) for n in ("instance_norm", "manual") for p in PRECISIONS]
    eager += [dict(norm=n, precision=p, channels_last=True) for n in ("groupnorm", "instance_norm", "manual") for p in ("tf32", "bf16")]
    eager += [dict(norm=n, precision=p, pool="mean") for n in ("groupnorm", "manual") for p in PRECISIONS]
    compiled = []
    if compile_too:
        compiled = [dict(norm="groupnorm", precision="bf16", compile="default", allowance=30),
                    dict(norm="groupnorm", precision="bf16", channels_last=True, compile="default", allowance=30),
                    dict(norm="groupnorm", precision="bf16", compile="reduce-overhead", allowance=30),
                    dict(norm="groupnorm", precision="tf32", compile="default", allowance=30),
                    dict(norm="groupnorm", precision="bf16", compile="max-autotune-no-cudagraphs", allowance=60),
                    dict(norm="manual", precision="bf16", compile="default", allowance=30)]
    return eager + compiled


def label(c: dict) -> str:
    parts = [c["norm"], c["precision"]] + ([f"pool_{c['pool']}"] if c.get("pool") else []) + (["channels_last"] if c.get("channels_last") else []) \
        + (["cudnn_benchmark"] if c.get("benchmark") else []) + ([f"compile_{c['compile']}"] if c.get("compile") else [])
    return "/".join(parts)


def run_candidate(c: dict, net: nn.Module, images, labels, device: torch.device, references: dict, args) -> dict:
    """Equivalence against today's module, then the timed steps, of one candidate."""
    fmt = torch.channels_last if c.get("channels_last") else torch.contiguous_format
    x = images.contiguous(memory_format=fmt)
    result = {k: v for k, v in c.items() if k != "allowance"}
    start = time.perf_counter()
    if c.get("compile"):
        torch._dynamo.reset()
    with precision(c["precision"], device, c.get("benchmark", False)):
        candidate = with_norm(net, c["norm"], c.get("pool", "avg_pool2d")).to(memory_format=fmt)
        model = torch.compile(candidate, mode=c["compile"]) if c.get("compile") else candidate
        got = outputs_and_grads(candidate, model, x, labels)  # before any update: today's weights
        result["first_call_seconds"] = time.perf_counter() - start
        result["vs_today_same_precision"] = difference(got, references[c["precision"]])
        result["vs_fp32"] = difference(got, references["fp32"])
        result.update(time_steps(Step(candidate, model, x, labels), device, args.warmup, args.repeats))
    result["seconds"] = time.perf_counter() - start
    return result


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(report, indent=1) + "\n")
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 256; quick 32)")
    parser.add_argument("--quick", action="store_true", help="tiny repeat counts (and batch 32 unless --batch): a check that it runs")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per candidate (default 10; quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per candidate (default 50; quick 2)")
    parser.add_argument("--profile-steps", type=int, default=None, help="profiled steps per precision (default 5; quick 1)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--budget", type=float, default=140.0, help="seconds; torch.compile candidates are skipped past it")
    parser.add_argument("--compile", dest="compile_too", action="store_true", default=None, help="try torch.compile (default: on CUDA only)")
    parser.add_argument("--no-compile", dest="compile_too", action="store_false")
    parser.add_argument("--only", default=None, help="comma-separated substrings: run only the candidates whose label has one")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler part")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    began = time.perf_counter()
    device = resolve_device(args.device)
    if args.quick and args.batch is None:
        args.batch = 32
    args.batch = args.batch or 256
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 50)
    args.profile_steps = args.profile_steps if args.profile_steps is not None else (1 if args.quick else 5)
    compile_too = args.compile_too if args.compile_too is not None else device.type == "cuda"

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(10, (args.batch,), generator=generator).to(device)
    net = build_net("convnet", seed=0, device=device)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None, "threads": torch.get_num_threads(),
              "net": "convnet (width 128, depth 3, GroupNorm(C, C))", "batch": args.batch, "step": "SGD lr 0.01 momentum 0.9",
              "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "compile_tried": compile_too,
              "target_ms": 1.0, "profile": {}, "candidates": {}, "skipped": {}, "failed": {}}

    for mode in () if args.no_profile else PRECISIONS:
        try:
            report["profile"][mode] = part = profile_step(net, images, labels, mode, device, args.profile_steps,
                                                          args.warmup, args.top)
            top_rows = part.get("top_kernels", part["top_ops"])
            print(f"profile {mode}: {part['step_ms']:.3f} ms/step, {part['profiled_ms_per_step']:.3f} profiled;",
                  "; ".join(f"{r['name'][:70]} {r['share']:.0%}" for r in top_rows[:6]), flush=True)
        except Exception as error:  # noqa: BLE001 - record and go on
            report["failed"][f"profile/{mode}"] = f"{type(error).__name__}: {error}"
        _write(args.out, report)

    references = {}
    for mode in PRECISIONS:  # today's module, unchanged weights, in each precision
        with precision(mode, device):
            reference_net = copy.deepcopy(net)
            references[mode] = outputs_and_grads(reference_net, reference_net, images, labels)

    for c in candidate_list(device, compile_too):
        name = label(c)
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        left = args.budget - (time.perf_counter() - began)
        if c.get("compile") and left < c["allowance"]:
            report["skipped"][name] = f"{left:.0f} s of the {args.budget:.0f} s budget left, {c['allowance']} s allowed for compiling"
            continue
        try:
            result = run_candidate(c, net, images, labels, device, references, args)
        except Exception as error:  # noqa: BLE001 - a failed candidate is a finding
            report["failed"][name] = f"{type(error).__name__}: {error}"[:2000]
            report["failed"][name + " (traceback)"] = traceback.format_exc()[-3000:]
            print(f"{name}: FAILED {type(error).__name__}: {str(error)[:200]}", flush=True)
            _write(args.out, report)
            continue
        report["candidates"][name] = result
        baseline = report["candidates"].get("groupnorm/fp32")
        if baseline:
            result["speedup_vs_fp32_today"] = baseline["ms"] / result["ms"]
        print(f"{name}: {result['ms']:.3f} ms/step, logits diff {result['vs_today_same_precision']['logits_max_abs']:.2e}, "
              f"grads diff {result['vs_today_same_precision']['grads_max_abs']:.2e} (same precision), "
              f"{result['seconds']:.1f} s", flush=True)
        _write(args.out, report)

    timed = {k: v["ms"] for k, v in report["candidates"].items()}
    if timed:
        report["fastest"] = min(timed, key=timed.get)
        report["fastest_ms"] = timed[report["fastest"]]
    report["baseline"] = "groupnorm/fp32"
    report["total_seconds"] = time.perf_counter() - began
    _write(args.out, report)
    print(f"fastest: {report.get('fastest')} {report.get('fastest_ms', float('nan')):.3f} ms/step; "
          f"{report['total_seconds']:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
