"""Numeric precision of a piece of work: float32, TF32 matrix units (CUDA only) or bfloat16 autocast.

``precision(name, device)`` is a context manager that runs its block in that precision; ``POLICY`` is the one
ddnb uses for each kind of work, chosen by measurement: the fastest that leaves results unchanged within noise
(``tests/test_precision.py`` holds the checks, ``benchmarks/`` the timings). Imports nothing above it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ddnb.errors import DdnbError

PRECISIONS = ("fp32", "tf32", "bf16")

# Every kind of work runs in float32 until a GPU measurement shows a faster precision that passes its check:
# - leave-one-out is a difference of two trainings' losses, which bf16 rounding swamps (tests/test_precision.py);
# - curvature under bf16 lands within 0.01 standard errors of float32 with the same probes (tests/test_precision.py),
#   so it may switch once a GPU measures it faster;
# - on the CPU bf16 autocast does not pay for these small convolutions (10 ConvNet-Tiny steps at batch 100:
#   1.5-2.1 s against 1.9-2.0 s in float32, 2026-12-07, AMX-capable Xeon, shared host).
POLICY = {"evaluation": "fp32", "distillation": "fp32", "leave-one-out": "fp32", "curvature": "fp32"}


def check_precision(name: str) -> str:
    """``name`` when it is one of ``PRECISIONS``, else a ``DdnbError`` naming them."""
    if name not in PRECISIONS:
        raise DdnbError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return name


@contextmanager
def precision(name: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block in precision ``name`` on ``device``: ``fp32`` changes nothing; ``tf32`` lets CUDA matrix
    products and convolutions use TF32 (10-bit mantissa inputs, float32 accumulation; on other devices it is
    ``fp32``); ``bf16`` autocasts matrix products and convolutions to bfloat16 (losses and reductions stay
    float32). Global flags are restored afterwards."""
    check_precision(name)
    device = torch.device(device)
    if name == "bf16":
        # no cast cache: within one block a training loop updates its weights, and a cached bf16 copy of the
        # first step's weights would be used for every forward pass (training that never moves)
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
        return
    if name == "fp32" or device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


__all__ = ["POLICY", "PRECISIONS", "check_precision", "precision"]
