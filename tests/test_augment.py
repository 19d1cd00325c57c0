"""Tests of ddnb.augment: reproducible draws, siamese sharing, per-op semantics and gradients."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch

from ddnb.augment import OPS, DSAConfig, DSAParams, apply, augment, draw_params


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, size: int = 16, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=gen(seed), dtype=dtype)


def one_op(op: str, **knobs) -> DSAConfig:
    return DSAConfig(strategy=op, **knobs)


def select(params: DSAParams, i: int) -> DSAParams:
    """The draw of image i alone, as a batch of one."""
    return replace(params, **{f.name: getattr(params, f.name)[i : i + 1] for f in fields(params)
                              if isinstance(getattr(params, f.name), torch.Tensor)})


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., r, c] = x[..., r + dy, c + dx], zero where that falls outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = \
        x[..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
    return out


@pytest.mark.parametrize("strategy", ["color_blur", "", "crop__flip", "crop_crop"])
def test_invalid_strategy_raises(strategy):
    with pytest.raises(ValueError, match="op"):
        DSAConfig(strategy=strategy)


def test_unknown_op_message_names_valid_ops():
    with pytest.raises(ValueError, match="color, crop, cutout, flip, scale, rotate"):
        DSAConfig(strategy="color_blur")
    with pytest.raises(ValueError, match="mode"):
        DSAConfig(mode="sometimes")


@pytest.mark.parametrize("strategy", list(OPS) + ["color_crop_cutout_flip_scale_rotate"])
def test_shared_draw_is_siamese_across_batch_sizes(strategy):
    x = images(8)
    params = draw_params(DSAConfig(strategy=strategy, mode="multiple"), 8, gen(3), shared=True)
    out = apply(x, params)
    assert torch.equal(out, apply(x, params))  # a draw is deterministic
    torch.testing.assert_close(apply(x[:3], params), out[:3], rtol=0, atol=1e-6)
    same = apply(x[:1].expand(5, -1, -1, -1), params)  # one image five times: five equal outputs
    torch.testing.assert_close(same, same[:1].expand_as(same), rtol=0, atol=1e-6)


def test_same_seed_same_draw_different_seed_different_draw():
    config = DSAConfig(mode="multiple")
    a, b, c = (draw_params(config, 4, gen(seed), shared=False) for seed in (7, 7, 8))
    for name in ("brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.scale, c.scale) and not torch.equal(a.rotate, c.rotate)
    x = images(4)
    assert torch.equal(augment(x, gen(5)), augment(x, gen(5)))
    assert not torch.equal(augment(x, gen(5)), augment(x, gen(6)))


def test_draws_leave_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    augment(images(4), gen(0), DSAConfig(mode="multiple"))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", OPS)
def test_gradient_reaches_input(op, dtype):
    x = images(4, dtype=dtype).requires_grad_()
    weights = torch.randn(4, 3, 16, 16, generator=gen(2), dtype=dtype)
    (augment(x, gen(0), one_op(op, flip_prob=1.0)) * weights).sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    params = draw_params(one_op(op, flip_prob=1.0), 2, gen(4), shared=False)
    x = images(2, size=6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: apply(t, params), (x,))


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_the_image(op):
    x = images(4)
    out = augment(x, gen(0), one_op(op, flip_prob=1.0), shared=True)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - x).abs().amax() > 0.1


def test_flip_with_probability_one_mirrors_width():
    x = images(4)
    assert torch.equal(augment(x, gen(0), one_op("flip", flip_prob=1.0)), x.flip(-1))
    assert torch.equal(augment(x, gen(0), one_op("flip", flip_prob=0.0)), x)


@pytest.mark.parametrize("strategy", ["scale", "rotate", "scale_rotate"])
def test_unit_scale_and_zero_rotation_are_identity(strategy):
    x = images(4, size=15)
    config = DSAConfig(strategy=strategy, mode="multiple", scale=1.0, rotate_deg=0.0)
    torch.testing.assert_close(augment(x, gen(0), config), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["scale", "rotate", "scale_rotate", "rotate_scale"])
def test_affine_ops_follow_reference_matrices(strategy):
    # Channels hold each pixel's normalised (x, y) coordinate; bilinear sampling reproduces such a
    # linear image exactly, so inside the image the output is the sampling matrix times (x, y):
    # scale diag(sx, sy), rotate [[cos, -sin], [sin, cos]], fused in strategy order (one resampling).
    u = torch.linspace(-1, 1, 33, dtype=torch.float64)
    x = torch.stack(torch.meshgrid(u, u, indexing="xy"))[None]  # [1, 2, H, W]: (x, y)
    params = draw_params(DSAConfig(strategy=strategy, mode="multiple"), 1, gen(9))
    m = torch.eye(2, dtype=torch.float64)
    for op in params.ops:
        if op == "scale":
            m = m @ torch.diag(params.scale[0].double())
        else:
            cos, sin = math.cos(params.rotate), math.sin(params.rotate)
            m = m @ torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    expected = torch.einsum("ij,jhw->ihw", m, x[0])
    torch.testing.assert_close(apply(x, params)[0, :, 10:23, 10:23], expected[:, 10:23, 10:23])


def test_crop_is_zero_filled_integer_translation():
    x = images(6, size=16)
    params = draw_params(one_op("crop"), 6, gen(0), shared=False)
    out = apply(x, params)
    assert out.shape == x.shape
    shifts = (params.crop * 5).long() - 2  # pad = round(16 * 0.125) = 2, shifts in [-2, 2]
    for i in range(6):
        torch.testing.assert_close(out[i], translate(x[i], int(shifts[i, 0]), int(shifts[i, 1])), rtol=0, atol=0)
    assert len({tuple(s) for s in shifts.tolist()}) > 1


def test_cutout_zeroes_the_expected_square():
    x = images(1, size=32)
    centred = replace(draw_params(one_op("cutout"), 1, gen(0)), cutout=torch.tensor([[0.5, 0.5]]))
    zeroed = (apply(x, centred) == 0).all(dim=1)[0]
    assert zeroed.sum() == 16 * 16 and zeroed[8:24, 8:24].all()  # side round(0.5 * 32), centre 16
    for seed in range(5):  # random centres: the square is clipped at the border
        params = draw_params(one_op("cutout"), 1, gen(seed))
        start = (params.cutout[0] * 33).long() - 8
        rows, cols = (min(int(s) + 16, 32) - max(int(s), 0) for s in start)
        assert (apply(x, params) == 0).all(dim=1).sum() == rows * cols


def test_cutout_fraction_on_average():
    x = images(512, size=32)
    zeroed = (augment(x, gen(0), one_op("cutout")) == 0).all(dim=1).float().mean()
    # A 16-pixel span centred uniformly on 0..32 covers min(c + 8, 32) - max(c - 8, 0) pixels per axis.
    side = sum(min(c + 8, 32) - max(c - 8, 0) for c in range(33)) / 33 / 32
    assert abs(zeroed.item() - side**2) < 0.01


def test_color_matches_reference_steps():
    x = images(4, dtype=torch.float64)
    p = draw_params(one_op("color"), 4, gen(0), shared=False)
    b, s, k = (v.double().view(-1, 1, 1, 1) for v in (p.brightness, p.saturation, p.contrast))
    y = x + b
    y = (y - y.mean(1, keepdim=True)) * s + y.mean(1, keepdim=True)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * k + y.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(apply(x, p), y)
    assert ((p.contrast >= 0.5) & (p.contrast < 1.5)).all() and ((p.brightness.abs() <= 0.5)).all()


@pytest.mark.parametrize("op", OPS)
def test_per_image_draws_differ_and_match_one_by_one(op):
    x = images(1).expand(8, -1, -1, -1)  # one image, eight copies
    params = draw_params(one_op(op), 8, gen(0), shared=False)
    out = apply(x, params)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 1
    for i in range(8):  # the vectorised batch equals applying each image's draw alone
        torch.testing.assert_close(out[i : i + 1], apply(x[i : i + 1], select(params, i)), rtol=0, atol=1e-6)


def test_single_mode_picks_one_op_and_uses_all():
    config = DSAConfig()
    g = gen(0)
    chosen = [draw_params(config, 2, g).ops for _ in range(200)]
    assert all(len(ops) == 1 for ops in chosen)
    assert {ops[0] for ops in chosen} == set(OPS)
    assert draw_params(replace(config, mode="multiple"), 2, g).ops == OPS


def test_draw_for_wrong_batch_size_raises():
    params = draw_params(DSAConfig(mode="multiple"), 4, gen(0), shared=False)
    with pytest.raises(ValueError, match="batch"):
        apply(images(3), params)


def test_rotation_angle_in_range():
    params = draw_params(one_op("rotate"), 1000, gen(0), shared=False)
    assert params.rotate.abs().max() <= math.radians(15) and params.rotate.abs().max() > math.radians(14)
    scales = draw_params(one_op("scale"), 1000, gen(0), shared=False).scale
    assert scales.min() >= 1 / 1.2 and scales.max() <= 1.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    x = images(8)
    config = DSAConfig(mode="multiple")
    cpu = augment(x, gen(0), config)
    cuda = augment(x.cuda(), gen(0), config)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)


def test_repeat_per_group_gives_each_group_its_own_shared_draw():
    from ddnb.augment import repeat_per_group

    config = DSAConfig(mode="multiple")
    draw = draw_params(config, 3, gen(4), shared=False)
    x = images(12)
    out = apply(x, repeat_per_group(draw, 4))
    for group in range(3):
        expected = apply(x[4 * group : 4 * group + 4], select(draw, group))
        assert torch.allclose(out[4 * group : 4 * group + 4], expected, atol=1e-6)
    assert not torch.allclose(out[:4], apply(x[:4], select(draw, 1)), atol=1e-3)
