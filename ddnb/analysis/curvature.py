"""Curvature of the training loss: Hessian-vector products, Hutchinson's trace, Lanczos top eigenvalues.

The loss is the mean cross-entropy of a network over a whole data set (images [N, C, H, W], labels [N]
int64 or soft targets [N, classes]), differentiated twice w.r.t. the network's trainable parameters
(P scalars, laid out flat as ``ddnb.params.flatten`` does). Data are processed in batches; each batch
contributes its *summed* loss divided by N, so the result is exact for the mean over all N whatever the
batch size. The network is evaluated in eval mode (BatchNorm uses running statistics, so the loss is a
sum over images; the GroupNorm ConvNets of the paper behave identically in both modes).

Speed: per batch, one gradient with ``create_graph=True`` serves every vector (the graph is kept with
``retain_graph=True``), so k vectors cost one forward/backward plus k double-backwards per batch. The
paper's code (PyHessian) instead recomputed every batch for every probe: see ``naive_hutchinson_trace``,
kept as the reference for ``benchmarks/curvature_speed.py``.

Probes come from ``rademacher_probes(count, size, seed)``, drawn on the CPU from their own generator:
the same seed gives the same probes on every call and device, so a curve over training iterations
compares the Hessians with common random numbers.

Large sets: ``sampled_hutchinson_trace`` is doubly stochastic. Each group of ``probes_per_batch`` probes
meets the Hessian of the mean loss over a random mini-batch (``sample_batches``) instead of all N images.
Since every batch position is uniform over the images, E[H_batch] = H_full and v^T H_batch v is unbiased
for tr(H_full); its standard error covers both the probe and the data-sampling noise. A group costs
images_per_batch / N of a full pass, which is where the speed-up on a large set comes from.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddnb.errors import DdnbError
from ddnb.params import flatten, parameter_count, trainable_parameters
from ddnb.train import Protocol, get_protocol, train

Vectors = torch.Tensor | Sequence[Mapping[str, torch.Tensor]]


def _as_matrix(vectors: Vectors, net: nn.Module) -> torch.Tensor:
    """[P], [k, P] or k dicts name -> tensor -> [k, P] in the parameters' dtype and device."""
    like = next(iter(trainable_parameters(net).values()))
    if not isinstance(vectors, torch.Tensor):
        names = list(trainable_parameters(net))
        vectors = torch.stack([flatten([v[name] for name in names]) for v in vectors])
    matrix = vectors.to(like).reshape(-1, vectors.shape[-1])
    if matrix.shape[1] != parameter_count(net):
        raise DdnbError(f"vectors have {matrix.shape[1]} entries but the network has {parameter_count(net)} parameters")
    return matrix


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def _batch_losses(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Per batch, its share of the mean loss over all N: sum of its losses / N (a scalar with a graph)."""
    device = next(net.parameters()).device
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        yield F.cross_entropy(net(x.to(device)), y.to(device), reduction="sum") / len(images)


def _gradient_graph(net: nn.Module, loss: torch.Tensor) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    params = list(trainable_parameters(net).values())
    return params, torch.autograd.grad(loss, params, create_graph=True)


def hessian_vector_products(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, vectors: Vectors, batch_size: int = 500,
    vectors_per_call: int = 1,
) -> torch.Tensor:
    """H @ v for k vectors in one pass over the data; H is the Hessian [P, P] of the mean loss.

    ``vectors``: a flat tensor [P] or [k, P] (``named_parameters`` order; see ``flatten``/``unflatten``)
    or a sequence of k dicts parameter name -> tensor. Returns [k, P] in the parameters' dtype and device.
    ``vectors_per_call`` > 1 pushes that many vectors through one vmapped double-backward
    (``torch.func.vmap``): more memory, and on the CPU slower (benchmarks/curvature_speed.py), but
    possibly faster where small batches leave a GPU idle. Memory: one batch's double-backward graph
    (times ``vectors_per_call``) plus 2 k P numbers.
    """
    matrix = _as_matrix(vectors, net)
    products = torch.zeros_like(matrix)
    with _eval_mode(net):
        for loss in _batch_losses(net, images, labels, batch_size):
            params, grads = _gradient_graph(net, loss)
            for rows in range(0, len(matrix), vectors_per_call):  # the same graph serves every vector
                products[rows : rows + vectors_per_call] += _double_backward(grads, params, matrix[rows : rows + vectors_per_call])
    return products


def _double_backward(grads: Sequence[torch.Tensor], params: list[torch.Tensor], chunk: torch.Tensor) -> torch.Tensor:
    """[c, P] vectors -> [c, P] products through a retained gradient graph (vmapped when c > 1)."""
    pieces = [piece.view(len(chunk), *p.shape) for p, piece in zip(params, chunk.split([p.numel() for p in params], 1))]
    if len(chunk) == 1:
        hv = torch.autograd.grad(grads, params, grad_outputs=[piece[0] for piece in pieces], retain_graph=True)
        return flatten(hv)[None]
    # torch.func.vmap, not autograd's is_grads_batched: on CUDA the latter's batching rules fail inside GroupNorm's
    # double backward (benchmarks/curvature_speed.py, 2026-12-04, H200)
    hv = torch.func.vmap(lambda *rows: torch.autograd.grad(grads, params, grad_outputs=rows, retain_graph=True))(*pieces)
    return torch.cat([h.flatten(1) for h in hv], 1)


def rademacher_probes(count: int, size: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` Rademacher vectors [count, size] with entries +-1, drawn on the CPU from ``seed`` alone.

    Row i depends only on (seed, size) and i, so a smaller ``count`` gives a prefix of a larger one.
    """
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (count, size), generator=generator, dtype=torch.int8)
    return (signs.to(dtype) * 2 - 1).to(device)


