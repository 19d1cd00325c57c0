"""Speed of exact leave-one-out influence: all retrainings batched (vmap) against one run per model.

    python benchmarks/influence_speed.py --device cpu --threads 1 --out benchmarks/results/influence-speed-cpu.json
    python benchmarks/influence_speed.py --device cuda --out benchmarks/results/influence-speed-cuda.json   (not yet run; est. < 10 min)

The paper ran the 101 leave-one-out trainings of one IPC-10 set (100 images + the run on all of them) one
after another, ConvNet, full batch, 300 steps: 2 min 44 s on a GPU. Here, in one process and on the same
kind of data (100 shapes training images, 32x32x3, 10 per class, standardised by their own statistics),
``ddnb.analysis.influence.loo_influence`` (the models stacked and trained as one vmapped computation, in
chunks of ``--chunk-size``) is timed against ``loo_influence_sequential`` (one ``ddnb.train.train`` per
model). Each timing covers training and the evaluation on ``--test-images`` test images, after an untimed
warm-up. Seconds per model-step = seconds / (models x steps); the 101 x 300 figure extrapolates it linearly.
On the CPU the runs are shortened (fewer steps, fewer models: see ``CPU_PRESETS``) so the script ends in
minutes; on a GPU the default is the paper's full job for ``convnet``. With ``--kernels eager compile graphs`` the batched path is timed once per way of launching its kernels
(``ddnb.kernels``; a compiled form is made in an untimed warm-up of the same shapes, whose seconds are reported
as ``warm_up_seconds``). Both paths must agree: the largest
difference between the influence rows they both computed is reported beside the largest influence (in
float32 the two differ only in summation order, so the difference is the numerical noise of LOO itself).
It also measures the ceiling of any batching on the device (``batch_ceiling``): one network's step on
chunk-size times the images against as many steps on the images; where that gains little, no stacking of
models can gain more, since stacked models do the same FLOPs with less weight reuse.

CPU notes. Seconds are wall-clock; ``cpu_seconds`` (process CPU time) are also given because a loaded
machine stretches wall time. By default the script raises glibc's mmap threshold (``mallopt``) so that
large activation buffers are reused instead of being unmapped and page-faulted in again at every step:
the stacked activations (M x N x C x H x W) are far above glibc's 32 MB ceiling, and without this the
batched path spends about half its time in the kernel (``--no-malloc-tune`` turns it off).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import ddnb
from ddnb.analysis.influence import loo_influence, loo_influence_sequential
from ddnb.data.shapes import generate_shapes
from ddnb.kernels import KERNELS, kernels
from ddnb.nets import build_net
from ddnb.train import get_protocol, resolve_device

PAPER = {"models": 101, "steps": 300, "seconds": 164.0, "device": "GPU (one by one)"}
# per net: steps timed, models in the batched run (incl. the run on all images), models run one by one
CPU_PRESETS = {"convnet": {"steps": 5, "batched_models": 8, "sequential_models": 3},
               "convnet-tiny": {"steps": 20, "batched_models": 32, "sequential_models": 6}}
GPU_PRESETS = {"convnet": {"steps": 300, "batched_models": 101, "sequential_models": 101},
               "convnet-tiny": {"steps": 300, "batched_models": 101, "sequential_models": 101}}


def shapes_problem(images: int, test_images: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``images`` shapes training images and ``test_images`` test images, standardised, on ``device``."""
    x, y, _ = generate_shapes(images, 0, "train")
    tx, ty, _ = generate_shapes(test_images, 0, "test")
    pixels = x.float() / 255
    mean, std = pixels.mean((0, 2, 3), keepdim=True), pixels.std((0, 2, 3), keepdim=True)
    normalise = lambda u: ((u.float() / 255 - mean) / std).to(device)  # noqa: E731
    return normalise(x), y.to(device), normalise(tx), ty.to(device)


def tune_malloc() -> bool:
    """Keep freed large blocks in the heap (glibc only): no munmap + page faults per step. True if applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 31))


def _timed(fn, device: torch.device) -> tuple[float, float, object]:
    """Wall seconds, process CPU seconds and the result of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu, result


def batch_ceiling(name: str, images: torch.Tensor, labels: torch.Tensor, models: int, steps: int, device: torch.device) -> dict:
    """How much any batching of ``models`` models could gain on this device: one network's training step on
    ``models`` x n images (the set repeated) against ``models`` steps on the n images, same process.

    M models in one pass do the same FLOPs as one model on M times the batch, and with their own weights they
    cannot use the hardware better (grouped instead of dense kernels). So the per-image speed-up of the big
    batch bounds the batched LOO's speed-up. Also counts the FLOPs of one step on n images.
    """
    net = build_net(name, 0, device=device)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    big_x, big_y = images.repeat(models, 1, 1, 1), labels.repeat(models)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()

    with FlopCounterMode(display=False) as counter:
        step(images, labels)
    step(big_x, big_y)  # warm-up at the big batch
    seconds_small, _, _ = _timed(lambda: [step(images, labels) for _ in range(steps * models)], device)
    seconds_big, _, _ = _timed(lambda: [step(big_x, big_y) for _ in range(steps)], device)
    flops = counter.get_total_flops()
    return {"models": models, "steps": steps, "flops_per_model_step": flops,
            "seconds_per_model_step_at_n": seconds_small / (steps * models),
            "seconds_per_model_step_at_models_x_n": seconds_big / (steps * models),
            "gflops_at_n": flops * steps * models / seconds_small / 1e9,
            "gflops_at_models_x_n": flops * steps * models / seconds_big / 1e9,
            "ceiling": seconds_small / seconds_big}


