"""Memory of the unrolled, differentiable training inside MTT (the student) and BPTT (the window).

Each unrolled step keeps the activations of its forward and backward pass for the meta-gradient, so
memory grows linearly with the number of steps (RaT-BPTT's window of 60 at CIFAR-10 IPC 10: 29 GB on an
H200). With ``recompute`` each step keeps only its inputs (the parameters, a few MB) and runs again in
the backward pass (``torch.utils.checkpoint``, non-reentrant, which allows the step's own
``autograd.grad(create_graph=True)``): peak memory is about one step's graph, for one more forward and
backward pass per step. A step's randomness (augmentation, batch order) is drawn outside it, so the rerun
sees the same draws: BPTT's set is the same bits, MTT's the same to float rounding (tested).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import psutil
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

State = TypeVar("State")
# bytes an unrolled step keeps per activation value of its forward pass: measured about 300 MB per step
# for 100 CIFAR-10 images through the ConvNet (552,960 activation values per image, 2.2 MB): a factor 1.36;
# 2 leaves room for the optimiser state and the allocator's slack
GRAPH_BYTES_PER_ACTIVATION = 2 * 4
# recompute when the unrolled graph would take more than this share of the free memory
FREE_MEMORY_SHARE = 0.5


def activation_values(net: nn.Module, images: torch.Tensor) -> int:
    """Values every leaf module of ``net`` outputs for ``images`` [N, C, H, W], summed (one forward in eval mode, no
    graph; the network is left as it was)."""
    total = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel()

    leaves = [module for module in net.modules() if not list(module.children())]
    handles = [module.register_forward_hook(count) for module in leaves]
    training = net.training
    net.eval()  # a batch norm's running statistics stay as they were
    try:
        with torch.no_grad():
            net(images)
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    return total


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: the CUDA allocator's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def choose_recompute(choice: bool | None, steps: int, net: nn.Module, batch: torch.Tensor) -> bool:
    """Whether ``steps`` unrolled steps on ``batch`` [N, C, H, W] recompute in the backward pass: ``choice`` when set,
    else True when their estimated graph exceeds ``FREE_MEMORY_SHARE`` of the device's free memory."""
    if choice is not None:
        return choice
    graph_bytes = steps * activation_values(net, batch) * GRAPH_BYTES_PER_ACTIVATION
    return graph_bytes > FREE_MEMORY_SHARE * free_memory(batch.device)


def unrolled_step(step: Callable[..., State], recompute: bool, *inputs: object) -> State:
    """``step(*inputs)``, keeping only ``inputs`` for the backward pass when ``recompute`` (then ``step`` must be a
    pure function of them: no random draws inside)."""
    if recompute:
        return checkpoint(step, *inputs, use_reentrant=False)
    return step(*inputs)