@dataclass
class TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of ``values`` [k] (v_i^T H v_i) and its standard error."""

    estimate: float
    stderr: float  # std of the k / g group means / sqrt(k / g), g = 1 unless probes share a batch; NaN for one group
    values: torch.Tensor  # [k] float64, one per probe

    @classmethod
    def from_values(cls, values: torch.Tensor, group_size: int = 1) -> "TraceEstimate":
        """From per-probe values [k]; consecutive groups of ``group_size`` share a data batch.

        Values within a group are correlated through their batch, so the standard error comes from the
        group means (independent, or negatively correlated under stratified sampling: conservative).
        With a single group (one probe, or every probe on one batch) it is unknown: NaN, not 0.
        """
        values = values.double().cpu()
        means = values.view(-1, group_size).mean(1)
        stderr = float(means.std() / math.sqrt(len(means))) if len(means) > 1 else math.nan  # one mean has no spread
        return cls(float(values.mean()), stderr, values)


def _probe_matrix(net: nn.Module, probes: int | torch.Tensor, seed: int | None, seed_name: str) -> torch.Tensor:
    """Probes [k, P]: a count is drawn from ``seed`` (default 0); given probes refuse a seed, which they would ignore."""
    if isinstance(probes, int):
        return _as_matrix(rademacher_probes(probes, parameter_count(net), 0 if seed is None else seed), net)
    if seed is not None:
        raise DdnbError(f"{seed_name} draws the probes, but the probes were given: pass a probe count with {seed_name}, "
                        "or the probes alone")
    return _as_matrix(probes, net)


def hutchinson_trace(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, probes: int | torch.Tensor = 64,
    seed: int | None = None, batch_size: int = 500,
) -> TraceEstimate:
    """Hutchinson's estimate of the Hessian trace with a fixed budget of Rademacher probes, one data pass.

    ``probes``: a count (drawn by ``rademacher_probes(probes, P, seed)``, ``seed`` default 0) or the probes
    themselves [k, P] (then a ``seed`` is an error: it would be ignored). ``batch_size``: images per pass
    (memory only). One probe gives a NaN standard error.
    """
    matrix = _probe_matrix(net, probes, seed, "seed")
    products = hessian_vector_products(net, images, labels, matrix, batch_size)
    return TraceEstimate.from_values((matrix.double() * products.double()).sum(1))


def naive_hutchinson_trace(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, max_probes: int = 100, tol: float = 1e-3,
    seed: int = 0, batch_size: int = 500,
) -> TraceEstimate:
    """The paper's way (PyHessian ``trace``): one probe at a time, every batch recomputed for every probe.

    Stops when the running mean changes by less than ``tol`` relative (or after ``max_probes``). Probes are
    the rows of ``rademacher_probes(max_probes, P, seed)``, so values match ``hutchinson_trace``'s.
    Kept as the reference for the speed benchmark; use ``hutchinson_trace`` for analyses.
    """
    probes = rademacher_probes(max_probes, parameter_count(net), seed)
    values: list[float] = []
    previous = 0.0
    for probe in probes:
        product = hessian_vector_products(net, images, labels, probe, batch_size)[0].double()
        values.append(float(probe.to(product) @ product))
        mean = sum(values) / len(values)
        if abs(mean - previous) / (abs(previous) + 1e-6) < tol:
            break
        previous = mean
    return TraceEstimate.from_values(torch.tensor(values, dtype=torch.float64))


def sample_batches(count: int, size: int, population: int, seed: int = 0) -> torch.Tensor:
    """``count`` batches of ``size`` indices into range(``population``): int64 [count, size], stratified.

    Consecutive slices of a stream of independent random permutations drawn on the CPU from ``seed``, so
    each position is uniform over the images (the batch-mean Hessian is unbiased for the full one) and over
    the batches every image is used equally often, to within one. A batch that straddles two permutations
    may repeat an image; it stays unbiased. Batch i depends only on (size, population, seed) and i.
    """
    if not 0 < size <= population:
        raise DdnbError(f"cannot sample batches of {size} from {population} images")
    generator = torch.Generator().manual_seed(seed)
    epochs = max(1, math.ceil(count * size / population))
    stream = torch.cat([torch.randperm(population, generator=generator) for _ in range(epochs)])
    return stream[: count * size].view(count, size)


def sampled_hutchinson_trace(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, probes: int | torch.Tensor = 64, *,
    probe_seed: int | None = None, images_per_batch: int | None = None, probes_per_batch: int = 2,
    samples: torch.Tensor | None = None, sample_seed: int | None = None, chunk_size: int = 500,
) -> TraceEstimate:
    """Doubly stochastic Hutchinson: probes on Hessians of random mini-batches, unbiased for tr(H_full).

    Probe i (``probes``: a count drawn by ``rademacher_probes(k, P, probe_seed)``, or [k, P]) gives
    v_i^T H_B v_i, where H_B is the Hessian of the mean loss over batch B = ``samples[i // probes_per_batch]``
    (default ``sample_batches(k / probes_per_batch, images_per_batch, N, sample_seed)``, 128 images per batch).
    Each batch's gradient graph serves its ``probes_per_batch`` probes; k must be a multiple of it.
    ``probe_seed`` defaults to 0 and ``sample_seed`` to probe_seed + 1, so that batches and probes never come
    from the same generator stream (they must be independent for the estimate to be unbiased). An argument
    that would be ignored is an error: ``probe_seed`` with given probes, ``images_per_batch`` or
    ``sample_seed`` with given ``samples``. ``chunk_size``: images per forward/backward pass (memory only).
    One batch (k = ``probes_per_batch``) gives a NaN standard error.
    Few probes per batch pay off when the probe noise dominates the batch noise, as for the ConvNet at
    initialisation (``benchmarks/curvature_speed.py`` reports both and the best group size).
    """
    matrix = _probe_matrix(net, probes, probe_seed, "probe_seed")
    if len(matrix) % probes_per_batch:
        raise DdnbError(f"{len(matrix)} probes do not split into groups of probes_per_batch={probes_per_batch}")
    if samples is None:
        sample_seed = (probe_seed or 0) + 1 if sample_seed is None else sample_seed
        samples = sample_batches(len(matrix) // probes_per_batch, 128 if images_per_batch is None else images_per_batch,
                                 len(images), sample_seed)
    elif images_per_batch is not None or sample_seed is not None:
        raise DdnbError("images_per_batch and sample_seed draw the batches, but samples were given: pass one or the other")
    if len(samples) * probes_per_batch < len(matrix):
        raise DdnbError(f"{len(samples)} sampled batches cannot serve {len(matrix)} probes in groups of {probes_per_batch}")
    values = []
    for rows, index in zip(matrix.split(probes_per_batch), samples):
        index = index.to(images.device)
        products = hessian_vector_products(net, images[index], labels[index], rows, chunk_size)
        values.append((rows.double() * products.double()).sum(1))
    return TraceEstimate.from_values(torch.cat(values), probes_per_batch)


@dataclass
class Eigen:
    """Top eigenvalues [k] (largest first, float64) and, when asked for, unit eigenvectors [k, P] (float64)."""

    values: torch.Tensor
    vectors: torch.Tensor | None = None
    steps: int = 0  # Lanczos iterations run (= data passes)


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], size: int, steps: int, seed: int = 0,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos with full reorthogonalisation: tridiagonal T [m, m] and Krylov basis Q [m, size] (float64).

    ``matvec`` maps a float64 vector [size] to A @ v [size] for a symmetric A; m <= steps stops early
    when the Krylov space becomes invariant. The start vector is Gaussian from ``seed`` (drawn on the CPU).
    """
    q = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)
    basis = torch.zeros(min(steps, size), size, dtype=torch.float64, device=device)
    alphas, betas = [], []
    for j in range(len(basis)):
        basis[j] = q / q.norm()
        w = matvec(basis[j]).double()
        alphas.append(w @ basis[j])
        for _ in range(2):  # twice is enough against the loss of orthogonality in float64
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        betas.append(w.norm())
        if betas[-1] <= 1e-10 * max(abs(float(a)) for a in alphas):  # invariant subspace: T is exact
            break
        q = w
    m = len(alphas)
    tridiagonal = torch.diag(torch.stack(alphas)) + torch.diag(torch.stack(betas[: m - 1]), 1) + torch.diag(torch.stack(betas[: m - 1]), -1)
    return tridiagonal.cpu(), basis[:m]