def time_net(name: str, preset: dict, data: tuple, chunk_size: int, device: torch.device, kernel_names: list[str]) -> dict:
    """Batched LOO of ``name`` on ``data`` with each of ``kernel_names`` (``ddnb.kernels``) and sequential LOO;
    seconds and per-model-step rates of each, the batched figures of the first kernels at the top level."""
    x, y, tx, ty = data
    net = build_net(name, 0, device=device)
    protocol = get_protocol("paper300", steps=preset["steps"])
    warm = get_protocol("paper300", steps=1)  # allocations, kernel selection, one-time imports
    batched_models, sequential_models = preset["batched_models"], preset["sequential_models"]
    full = PAPER["models"] * PAPER["steps"]
    loo_influence_sequential(net, x, y, tx, ty, warm, indices=[0])
    seconds_s, cpu_s, sequential = _timed(lambda: loo_influence_sequential(net, x, y, tx, ty, protocol,
                                                                    indices=range(sequential_models - 1)), device)
    rate_s = seconds_s / (sequential_models * protocol.steps)
    shared = min(batched_models, sequential_models) - 1
    by_kernels = {}
    for kernel_name in kernel_names:
        with kernels(kernel_name):
            # the warm-up has the timed run's shapes, so a compiled form is made here (its seconds are reported)
            warm_seconds, _, _ = _timed(lambda: loo_influence(net, x, y, tx, ty, warm, indices=range(batched_models - 1),
                                                              chunk_size=chunk_size, backend="vmap"), device)
            seconds_b, cpu_b, batched = _timed(lambda: loo_influence(net, x, y, tx, ty, protocol, indices=range(batched_models - 1),
                                                                     chunk_size=chunk_size, backend="vmap"), device)
        rate_b = seconds_b / (batched_models * protocol.steps)
        by_kernels[kernel_name] = {
            "models": batched_models, "seconds": seconds_b, "cpu_seconds": cpu_b, "warm_up_seconds": warm_seconds,
            "seconds_per_model_step": rate_b, "extrapolated_101x300_seconds": rate_b * full,
            "speedup": rate_s / rate_b,
            "speedup_cpu_time": (cpu_s / (sequential_models * protocol.steps)) / (cpu_b / (batched_models * protocol.steps)),
            "max_abs_difference": (batched.matrix[:shared] - sequential.matrix[:shared]).abs().max().item() if shared else float("nan"),
            "max_abs_influence": batched.matrix[:shared].abs().max().item() if shared else float("nan")}
        print(name, kernel_name, json.dumps(by_kernels[kernel_name]), flush=True)
    first = by_kernels[kernel_names[0]]
    return {"steps": protocol.steps, "chunk_size": chunk_size,
            "batched": {key: first[key] for key in ("models", "seconds", "cpu_seconds", "seconds_per_model_step",
                                                    "extrapolated_101x300_seconds")} | {"kernels": kernel_names[0]},
            "batched_by_kernels": by_kernels,
            "sequential": {"models": sequential_models, "seconds": seconds_s, "cpu_seconds": cpu_s,
                           "seconds_per_model_step": rate_s, "extrapolated_101x300_seconds": rate_s * full},
            "speedup": first["speedup"], "speedup_cpu_time": first["speedup_cpu_time"],
            "max_abs_difference": first["max_abs_difference"], "max_abs_influence": first["max_abs_influence"],
            "batch_ceiling": batch_ceiling(name, x, y, chunk_size, protocol.steps, device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nets", nargs="*", default=["convnet", "convnet-tiny"])
    parser.add_argument("--images", type=int, default=100, help="training (distilled-set) images")
    parser.add_argument("--test-images", type=int, default=None, help="default 100 on the CPU, 1000 on a GPU")
    parser.add_argument("--chunk-size", type=int, default=None, help="models per vmapped run; default 8 on the CPU, 101 on a GPU")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--kernels", nargs="+", default=["eager"], choices=KERNELS,
                        help="time the batched path with each (ddnb.kernels; the first fills the top-level figures)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-malloc-tune", action="store_true", help="leave glibc's mmap threshold alone")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    malloc_tuned = False if args.no_malloc_tune else tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cpu = device.type == "cpu"
    presets = CPU_PRESETS if cpu else GPU_PRESETS
    chunk_size = args.chunk_size or (8 if cpu else 101)
    data = shapes_problem(args.images, args.test_images or (100 if cpu else 1000), device)
    report = {"device": "cpu" if cpu else torch.cuda.get_device_name(), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "ddnb": ddnb.__version__, "torch": torch.__version__,
              "malloc_tuned": malloc_tuned,
              "images": args.images, "test_images": len(data[2]), "protocol": "paper300 (full batch, SGD 0.01, momentum 0.9)",
              "paper": PAPER, "nets": {}}
    for name in args.nets:
        preset = presets[name] | ({"steps": args.steps} if args.steps else {})
        result = time_net(name, preset, data, chunk_size, device, args.kernels)
        report["nets"][name] = result
        print(name, json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
