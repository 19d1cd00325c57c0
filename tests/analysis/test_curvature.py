"""Curvature: HVPs, trace and top eigenvalues against an exact Hessian of a small ConvNet (float64)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ddnb.analysis.curvature import (
    hessian_vector_products,
    hutchinson_trace,
    naive_hutchinson_trace,
    rademacher_probes,
    sample_batches,
    sampled_hutchinson_trace,
    top_eigenvalues,
    trace_curve,
    training_trace_curve,
)
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.params import flatten, parameter_count, unflatten
from ddnb.train import Protocol, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run thousands of tiny double-backwards: a second thread only adds waiting (20x on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """The paper's ConvNet family (conv, GroupNorm, ReLU, avg-pool, linear) shrunk to 171 parameters."""
    return build_net("convnet", seed, channels=3, image_size=4, num_classes=3, width=4, depth=1).to(dtype)


def _data(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=generator).to(dtype), torch.randint(3, (n,), generator=generator)


def _exact_hessian(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """H [P, P] of the mean loss from torch.autograd.functional.hessian (independent of our code)."""

    def loss(flat):
        return F.cross_entropy(functional_call(net, unflatten(flat, net), (images,)), labels)

    flat = flatten(dict(net.named_parameters())).detach()
    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


@pytest.fixture(scope="module")
def exact():
    """(net, images, labels, H) on 64 images."""
    net, (images, labels) = _small_net(), _data(64)
    return net, images, labels, _exact_hessian(net, images, labels)


@pytest.fixture(scope="module")
def exact_256():
    """(net, images, labels, H) on 256 images: a "large" set for the doubly stochastic estimator."""
    net, (images, labels) = _small_net(seed=1), _data(256, seed=8)
    return net, images, labels, _exact_hessian(net, images, labels)


def test_hvp_equals_exact_hessian_and_hessian_is_symmetric(exact):
    net, images, labels, hessian = exact
    assert parameter_count(net) == hessian.shape[0] == 171
    vectors = torch.randn(5, 171, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(hessian_vector_products(net, images, labels, vectors, 64), vectors @ hessian, atol=1e-10, rtol=0)
    columns = hessian_vector_products(net, images, labels, torch.eye(171, dtype=torch.float64), 64)
    torch.testing.assert_close(columns, hessian, atol=1e-10, rtol=0)
    torch.testing.assert_close(hessian, hessian.T, atol=1e-12, rtol=0)


def test_batched_equals_unbatched_and_vectors_may_be_dicts(exact):
    net, images, labels, _ = exact
    vectors = torch.randn(3, 171, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    whole = hessian_vector_products(net, images, labels, vectors, batch_size=64)
    torch.testing.assert_close(hessian_vector_products(net, images, labels, vectors, batch_size=7), whole, atol=1e-12, rtol=0)
    vmapped = hessian_vector_products(net, images, labels, vectors, batch_size=64, vectors_per_call=2)
    torch.testing.assert_close(vmapped, whole, atol=1e-12, rtol=0)
    as_dicts = [unflatten(v, net) for v in vectors]
    torch.testing.assert_close(hessian_vector_products(net, images, labels, as_dicts, batch_size=64), whole, atol=0, rtol=0)
    soft = F.one_hot(labels, 3).double() * 0.7 + 0.1  # soft targets [N, classes], as some distilled sets have
    torch.testing.assert_close(hessian_vector_products(net, images, soft, vectors, batch_size=7),
                               hessian_vector_products(net, images, soft, vectors, batch_size=64), atol=1e-12, rtol=0)
    single = hessian_vector_products(net, images, labels, vectors[0], batch_size=64)
    assert single.shape == (1, 171)
    with pytest.raises(DdnbError, match="171 parameters"):
        hessian_vector_products(net, images, labels, torch.ones(2, 300), batch_size=64)


def test_top_eigenvalues_match_eigvalsh(exact):
    net, images, labels, hessian = exact
    reference = torch.linalg.eigvalsh(hessian).flip(0)[:3]
    eigen = top_eigenvalues(net, images, labels, k=3, steps=40, seed=0, batch_size=32, eigenvectors=True)
    assert eigen.values.shape == (3,) and eigen.steps == 40
    assert ((eigen.values - reference).abs() / reference.abs()).max() < 1e-4
    residual = eigen.vectors @ hessian - eigen.values[:, None] * eigen.vectors
    assert residual.norm(dim=1).max() < 1e-3 * reference[0]
    again = top_eigenvalues(net, images, labels, k=3, steps=40, seed=0, batch_size=32)
    assert torch.equal(again.values, eigen.values) and again.vectors is None


def test_hutchinson_trace_within_three_standard_errors(exact):
    net, images, labels, hessian = exact
    estimate = hutchinson_trace(net, images, labels, probes=256, seed=0, batch_size=64)
    assert abs(estimate.estimate - hessian.trace()) < 3 * estimate.stderr
    probes = rademacher_probes(256, 171, seed=0, dtype=torch.float64)
    torch.testing.assert_close(estimate.values, ((probes @ hessian) * probes).sum(1), atol=1e-10, rtol=0)
    assert estimate.stderr == pytest.approx(float(estimate.values.std()) / 16, rel=1e-12)


def test_same_seed_same_probes_same_estimate(exact):
    net, images, labels, _ = exact
    probes = rademacher_probes(8, 171, seed=5)
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(probes, rademacher_probes(8, 171, seed=5)) and torch.equal(probes[:3], rademacher_probes(3, 171, seed=5))
    assert not torch.equal(probes, rademacher_probes(8, 171, seed=6))
    first, second = (hutchinson_trace(net, images, labels, probes=8, seed=5) for _ in range(2))
    assert torch.equal(first.values, second.values) and first.estimate == second.estimate
    explicit = hutchinson_trace(net, images, labels, probes=probes.double())
    assert torch.equal(explicit.values, first.values)


def test_naive_reference_uses_the_same_probes_and_stops_by_tolerance(exact):
    net, images, labels, _ = exact
    naive = naive_hutchinson_trace(net, images, labels, max_probes=100, tol=1e-3, seed=0, batch_size=32)
    ours = hutchinson_trace(net, images, labels, probes=len(naive.values), seed=0, batch_size=64)
    torch.testing.assert_close(naive.values, ours.values, atol=1e-10, rtol=0)
    values = naive.values
    if len(values) < 100:  # stopped: the last probe moved the running mean by < 1e-3 relative
        assert abs(values.mean() - values[:-1].mean()) < 1e-3 * abs(values[:-1].mean())
    fixed = naive_hutchinson_trace(net, images, labels, max_probes=4, tol=0.0, seed=0, batch_size=20)
    assert len(fixed.values) == 4


def test_sample_batches_are_stratified_and_reproducible():
    batches = sample_batches(10, 32, 100, seed=3)
    assert batches.shape == (10, 32) and batches.dtype == torch.int64
    assert torch.equal(batches.flatten()[:100].sort().values, torch.arange(100))  # the first 100 draws: one permutation
    counts = torch.bincount(batches.flatten(), minlength=100)
    assert counts.min() == 3 and counts.max() == 4  # 320 uses of 100 images: every image 3 or 4 times
    assert torch.equal(batches, sample_batches(10, 32, 100, seed=3)) and torch.equal(batches[:4], sample_batches(4, 32, 100, seed=3))
    assert not torch.equal(batches, sample_batches(10, 32, 100, seed=4))
    with pytest.raises(DdnbError, match="batches of 101"):
        sample_batches(1, 101, 100)


def test_sampled_trace_is_unbiased_within_three_standard_errors(exact_256):
    """400 probes, 4 per batch of 32 of 256 images (12.5 epochs: the data noise does not cancel by whole epochs)."""
    net, images, labels, hessian = exact_256
    estimate = sampled_hutchinson_trace(net, images, labels, probes=400, probe_seed=0, images_per_batch=32,
                                        probes_per_batch=4)
    trace = float(hessian.trace())
    assert abs(estimate.estimate - trace) < 3 * estimate.stderr
    assert estimate.stderr < 0.1 * abs(trace)  # the check has some power: 3 stderr < 30% of the trace
    assert estimate.stderr == pytest.approx(float(estimate.values.view(100, 4).mean(1).std()) / 10, rel=1e-12)
    probes, samples = rademacher_probes(400, 171, seed=0, dtype=torch.float64), sample_batches(100, 32, 256, seed=1)
    for group in (0, 99):  # v^T H_B v with H_B the exact Hessian of the mean loss over the sampled batch
        batch_hessian = _exact_hessian(net, images[samples[group]], labels[samples[group]])
        rows = probes[4 * group : 4 * group + 4]
        torch.testing.assert_close(estimate.values[4 * group : 4 * group + 4], ((rows @ batch_hessian) * rows).sum(1), atol=1e-10, rtol=0)


def test_sampled_trace_standard_errors_are_calibrated(exact_256):
    """Over 16 independent seeds (16 batches of 24 each: 1.5 epochs), errors / stderr look like N(0, <=1) draws."""
    net, images, labels, hessian = exact_256
    estimates = [sampled_hutchinson_trace(net, images, labels, probes=32, probe_seed=s, images_per_batch=24,
                                          probes_per_batch=2) for s in range(100, 132, 2)]
    z = torch.tensor([(e.estimate - float(hessian.trace())) / e.stderr for e in estimates])
    assert z.abs().max() < 4 and 0.3 < float(z.pow(2).mean().sqrt()) < 1.5


def test_sampled_trace_same_seed_same_result(exact_256):
    net, images, labels, _ = exact_256
    kwargs = dict(probes=8, probe_seed=5, images_per_batch=16, probes_per_batch=2)
    first, second = (sampled_hutchinson_trace(net, images, labels, **kwargs) for _ in range(2))
    assert torch.equal(first.values, second.values) and (first.estimate, first.stderr) == (second.estimate, second.stderr)
    explicit = sampled_hutchinson_trace(net, images, labels, probes=rademacher_probes(8, 171, seed=5), probes_per_batch=2,
                                        samples=sample_batches(4, 16, 256, seed=6))
    assert torch.equal(explicit.values, first.values)
    assert not torch.equal(sampled_hutchinson_trace(net, images, labels, **kwargs, sample_seed=7).values, first.values)
    chunked = sampled_hutchinson_trace(net, images, labels, **kwargs, chunk_size=5)  # memory only: the same estimate
    torch.testing.assert_close(chunked.values, first.values, atol=1e-10, rtol=0)
    with pytest.raises(DdnbError, match="groups of probes_per_batch=3"):
        sampled_hutchinson_trace(net, images, labels, probes=8, probes_per_batch=3)
    with pytest.raises(DdnbError, match="cannot serve 8 probes"):
        sampled_hutchinson_trace(net, images, labels, probes=8, probes_per_batch=2, samples=sample_batches(3, 16, 256))


def test_an_argument_that_would_be_ignored_is_an_error(exact_256):
    """Given probes take no seed; given batches take neither a size nor a seed (each used to be silently ignored)."""
    net, images, labels, _ = exact_256
    probes, samples = rademacher_probes(4, 171, seed=5), sample_batches(2, 16, 256, seed=6)
    with pytest.raises(DdnbError, match="probe_seed draws the probes"):
        sampled_hutchinson_trace(net, images, labels, probes=probes, probe_seed=3)
    with pytest.raises(DdnbError, match="seed draws the probes"):
        hutchinson_trace(net, images, labels, probes=probes, seed=3)
    for ignored in ({"images_per_batch": 32}, {"sample_seed": 2}):
        with pytest.raises(DdnbError, match="samples were given"):
            sampled_hutchinson_trace(net, images, labels, probes=probes, samples=samples, **ignored)
    with pytest.raises(TypeError):  # the old names are gone, not quietly accepted
        sampled_hutchinson_trace(net, images, labels, probes=4, seed=3, sample_size=16)


def test_a_single_group_has_an_unknown_standard_error(exact, exact_256):
    """One probe, or every probe on one sampled batch: no spread to estimate, so NaN rather than 0."""
    net, images, labels, _ = exact
    assert math.isnan(hutchinson_trace(net, images, labels, probes=1).stderr)
    assert math.isfinite(hutchinson_trace(net, images, labels, probes=2).stderr)
    net, images, labels, _ = exact_256
    one_batch = sampled_hutchinson_trace(net, images, labels, probes=4, images_per_batch=16, probes_per_batch=4)
    assert math.isnan(one_batch.stderr) and math.isfinite(one_batch.estimate)
    two_batches = sampled_hutchinson_trace(net, images, labels, probes=8, images_per_batch=16, probes_per_batch=4)
    assert math.isfinite(two_batches.stderr)


def test_convnet_tiny_hvp_against_finite_differences_of_gradients():
    """The paper's ConvNet-Tiny (GroupNorm, width 16, depth 3) on six 16x16 images, float64.

    (At 8x8 the last GroupNorm normalises 1x1 maps, a constant function whose derivatives are rounding noise.)
    """
    net = build_net("convnet-tiny", seed=0, image_size=16).double()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 5])
    params = list(net.parameters())
    u, v = (torch.randn(parameter_count(net), generator=generator, dtype=torch.float64) for _ in range(2))
    v /= v.norm()  # a tiny step, so that no ReLU changes side between the two gradients

    def gradient(shift: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            torch._foreach_add_(params, list(unflatten(shift, net).values()))
        grad = flatten(torch.autograd.grad(F.cross_entropy(net(images), labels), params))
        with torch.no_grad():
            torch._foreach_sub_(params, list(unflatten(shift, net).values()))
        return grad

    eps = 1e-7  # float64 gradients: rounding error ~1e-16 / eps, far below the tolerance
    finite = (gradient(eps * v) - gradient(-eps * v)) / (2 * eps)
    hu, hv = hessian_vector_products(net, images, labels, torch.stack([u, v]), batch_size=4)
    assert (hv - finite).norm() < 1e-6 * finite.norm()
    assert abs(u @ hv - v @ hu) < 1e-10 * abs(u @ hv)  # symmetry


@pytest.mark.parametrize("sampled", [None, {"real": 8}])
def test_training_trace_curve_matches_traces_of_train_snapshots(sampled):
    train_images, train_labels = _data(48, seed=1, dtype=torch.float32)
    sets = {"real": (train_images[:32], train_labels[:32]), "small": _data(10, seed=2, dtype=torch.float32)}
    protocol = Protocol("t", batch_size=16, steps=5)
    net = _small_net(seed=3, dtype=torch.float32)
    options = dict(sampled=sampled, probes_per_batch=2)
    curves = training_trace_curve(net, train_images, train_labels, sets, [0, 2, 5], protocol, seed=4, probes=6, probe_seed=7, **options)
    reference_net = _small_net(seed=3, dtype=torch.float32)
    snapshots = train(reference_net, train_images, train_labels, protocol, seed=4, snapshot_at=[0, 2, 5]).snapshots
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), reference_net.parameters()))
    reference = trace_curve(_small_net(seed=3, dtype=torch.float32), sets, snapshots, probes=6, seed=7, **options)
    if sampled:  # the same probes and the same batches at every t: the standalone estimator with the same seeds
        snapshot_net = _small_net(dtype=torch.float32)
        for row, iteration in enumerate([0, 2, 5]):
            snapshot_net.load_state_dict(snapshots[iteration])
            alone = sampled_hutchinson_trace(snapshot_net, *sets["real"], probes=6, probe_seed=7, images_per_batch=8,
                                             probes_per_batch=2)
            assert torch.equal(curves["real"].values[row], alone.values) and curves["real"].stderrs[row] == alone.stderr
        with pytest.raises(DdnbError, match="unknown sets: fake"):
            trace_curve(snapshot_net, sets, snapshots, probes=6, sampled={"fake": 4})
    for name in sets:
        assert curves[name].iterations.tolist() == [0, 2, 5] and curves[name].values.shape == (3, 6)
        assert torch.equal(curves[name].values, reference[name].values)
        assert torch.equal(curves[name].traces, curves[name].values.mean(1))
    assert not torch.equal(curves["real"].traces, curves["small"].traces)
    assert set(curves["real"].as_dict()) == {"iterations", "traces", "stderrs"}
    assert len(training_trace_curve(_small_net(), *_data(20), {"a": _data(4)}, 2, protocol, probes=2)["a"].traces) == 2
    # the default protocol (real: one epoch, a single update on 20 images) runs for as long as asked
    assert training_trace_curve(_small_net(), *_data(20), {"a": _data(4)}, [0, 9], probes=2)["a"].iterations.tolist() == [0, 9]
    with pytest.raises(DdnbError, match="outside the 5 updates"):
        training_trace_curve(_small_net(), *_data(20), {"a": _data(4)}, [0, 9], protocol, probes=2)