def top_eigenvalues(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, k: int = 1, steps: int = 40, seed: int = 0,
    batch_size: int = 500, eigenvectors: bool = False,
) -> Eigen:
    """The k largest (algebraic) Hessian eigenvalues by Lanczos: ``steps`` data passes, deterministic from ``seed``.

    Ritz values converge fastest at the ends of the spectrum; 40 steps usually pin the top few to many
    digits. With ``steps >= P`` the result is exact up to rounding.
    """
    matvec = lambda v: hessian_vector_products(net, images, labels, v, batch_size)[0]  # noqa: E731
    tridiagonal, basis = lanczos(matvec, parameter_count(net), steps, seed, next(net.parameters()).device)
    values, ritz = torch.linalg.eigh(tridiagonal)
    top = values.flip(0)[:k]
    vectors = ritz.flip(1)[:, :k].T.to(basis) @ basis if eigenvectors else None
    return Eigen(top, vectors, len(tridiagonal))


@dataclass
class TraceCurve:
    """Hessian trace of one set against training iteration (t = after t updates)."""

    iterations: torch.Tensor  # [T] int64
    traces: torch.Tensor  # [T] float64, Hutchinson estimates
    stderrs: torch.Tensor  # [T] float64
    values: torch.Tensor  # [T, k] float64, per-probe values (the same probes at every t)

    def as_dict(self) -> dict[str, list]:
        """Plain lists, for JSON."""
        return {"iterations": self.iterations.tolist(), "traces": self.traces.tolist(), "stderrs": self.stderrs.tolist()}


