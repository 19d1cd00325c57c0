"""Keep the memory PyTorch frees in the process heap instead of handing it back to the kernel.

By default glibc serves large blocks (activations of a CIFAR-10 batch are hundreds of MB) with mmap and
unmaps them on free, so the next step's tensors fault their pages back in, each one zeroed by the kernel.
In a CIFAR-10 gradient-matching run on 2 cores that was 40 % of all CPU time (943 million page faults in
53 minutes). With mmap off and no trimming, freed blocks are reused: ``benchmarks/memory_reuse.py`` measured
a GM step 1.55x and a DM step 2.0x faster, for 0.5-2.2 GB more resident memory (benchmarks/README.md).

``import ddnb`` applies this once on glibc systems; ``DDNB_KEEP_FREED_MEMORY=0`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, glibc malloc.h


def keep_freed_memory() -> bool:
    """Turn off mmap'd allocations and heap trimming in glibc's malloc; True if applied."""
    if os.environ.get("DDNB_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to do
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
