"""ddnb.kernels: compiled stacked training gives the eager tensors to float rounding, a failed compilation falls
back to the eager tensors bit for bit, and a bad setting is one clear error."""

import warnings

import pytest
import torch

import ddnb.kernels
import ddnb.stacked
from ddnb.errors import DdnbError
from ddnb.kernels import current_kernels, kernels
from ddnb.nets import build_net
from ddnb.stacked import stack, train_stacked
from ddnb.train import get_protocol, train


def _train(shapes_small, name: str, device: str = "cpu") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Two ConvNet-Tiny networks, 3 full-batch paper300 steps on 40 images (image 3 left out of the first)."""
    images, labels = shapes_small.train.images[:40].to(device), shapes_small.train.labels[:40].to(device)
    stacked = stack([build_net("convnet-tiny", seed=seed, device=device) for seed in (0, 1)])
    weights = torch.ones(2, 40, device=device)
    weights[0, 3] = 0
    with kernels(name):
        result = train_stacked(stacked, images, labels, get_protocol("paper300", steps=3), [0, 1], weights=weights, backend="vmap")
    return {key: value.cpu() for key, value in stacked.params.items()}, result.losses


def _assert_close(a, b, tolerance: float) -> None:
    params_a, losses_a = a
    params_b, losses_b = b
    for name in params_a:
        torch.testing.assert_close(params_a[name], params_b[name], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(losses_a, losses_b, atol=tolerance, rtol=tolerance)


def test_compiled_training_gives_the_eager_tensors(shapes_small):
    eager = _train(shapes_small, "eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would pass for the wrong reason
        compiled = _train(shapes_small, "compile")
    _assert_close(compiled, eager, 1e-5)


def test_compiled_single_network_training_gives_the_eager_tensors(shapes_small):
    """``ddnb.train.train`` (the CPU's loop backend, real-trained networks, pools): batches of 16 and a last one of
    8, so the compiled step meets a changed shape; a second network reuses the compiled form."""
    images, labels = shapes_small.train.images[:40], shapes_small.train.labels[:40]
    protocol = get_protocol("real", epochs=1, batch_size=16)
    trained = {}
    for name in ("eager", "compile"):
        with warnings.catch_warnings(), kernels(name):
            warnings.simplefilter("error", RuntimeWarning)
            nets = [build_net("convnet-tiny", seed=seed) for seed in (0, 1)]
            losses = [train(net, images, labels, protocol, seed=seed).losses for seed, net in enumerate(nets)]
        trained[name] = ([net.state_dict() for net in nets], losses)
    for eager, compiled in zip(*(trained[name][0] for name in ("eager", "compile"))):
        for key in eager:
            torch.testing.assert_close(compiled[key], eager[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trained["compile"][1], trained["eager"][1], atol=1e-5, rtol=1e-5)


def test_a_failed_compilation_warns_and_runs_as_written(shapes_small, monkeypatch):
    def broken_compile(fn, **options):
        def refuse(*args):
            raise RuntimeError("no compiler here\nsecond line")
        return refuse

    monkeypatch.setattr(ddnb.kernels.torch, "compile", broken_compile)
    eager = _train(shapes_small, "eager")
    monkeypatch.setattr(ddnb.stacked, "_compiled_gradients_and_losses", ddnb.kernels.compiled(ddnb.stacked._gradients_and_losses))
    with pytest.warns(RuntimeWarning, match=r"compiling _gradients_and_losses failed \(RuntimeError: no compiler here\); running it as written"):
        fallen_back = _train(shapes_small, "graphs")
    for name in eager[0]:
        assert torch.equal(fallen_back[0][name], eager[0][name])
    assert torch.equal(fallen_back[1], eager[1])


def test_the_setting_comes_from_the_block_then_the_environment(monkeypatch):
    monkeypatch.delenv("DDNB_KERNELS", raising=False)
    assert current_kernels() == "eager"
    monkeypatch.setenv("DDNB_KERNELS", "compile")
    assert current_kernels() == "compile"
    with kernels("graphs"):
        assert current_kernels() == "graphs"
    assert current_kernels() == "compile"
    monkeypatch.setenv("DDNB_KERNELS", "fast")
    with pytest.raises(DdnbError, match="DDNB_KERNELS: unknown kernels 'fast'; choose one of eager, compile, graphs"):
        current_kernels()
    with pytest.raises(DdnbError, match="unknown kernels"):
        with kernels("turbo"):
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu.sh runs it)")
@pytest.mark.parametrize("name", ["compile", "graphs"])
def test_cuda_compiled_training_gives_the_eager_tensors(shapes_small, name):
    _assert_close(_train(shapes_small, name, "cuda"), _train(shapes_small, "eager", "cuda"), 1e-4)