def _curves(estimates: dict[str, list[TraceEstimate]], iterations: Sequence[int]) -> dict[str, TraceCurve]:
    return {
        name: TraceCurve(torch.tensor(list(iterations)), torch.tensor([e.estimate for e in series], dtype=torch.float64),
                         torch.tensor([e.stderr for e in series], dtype=torch.float64), torch.stack([e.values for e in series]))
        for name, series in estimates.items()
    }


Estimator = Callable[[nn.Module], TraceEstimate]


def _estimators(
    sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], probe_matrix: torch.Tensor, sampled: Mapping[str, int] | None,
    probes_per_batch: int, sample_seed: int, batch_size: int,
) -> dict[str, Estimator]:
    """name -> (net -> TraceEstimate) with probes and sampled batches fixed once: common random numbers over t."""
    sampled = dict(sampled or {})
    if set(sampled) - set(sets):
        raise DdnbError(f"sampled names unknown sets: {', '.join(sorted(set(sampled) - set(sets)))}")
    estimators: dict[str, Estimator] = {}
    for name, (images, labels) in sets.items():
        if name in sampled:
            samples = sample_batches(len(probe_matrix) // probes_per_batch, sampled[name], len(images), sample_seed)
            estimators[name] = functools.partial(sampled_hutchinson_trace, images=images, labels=labels, probes=probe_matrix,
                                                 probes_per_batch=probes_per_batch, samples=samples, chunk_size=batch_size)
        else:
            estimators[name] = functools.partial(hutchinson_trace, images=images, labels=labels, probes=probe_matrix,
                                                 batch_size=batch_size)
    return estimators


def trace_curve(
    net: nn.Module, sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], snapshots: Mapping[int, Mapping[str, torch.Tensor]],
    probes: int = 64, seed: int = 0, batch_size: int = 500, sampled: Mapping[str, int] | None = None,
    probes_per_batch: int = 2, sample_seed: int | None = None,
) -> dict[str, TraceCurve]:
    """Trace on each named set (images, labels) at each snapshot (iteration -> state_dict), same probes throughout.

    ``snapshots`` as returned by ``ddnb.train.train(..., snapshot_at=...)``; ``net`` is loaded with each in turn.
    ``sampled``: set name -> sample size for the sets estimated by ``sampled_hutchinson_trace`` (the same
    batches, from ``sample_seed``, default seed + 1, at every snapshot); the others use all their images.
    """
    probe_matrix = rademacher_probes(probes, parameter_count(net), seed)
    sample_seed = seed + 1 if sample_seed is None else sample_seed
    estimators = _estimators(sets, probe_matrix, sampled, probes_per_batch, sample_seed, batch_size)
    estimates: dict[str, list[TraceEstimate]] = {name: [] for name in sets}
    for iteration in sorted(snapshots):
        net.load_state_dict(snapshots[iteration])
        for name, estimator in estimators.items():
            estimates[name].append(estimator(net))
    return _curves(estimates, sorted(snapshots))


