"""How ddnb's training steps launch their kernels: as written, or compiled into fewer, larger ones.

``compiled(fn)`` wraps a pure tensor function (tensors and dicts of tensors in and out, or a network and tensors in)
so that each call runs it as the current ``kernels`` setting says:

- ``eager`` (the default): ``fn`` itself, one kernel per operation: results bit for bit as before.
- ``compile``: ``torch.compile`` (inductor) fuses the small elementwise and reduction kernels (the instance
  norm's statistics, ReLU, pooling, the loss) into fewer, larger ones: the same numbers to float rounding.
- ``graphs``: ``compile`` whose step is also replayed as one CUDA graph (``mode="reduce-overhead"``), one launch
  per step where small kernels leave a GPU idle; on a CPU it is ``compile``.

A compilation that fails (no C++ compiler, an operation the compiler cannot trace) warns once and the function
runs as written from then on: the choice of kernels changes how fast a result comes and its float rounding, never
what is computed, so it stays out of store keys (as the device does). The setting comes from ``with
kernels(name):``, else ``$DDNB_KERNELS`` (so that subprocesses and Ray workers started with it follow it), else
``eager``. Which is fastest is measured per device by ``benchmarks/kernels_speed.py`` (one network's training) and
``benchmarks/influence_speed.py --kernels`` (stacked training). Imports nothing above it.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

import torch

from ddnb.errors import DdnbError

KERNELS = ("eager", "compile", "graphs")
_COMPILE_MODES = {"compile": "default", "graphs": "reduce-overhead"}
_chosen: ContextVar[str | None] = ContextVar("ddnb_kernels", default=None)


def check_kernels(name: str) -> str:
    """``name`` when it is one of ``KERNELS``, else a ``DdnbError`` naming them."""
    if name not in KERNELS:
        raise DdnbError(f"unknown kernels {name!r}; choose one of {', '.join(KERNELS)}")
    return name


def current_kernels() -> str:
    """The setting in force: the innermost ``kernels`` block, else ``$DDNB_KERNELS``, else ``eager``."""
    chosen = _chosen.get()
    if chosen is None:
        chosen = os.environ.get("DDNB_KERNELS") or "eager"
        try:
            check_kernels(chosen)
        except DdnbError as error:
            raise DdnbError(f"DDNB_KERNELS: {error}") from None
    return chosen


@contextmanager
def kernels(name: str) -> Iterator[None]:
    """Run the block's ``compiled`` functions with kernels ``name`` (one of ``KERNELS``)."""
    token = _chosen.set(check_kernels(name))
    try:
        yield
    finally:
        _chosen.reset(token)


class Compiled:
    """``fn`` run eager or compiled as ``current_kernels()`` says; each compiled form is made on its first call."""

    def __init__(self, fn: Callable[..., Any], dynamic: bool | None = False):
        self.fn, self.dynamic = fn, dynamic
        self._forms: dict[str, Callable[..., Any]] = {}
        self._failed: set[str] = set()

    def __call__(self, *args: Any) -> Any:
        name = current_kernels()
        if name == "eager" or name in self._failed:
            return self.fn(*args)
        if name not in self._forms:
            self._forms[name] = torch.compile(self.fn, mode=_COMPILE_MODES[name], dynamic=self.dynamic)
        try:
            outputs = self._forms[name](*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure; a fault of fn itself recurs eagerly below
            self._failed.add(name)
            warnings.warn(f"ddnb kernels {name!r}: compiling {getattr(self.fn, '__name__', 'a step')} failed "
                          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); running it as written",
                          RuntimeWarning, stacklevel=2)
            return self.fn(*args)
        if name == "graphs":  # a CUDA graph's outputs live in its pool and are overwritten by the next replay
            outputs = _cloned(outputs)
        return outputs


def _cloned(value: Any) -> Any:
    """``value`` with every tensor inside tuples, lists and dicts copied."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_cloned(item) for item in value)
    if isinstance(value, dict):
        return {key: _cloned(item) for key, item in value.items()}
    return value


def compiled(fn: Callable[..., Any], dynamic: bool | None = False) -> Compiled:
    """``fn`` (a pure function of tensors, or of a network and tensors) run with the kernels in force at each call.
    ``dynamic``: ``False`` compiles one form per input shape (for steps whose shapes never change); ``None`` lets
    ``torch.compile`` make a shape symbolic once it has seen it change (for steps on sets of many sizes)."""
    return Compiled(fn, dynamic)


__all__ = ["KERNELS", "Compiled", "check_kernels", "compiled", "current_kernels", "kernels"]
