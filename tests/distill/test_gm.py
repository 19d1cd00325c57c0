import torch
import torch.nn.functional as F

from ddnb.distill.gm import GMOptions, GradientMatching, gradient_distance
from ddnb.nets import build_net


def _reference_distance(real, syn):
    """DC's distance_wb loop: per class and per parameter, skipping 1-D ones."""
    total = 0.0
    for c in range(next(iter(real.values())).shape[0]):
        for name in real:
            a, b = real[name][c], syn[name][c]
            if a.dim() == 1:
                continue
            a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
            total += torch.sum(1 - torch.sum(a * b, -1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6))
    return total


def test_vmapped_per_class_gradients_equal_a_loop_over_classes():
    method = GradientMatching(GMOptions(net="convnet-tiny"))
    method.net = build_net("convnet-tiny", seed=0)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(3 * 4, 3, 32, 32, generator=generator), torch.arange(3).repeat_interleave(4)
    params = {k: v.detach() for k, v in method.net.named_parameters()}
    batched = method._per_class_gradients(params, images, labels, classes=3)
    for c in range(3):
        loss = F.cross_entropy(method.net(images[4 * c : 4 * c + 4]), labels[4 * c : 4 * c + 4])
        looped = torch.autograd.grad(loss, list(method.net.parameters()))
        for (name, _), g in zip(method.net.named_parameters(), looped):
            assert torch.allclose(batched[name][c], g, atol=1e-5, rtol=1e-4), name


def test_gradient_distance_matches_the_reference_and_its_extremes():
    generator = torch.Generator().manual_seed(1)
    real = {"conv.weight": torch.randn(2, 4, 3, 3, 3, generator=generator), "fc.weight": torch.randn(2, 5, 7, generator=generator),
            "conv.bias": torch.randn(2, 4, generator=generator)}
    syn = {k: torch.randn(v.shape, generator=generator) for k, v in real.items()}
    assert torch.allclose(gradient_distance(real, syn), _reference_distance(real, syn), atol=1e-5)
    assert gradient_distance(real, real).abs() < 1e-4  # identical gradients: 0
    opposite = {k: -v for k, v in real.items()}
    assert torch.allclose(gradient_distance(real, opposite), torch.tensor(2.0 * 2 * (4 + 5)), atol=1e-3)  # 2 per row


def test_matching_gradient_reaches_the_synthetic_images():
    method = GradientMatching(GMOptions(net="convnet-tiny", real_per_class=4))
    method.net = build_net("convnet-tiny")
    generator = torch.Generator().manual_seed(0)
    real, syn = torch.randn(8, 3, 32, 32, generator=generator), torch.randn(4, 3, 32, 32, generator=generator, requires_grad=True)
    labels_real, labels_syn = torch.arange(2).repeat_interleave(4), torch.arange(2).repeat_interleave(2)
    params = {k: v.detach() for k, v in method.net.named_parameters()}
    g_real = method._per_class_gradients(params, real, labels_real, 2)
    loss = gradient_distance(g_real, method._per_class_gradients(params, syn, labels_syn, 2))
    (image_grad,) = torch.autograd.grad(loss, syn)
    assert torch.isfinite(image_grad).all() and image_grad.abs().sum() > 0