CURVE_FIELDS = ("iterations", "traces", "stderrs", "values")


def training_trace_curve(
    net: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
    sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], iterations: int | Sequence[int],
    protocol: Protocol | None = None, seed: int = 0, probes: int = 64, probe_seed: int = 0,
    batch_size: int = 500, progress: bool = False, sampled: Mapping[str, int] | None = None,
    probes_per_batch: int = 2, sample_seed: int | None = None,
) -> dict[str, TraceCurve]:
    """Train ``net`` in place on real data and take the trace on each set *before* each listed iteration.

    ``iterations``: N (meaning 0..N-1) or explicit iterations t (after t updates). Training is exactly
    ``ddnb.train.train(net, train_images, train_labels, protocol, seed)`` stopped after the last t, which must
    lie within the protocol's length (default: ``real``, run for as many iterations as asked); the probes
    (``probe_seed``) are shared by every t and set.
    ``sampled``, ``probes_per_batch``, ``sample_seed`` (default probe_seed + 1): as in ``trace_curve``; the
    sampled batches are shared by every t. At ``cifar10-cpu`` a curve is 12 minutes on 2 cores, at the paper's
    size hours (``ddnb.sections.dynamics`` keeps it in the store).
    """
    wanted = sorted(set(range(iterations) if isinstance(iterations, int) else iterations))
    protocol = protocol or get_protocol("real", steps=wanted[-1])  # constant lr: its length only sets where it stops
    sample_seed = probe_seed + 1 if sample_seed is None else sample_seed
    probe_matrix = rademacher_probes(probes, parameter_count(net), probe_seed)
    estimators = _estimators(sets, probe_matrix, sampled, probes_per_batch, sample_seed, batch_size)
    estimates: dict[str, list[TraceEstimate]] = {name: [] for name in sets}

    def measure(net: nn.Module, iteration: int) -> None:
        if iteration in wanted:
            for name, estimator in estimators.items():
                estimates[name].append(estimator(net))

    train(net, train_images, train_labels, protocol, seed, progress=progress, until=wanted[-1], at_iteration=measure)
    return _curves(estimates, wanted)
