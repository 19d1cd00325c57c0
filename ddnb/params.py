"""A network's trainable parameters as named tensors and as one flat vector.

The flat layout is ``named_parameters`` order, trainable parameters only: P scalars. Curvature (Hessian-vector
products, Lanczos) and influence (inverse-HVPs, per-image gradients) both work in it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn


def trainable_parameters(net: nn.Module) -> dict[str, torch.Tensor]:
    """name -> parameter for every trainable parameter, in ``named_parameters`` order (the flat layout)."""
    return {name: p for name, p in net.named_parameters() if p.requires_grad}


def detached_parameters(net: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters: a functional state for ``torch.func.functional_call``."""
    return {name: p.detach().clone() for name, p in trainable_parameters(net).items()}


def parameter_count(net: nn.Module) -> int:
    """P, the number of trainable scalars (the length of every flat vector)."""
    return sum(p.numel() for p in trainable_parameters(net).values())


def flatten(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """Named or listed tensors [*B, ...] (in the flat layout's order) -> one tensor [*B, P].
    ``batch_dims``: leading dimensions shared by every tensor (e.g. 1 for per-image gradients [N, ...])."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return torch.cat([t.flatten(batch_dims) for t in values], dim=-1)


def unflatten(vector: torch.Tensor, like: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A flat vector [P] -> views named and shaped like ``like`` (a network's trainable parameters, or a dict)."""
    shapes = trainable_parameters(like) if isinstance(like, nn.Module) else like
    pieces = vector.split([t.numel() for t in shapes.values()])
    return {name: piece.view_as(t) for (name, t), piece in zip(shapes.items(), pieces)}
