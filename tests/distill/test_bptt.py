import pytest
import torch

from ddnb.distill.bptt import BPTTOptions, TruncatedBPTT, adam_step
from ddnb.distill.loop import RealSampler, make_synthetic
from ddnb.errors import DdnbError


def test_functional_adam_matches_torch_adam():
    generator = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(5, 3, generator=generator), "b": torch.randn(3, generator=generator)}
    target = torch.randn(5, 3, generator=generator)
    reference = {k: v.clone().requires_grad_() for k, v in start.items()}
    optimizer = torch.optim.Adam(reference.values(), lr=0.01)
    params, moments = dict(start), {}
    for step in range(1, 6):
        loss = ((reference["w"] - target) ** 2).sum() + reference["b"].pow(3).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        ours = ((params["w"] - target) ** 2).sum() + params["b"].pow(3).sum()
        params, moments = adam_step(params, torch.autograd.grad(ours, list(params.values())), moments, step, 0.01)
    for name in start:
        assert torch.allclose(params[name], reference[name], atol=1e-6)


def test_meta_gradient_reaches_images_and_is_clipped(shapes_small):
    generator = torch.Generator().manual_seed(0)
    options = BPTTOptions(window=2, unroll=4, real_batch=32, net="convnet-tiny", clip_factor=1.5)
    synthetic = make_synthetic(shapes_small, 1, "real", options.lr_images, generator, optimizer="adam")
    method, real = TruncatedBPTT(options), RealSampler(shapes_small)
    method.prepare(synthetic, real, generator)
    before = synthetic.images.detach().clone()
    method.step(synthetic, real, generator)
    assert not torch.equal(before, synthetic.images.detach())
    first_norm = float(synthetic.state["grad_norm_mean"])
    assert first_norm > 0
    synthetic.state["grad_norm_mean"] = torch.tensor(first_norm / 100)  # pretend past gradients were tiny
    method.step(synthetic, real, generator)
    assert float(synthetic.images.grad.norm()) == pytest.approx(1.5 * first_norm / 100, rel=1e-4)


def test_window_longer_than_unroll_is_refused():
    with pytest.raises(DdnbError, match="window"):
        TruncatedBPTT(BPTTOptions(window=10, unroll=5))
