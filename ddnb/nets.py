"""Networks of the paper: the ConvNet family used by every distiller, and CIFAR-stem ResNets.

All networks are plain ``nn.Module``s whose state lives in ``named_parameters``/``named_buffers``,
so distillers can unroll training on explicit tensors with ``torch.func.functional_call``.
``build_net`` is the one entry point; it seeds initialisation explicitly so the same seed always
gives the same weights (the authors' code reseeded from the wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ddnb.errors import DdnbError

NORMS = ("instance", "batch", "layer", "none")
POOLS = ("avg", "max", "none")
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class ConvNetConfig:
    """Shape of a ConvNet: ``depth`` blocks of conv3x3 -> norm -> activation -> pool, then a linear head."""

    width: int = field(default=128, metadata={"help": "channels of every conv layer"})
    depth: int = field(default=3, metadata={"help": "number of conv blocks"})
    norm: str = field(default="instance", metadata={"help": "instance (GroupNorm(C, C)), batch, layer (GroupNorm(1, C)) or none"})
    pool: str = field(default="avg", metadata={"help": "2x2 pooling after each block: avg, max or none"})
    activation: str = field(default="relu", metadata={"help": "relu, leaky_relu or gelu"})


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instance":  # per-image, per-channel statistics with affine, as in the DC/DM/MTT code
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise DdnbError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def _pool_layer(pool: str) -> nn.Module:
    if pool == "avg":
        return nn.AvgPool2d(2)
    if pool == "max":
        return nn.MaxPool2d(2)
    if pool == "none":
        return nn.Identity()
    raise DdnbError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}")


class ConvNet(nn.Module):
    """The ConvNet of the distillation literature. Input [N, C, H, W] -> logits [N, classes].

    ``features(x)`` returns the flattened penultimate features [N, width * (H/2^depth) * (W/2^depth)].
    """

    def __init__(self, config: ConvNetConfig, channels: int = 3, image_size: int = 32, num_classes: int = 10):
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise DdnbError(f"unknown activation {config.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        size = image_size
        for block in range(config.depth):
            layers += [
                nn.Conv2d(channels if block == 0 else config.width, config.width, 3, padding=1),
                _norm_layer(config.norm, config.width),
                ACTIVATIONS[config.activation](),
                _pool_layer(config.pool),
            ]
            size = size // 2 if config.pool != "none" else size
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = config.width * size * size
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a projection shortcut when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.norm1 = _norm_layer(norm, outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.norm2 = _norm_layer(norm, outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), _norm_layer(norm, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with the CIFAR stem (3x3 conv1, stride 1, no max-pool). Input [N, C, H, W] -> logits."""

    def __init__(self, blocks: tuple[int, ...], channels: int = 3, num_classes: int = 10, norm: str = "batch"):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), _norm_layer(norm, 64), nn.ReLU())
        stages, inputs = [], 64
        for stage, count in enumerate(blocks):
            outputs = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(BasicBlock(inputs, outputs, stride, norm))
                inputs = outputs
        # the stem is registered once, inside the body: a second name for it would alias tensors in the state
        # dict, which safetensors refuses to save (a trained ResNet would be lost at the end of its job)
        self.body = nn.Sequential(stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = inputs
        self.head = nn.Linear(inputs, num_classes)

    @property
    def stem(self) -> nn.Sequential:
        """The CIFAR stem: 3x3 convolution, norm, ReLU."""
        return self.body[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 512]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# Named presets. "convnet" is the paper's (320,010 parameters on 32x32x3, 10 classes).
CONVNETS = {
    "convnet": ConvNetConfig(),
    "convnet-tiny": ConvNetConfig(width=16),
    "convnet-bn": ConvNetConfig(norm="batch"),
}
RESNETS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
NET_NAMES = tuple(CONVNETS) + tuple(RESNETS)


def build_net(
    name: str = "convnet",
    seed: int = 0,
    channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    device: torch.device | str = "cpu",
    **overrides: object,
) -> nn.Module:
    """Build a named network with weights drawn from ``seed`` (global RNG state is left untouched).

    ``overrides`` change ConvNet fields (e.g. ``width=64, norm="batch"``) or the ResNet ``norm``.
    Initialisation happens on the CPU, then the module moves to ``device``, so the same seed gives
    the same weights on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in CONVNETS:
            net: nn.Module = ConvNet(replace(CONVNETS[name], **overrides), channels, image_size, num_classes)
        elif name in RESNETS:
            net = ResNet(RESNETS[name], channels, num_classes, **overrides)  # type: ignore[arg-type]
        else:
            raise DdnbError(f"unknown network {name!r}; choose one of {', '.join(NET_NAMES)}")
    return net.to(device)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def reinitialise(net: nn.Module, generator: torch.Generator) -> None:
    """Draw fresh weights for ``net`` in place from ``generator`` (no rebuild, no global RNG change).

    Weights are drawn on the parameters' device, so the same generator state gives the same weights on
    the same device (a GPU's stream differs from the CPU's).
    """
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    device = next(net.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # seeds the CPU and every GPU generator inside the fork
        for module in net.modules():
            if module is not net and hasattr(module, "reset_parameters"):
                module.reset_parameters()
