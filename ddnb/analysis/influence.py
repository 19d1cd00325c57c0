"""Influence of each training (distilled) image on each test image: exact leave-one-out and approximations.

The paper's definition (section 5): train on the n distilled images with the ``paper300`` protocol, retrain
from the *same initialisation* without image i, and call

    influence(i, j) = test loss_j (trained without i) - test loss_j (trained on all n)

so a positive value means image i *helped* test image j. Losses are per-image cross-entropy in nats.

- ``loo_influence`` trains the n + 1 networks as one batched computation: parameters stacked along a
  leading model dimension, ``torch.func.vmap`` over ``functional_call``, each model's full-batch loss a
  weighted mean over the training images (weight 0 leaves an image out), and SGD with momentum applied to
  the stacked tensors. ``loo_influence_sequential`` is the plain loop over ``ddnb.train.train`` it must
  match. Masking by weights is exact only when images do not interact in the forward pass: the ConvNets'
  instance norm is per image; BatchNorm is refused.
- ``influence_functions`` approximates LOO at the final model by (1/n) grad L_j^T (H + lambda I)^-1 grad L_i
  (Koh & Liang 2017), the inverse-Hessian-vector products by batched conjugate gradient, lambda by default
  from the curvature (above |lambda_min|); a diverged solve is an error, never a result.
  ``damping_sweep`` scores several lambda against a LOO matrix (a diverged one scores NaN, with a note).
- ``tracin`` is the gradient dot-product baseline (lr / n) sum_c grad L_j(theta_c) . grad L_i(theta_c).
- ``agreement`` compares two matrices: per-test-image Pearson and Spearman, top-k overlap per row.

Everything works on a dict of parameters with ``torch.func.functional_call``, so the same code serves
the ConvNet and any small ``nn.Module`` (the tests use logistic regression). Nothing here is random:
results depend only on the network's initial weights (``ddnb.nets.build_net(name, seed)``) and the data.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ddnb.analysis.curvature import lanczos
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.params import detached_parameters, flatten, unflatten
from ddnb.stacked import Stack, logits
from ddnb.stacked import train_stacked
from ddnb.store import Artifact, fingerprint, load_artifact, save_artifact
from ddnb.train import Protocol, evaluate, get_protocol, train

with warnings.catch_warnings():  # torch loads its forward-mode (jvp) rules with the deprecated torch.jit.script:
    warnings.simplefilter("ignore", FutureWarning)  # load them here, once, so no page shows torch's own warning
    import torch._decomp.decompositions_for_jvp  # noqa: F401

if TYPE_CHECKING:  # only a type: importing ddnb.distill would load every distiller
    from ddnb.distill.result import Distilled

KIND = "influence"
Params = dict[str, Tensor]
# The largest relative CG residual accepted as a result. A truncated solve ranks images as the converged one does
# (ConvNet, paper300 on 50 shapes images, damping 1e-2: residual 0.056 after 10 iterations, Pearson with LOO 0.583
# against 0.585 converged); a diverged one ends near 1 or above (1.35-58.5 for the CIFAR-10 ConvNet at damping 1e-3).
MAX_RESIDUAL = 0.1


# ---- result


@dataclass
class InfluenceResult:
    """An influence matrix and what made it.

    ``matrix`` float [k, T]: row r is training image ``rows[r]``, column j test image j; for LOO it is the
    change of test loss (nats) when the image is left out. ``rows`` int64 [k]. ``base_losses`` [T]: test
    losses of the network trained on all images (LOO only, else empty). ``config``: the settings (method,
    protocol, damping, ...), the store key. ``meta``: diagnostics (CG residuals), not part of the key.
    """

    matrix: Tensor
    rows: Tensor
    config: dict[str, Any]
    base_losses: Tensor = field(default_factory=lambda: torch.empty(0))
    meta: dict[str, Any] = field(default_factory=dict)

    def tensors(self) -> dict[str, Tensor]:
        return {"matrix": self.matrix, "rows": self.rows, "base_losses": self.base_losses}

    def save(self, path: str | Path) -> Path:
        """Write as a verified artifact (safetensors + JSON sidecar)."""
        return save_artifact(path, self.tensors(), self.config, self.meta, kind=KIND)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "InfluenceResult":
        """Read a result written by :meth:`save` (checksums verified)."""
        return cls.from_artifact(load_artifact(path, device))

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "InfluenceResult":
        if "matrix" not in artifact.tensors:
            raise DdnbError(f"{artifact.path} is not an influence result (no matrix tensor)")
        t = artifact.tensors
        return cls(t["matrix"], t["rows"], artifact.config, t["base_losses"], dict(artifact.meta))


# ---- functional helpers


def _check_independent(net: nn.Module) -> None:
    """Masking images out of a full batch is exact only if images do not share batch statistics."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise DdnbError("influence needs per-image independence; BatchNorm couples the images of a batch "
                        "(use the ConvNet family with instance norm)")


def _forward(net: nn.Module, params: Params, images: Tensor) -> Tensor:
    """Logits [N, classes] of ``net`` with ``params`` (buffers and frozen parameters taken from ``net``)."""
    return functional_call(net, params, (images,), strict=False)


@contextlib.contextmanager
def _mode(net: nn.Module, training: bool) -> Iterator[None]:
    """Train or eval mode for a block, restored afterwards (``functional_call`` uses the module's mode)."""
    was_training = net.training
    net.train(training)
    try:
        yield
    finally:
        net.train(was_training)


def _rows(n: int, indices: Sequence[int] | Tensor | None) -> Tensor:
    rows = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.int64).cpu()
    if rows.numel() and (rows.min() < 0 or rows.max() >= n):
        raise DdnbError(f"indices must lie in [0, {n}), got {rows.tolist()}")
    return rows


def rows_per_class(labels: Tensor, per_class: int | None) -> Tensor | None:
    """Indices of the first ``per_class`` images of each class (labels [n]; soft labels by argmax), or None for all."""
    if per_class is None:
        return None
    hard = (labels if labels.dim() == 1 else labels.argmax(1)).cpu()
    return torch.cat([torch.nonzero(hard == c).flatten()[:per_class] for c in hard.unique()]).sort().values


def _check_protocol(protocol: Protocol) -> None:
    """Only full-batch, augmentation-free protocols make LOO deterministic and exact by masking."""
    if protocol.batch_size is not None or protocol.augment:
        raise DdnbError(f"leave-one-out needs a full-batch protocol without augmentation, got {protocol.name!r}")


# ---- exact leave-one-out, batched


def leave_one_out_weights(n: int, rows: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-model image weights [len(rows) + 1, n]: row 0 keeps all images, row r + 1 drops ``rows[r]``."""
    weights = torch.ones(len(rows) + 1, n, dtype=dtype)
    weights[torch.arange(1, len(rows) + 1), rows] = 0.0
    return weights


def stacked_losses(net: nn.Module, stacked: Params, images: Tensor, labels: Tensor, pairs: int = 1024) -> Tensor:
    """Per-image cross-entropy [M, N] of every stacked network on images [N, C, H, W], in eval mode as ``evaluate``;
    at most ``pairs`` (network, image) forwards at once (``ddnb.stacked.logits``: 11 LOO models on 500 CIFAR-10
    test images at once had the book's kernel killed for memory)."""
    with _mode(net, training=False):
        scores = logits(Stack(net, stacked), images, pairs=pairs)  # [M, N, classes]
    return F.cross_entropy(scores.flatten(0, 1), labels.repeat(len(scores)), reduction="none").view(scores.shape[:2])


def _loo_config(protocol: Protocol, n: int, rows: Tensor, test_count: int, method: str, extra: dict | None) -> dict:
    return {"method": method, "protocol": dataclasses.asdict(protocol), "train_count": n, "test_count": test_count,
            "rows": rows.tolist()} | (extra or {})


def loo_influence(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
                  protocol: Protocol | None = None, indices: Sequence[int] | Tensor | None = None,
                  chunk_size: int = 16, config: dict | None = None, backend: str = "auto",
                  progress: bool = False) -> InfluenceResult:
    """Exact leave-one-out influence, all retrainings batched (``chunk_size`` models per vmapped run).

    ``net`` gives the architecture and the shared initial weights (it is not modified). images [n, C, H, W],
    labels [n] int64; test_images [T, C, H, W], test_labels [T]. ``indices``: which images to leave out
    (default all n). ``protocol`` default ``paper300``. ``config`` is merged into the result's config (say
    which net, seed and distilled set). ``progress``: a progress bar over the trainings. Returns ``matrix``
    [k, T] in nats and ``base_losses`` [T].

    Speed: batching pays on the GPU, where one model's step is too small to fill the device. On the CPU the
    vmap run is *slower* than the loop (0.3-0.8x, ``benchmarks/influence_speed.py``): the work is compute-bound
    either way (8x the batch through one ConvNet gains only 4 % per image there, which bounds any batching),
    and vmap lowers the stacked convolutions to grouped ones and decomposes GroupNorm's backward.
    So ``backend="auto"`` (see ``ddnb.stacked.train_stacked``) loops on the CPU and batches on a GPU.

    Precision: training amplifies rounding differences, so in float32 this and the loop agree only to
    float tolerance (for convnet-tiny on 100 shapes images after 300 steps: correlation 0.99, mean absolute
    difference ~15 % of the mean |influence|), which is also the numerical noise of any float32 LOO.
    In float64 (``net.double()``, ``images.double()``) they agree to ~1e-14.
    """
    protocol = protocol or get_protocol("paper300")
    _check_independent(net)
    _check_protocol(protocol)
    rows = _rows(len(images), indices)
    weights = leave_one_out_weights(len(images), rows, images.dtype).to(images.device)
    initial, template = detached_parameters(net), copy.deepcopy(net).train()  # train mode, as ``train`` uses
    losses = []
    for chunk in weights.split(chunk_size):  # chunks bound memory: activations grow with the models per run
        models = Stack(template, {k: v.expand(len(chunk), *v.shape).clone() for k, v in initial.items()})
        # model m minimises sum(w * loss) / sum(w): full-batch SGD with momentum, as ``train`` on the kept images
        train_stacked(models, images, labels, protocol, [0] * len(chunk), weights=chunk, backend=backend, progress=progress)
        losses.append(stacked_losses(net, models.params, test_images, test_labels))
    test_losses = torch.cat(losses)  # [k + 1, T]
    config = _loo_config(protocol, len(images), rows, len(test_images), "loo", config)
    return InfluenceResult(test_losses[1:] - test_losses[0], rows, config, test_losses[0])


def loo_influence_sequential(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
                             protocol: Protocol | None = None, indices: Sequence[int] | Tensor | None = None,
                             config: dict | None = None) -> InfluenceResult:
    """The same matrix as ``loo_influence``, one ``ddnb.train.train`` run per model (the reference)."""
    protocol = protocol or get_protocol("paper300")
    _check_protocol(protocol)
    rows = _rows(len(images), indices)
    keep_all = torch.ones(len(images), dtype=torch.bool)
    losses = []
    for left_out in [None, *rows.tolist()]:
        keep = keep_all.clone()
        if left_out is not None:
            keep[left_out] = False
        model = copy.deepcopy(net)
        keep = keep.to(images.device)
        train(model, images[keep], labels[keep], protocol)
        losses.append(evaluate(model, test_images, test_labels).losses)
    test_losses = torch.stack(losses)
    config = _loo_config(protocol, len(images), rows, len(test_images), "loo", config)
    return InfluenceResult(test_losses[1:] - test_losses[0], rows, config, test_losses[0])


def _initial_network(distilled: Distilled, net: str, seed: int, device: torch.device) -> nn.Module:
    """``build_net(net, seed)`` shaped for ``distilled``: the shared initialisation of every LOO retraining."""
    images = distilled.images
    return build_net(net, seed, images.shape[1], images.shape[-1], len(distilled.meta["classes"]), device)


def distilled_influence_config(distilled: Distilled, test_images: Tensor, net: str = "convnet", seed: int = 0,
                               protocol: Protocol | str = "paper300", indices: Sequence[int] | Tensor | None = None) -> dict:
    """The config of ``distilled_influence``'s result (what identifies it): fingerprints of the set's images and
    labels and of the test images, the net, seed and protocol and the rows left out; not how the set was made (the
    same tensors imported from another project give the same result)."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    images = distilled.images
    extra = {"labels_sha256": fingerprint(distilled.labels), "net": net, "seed": seed,
             "train_sha256": fingerprint(images.to(test_images.device)), "test_sha256": fingerprint(test_images)}
    return _loo_config(protocol, len(images), _rows(len(images), indices), len(test_images), "loo", extra)


def distilled_influence(distilled: Distilled, test_images: Tensor, test_labels: Tensor, net: str = "convnet",
                        seed: int = 0, protocol: Protocol | str = "paper300", chunk_size: int = 16,
                        indices: Sequence[int] | Tensor | None = None, progress: bool = False) -> InfluenceResult:
    """The paper's analysis: LOO influence of every image of ``distilled`` on every test image.

    The network is ``build_net(net, seed)`` (the shared initialisation) on the test images' device; the result's
    config is ``distilled_influence_config``. ``indices``: which images to leave out (default all; see
    ``rows_per_class``).
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    images, labels = distilled.images.to(test_images.device), distilled.labels.to(test_images.device)
    config = distilled_influence_config(distilled, test_images, net, seed, protocol, indices)
    extra = {name: config[name] for name in ("labels_sha256", "net", "seed", "train_sha256", "test_sha256")}
    model = _initial_network(distilled, net, seed, test_images.device)
    result = loo_influence(model, images, labels, test_images, test_labels, protocol, indices, chunk_size=chunk_size,
                           config=extra, progress=progress)
    return result


# ---- gradients and curvature


def per_image_gradients(net: nn.Module, params: Params, images: Tensor, labels: Tensor, batch_size: int = 64) -> Tensor:
    """Gradient of each image's cross-entropy w.r.t. ``params``, flattened: [N, P]."""
    def one(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(_forward(net, p, x[None]), y[None])

    batched = vmap(grad(one), in_dims=(None, 0, 0))
    parts = [flatten(batched(params, x, y), 1) for x, y in zip(images.split(batch_size), labels.split(batch_size))]
    return torch.cat(parts)


def curvature_matvec(net: nn.Module, params: Params, images: Tensor, labels: Tensor, curvature: str = "hessian",
                     shift: float = 0.0, chunk: int | None = 4) -> Callable[[Tensor], Tensor]:
    """``V [k, P] -> (C + shift I) V`` for the mean training cross-entropy's curvature C at ``params``.

    ``curvature``: ``"hessian"`` (exact, forward-over-reverse) or ``"ggn"`` (Gauss-Newton J^T H_out J, always
    positive semi-definite; equal to the Hessian for models linear in their parameters). ``chunk``: vectors
    per vmapped product (bounds memory: each carries its own activations' tangents, about 1.2 GB for the
    ConvNet on 100 32x32 images: 8 at once took 9.2 GB more, measured on 2026-12-03).
    """
    def loss(p: Params) -> Tensor:
        return F.cross_entropy(_forward(net, p, images), labels)

    def hessian(v: Params) -> Params:
        return jvp(grad(loss), (params,), (v,))[1]

    def ggn(v: Params) -> Params:
        logits, tangent = jvp(lambda p: _forward(net, p, images), (params,), (v,))
        prob = logits.softmax(-1)
        out = prob * tangent - prob * (prob * tangent).sum(-1, keepdim=True)  # softmax-CE Hessian times J v
        return vjp(lambda p: _forward(net, p, images), params)[1](out / len(images))[0]

    products = {"hessian": hessian, "ggn": ggn}
    if curvature not in products:
        raise DdnbError(f"unknown curvature {curvature!r}; choose hessian or ggn")
    batched = vmap(lambda flat: flatten(products[curvature](unflatten(flat, params))), chunk_size=chunk)
    return lambda vectors: batched(vectors) + shift * vectors


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 100,
                       tolerance: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Solve A x = b for every row of b [k, P] (A symmetric positive definite, given by ``matvec``).

    Rows stop once ||r|| <= tolerance * ||b||, or when they meet non-positive curvature p^T A p <= 0 (A is
    not positive definite: raise the damping). Returns x [k, P], the relative residuals [k] and which rows
    met non-positive curvature [k] bool (their x is not a solution).
    """
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), (r * r).sum(1)
    b_norm = rs.sqrt().clamp_min(torch.finfo(b.dtype).tiny)
    broken = torch.zeros(len(b), dtype=torch.bool, device=b.device)
    for _ in range(iterations):
        active = ((rs.sqrt() > tolerance * b_norm) & ~broken).nonzero().squeeze(1)
        if len(active) == 0:
            break
        pa = p[active]
        ap = matvec(pa)  # only unfinished rows pay for a curvature product
        pap = (pa * ap).sum(1)
        broken[active[pap <= 0]] = True
        alpha = torch.where(pap > 0, rs[active] / pap, torch.zeros_like(pap))
        x[active] += alpha[:, None] * pa
        r[active] -= alpha[:, None] * ap
        rs_new = (r[active] ** 2).sum(1)
        p[active] = r[active] + (rs_new / rs[active])[:, None] * pa
        rs[active] = rs_new
    return x, rs.sqrt() / b_norm, broken


# ---- approximations


def _test_dot(net: nn.Module, params: Params, test_images: Tensor, test_labels: Tensor, vectors: Tensor,
              batch_size: int) -> Tensor:
    """``vectors`` [k, P] . grad L_j for every test image j: [k, T], test gradients made one batch at a time."""
    parts = [vectors @ per_image_gradients(net, params, x, y, batch_size).T
             for x, y in zip(test_images.split(batch_size), test_labels.split(batch_size))]
    return torch.cat(parts, 1)


@dataclass
class _Solve:
    """One damping's IF matrix [k, T], its CG relative residuals [k] and rows that met negative curvature [k]."""

    damping: float
    matrix: Tensor
    residual: Tensor
    indefinite: Tensor

    def failure(self, iterations: int, max_residual: float) -> str:
        """Why this solve is not a result, or "" when it is."""
        if self.indefinite.any():
            return (f"curvature + damping {self.damping:g} is not positive definite: conjugate gradients met negative "
                    f"curvature in {int(self.indefinite.sum())} of {len(self.indefinite)} rows "
                    "(the damping is below |lambda_min|)")
        worst = float(self.residual.max()) if len(self.residual) else 0.0
        if not worst <= max_residual:  # NaN fails too
            return (f"conjugate gradients did not converge at damping {self.damping:g}: relative residual {worst:.3g} "
                    f"> {max_residual:g} after {iterations} iterations")
        return ""


def _influence_matrices(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
                        dampings: Sequence[float], rows: Tensor, weight_decay: float, curvature: str,
                        iterations: int, tolerance: float, batch_size: int) -> list[_Solve]:
    """One IF solve per damping; the test gradients are made once."""
    params = detached_parameters(net)
    train_grads = per_image_gradients(net, params, images[rows.to(images.device)], labels[rows.to(labels.device)], batch_size)
    solutions, diagnoses = [], []
    for damping in dampings:  # weight decay's Hessian is weight_decay * I: it joins the damping
        matvec = curvature_matvec(net, params, images, labels, curvature, weight_decay + damping)
        solution, residual, indefinite = conjugate_gradient(matvec, train_grads, iterations, tolerance)
        solutions.append(solution)
        diagnoses.append((residual, indefinite))
    dots = _test_dot(net, params, test_images, test_labels, torch.cat(solutions), batch_size)
    return [_Solve(d, m / len(images), r, i) for d, m, (r, i) in zip(dampings, dots.split(len(rows)), diagnoses)]


def curvature_damping(net: nn.Module, images: Tensor, labels: Tensor, weight_decay: float = 0.0,
                      curvature: str = "hessian", steps: int = 30, seed: int = 0) -> tuple[float, dict[str, float]]:
    """A damping that makes C + weight_decay I + damping I positive definite and well conditioned.

    Lanczos (``steps`` curvature products from ``seed``) estimates the extreme eigenvalues of C + weight_decay I;
    the damping is the larger of 2 |lambda_min| (when negative: Ritz values lie inside the spectrum, so the
    factor 2 covers an underestimate) and lambda_max / 100 (which keeps the condition number below about 200,
    and so the iterations CG needs bounded). Returns the damping and the estimates.
    """
    params = detached_parameters(net)
    matvec = curvature_matvec(net, params, images, labels, curvature, weight_decay)
    dtype = next(iter(params.values())).dtype
    size = sum(p.numel() for p in params.values())
    tridiagonal, _ = lanczos(lambda v: matvec(v[None].to(dtype))[0], size, steps, seed, images.device)
    ritz = torch.linalg.eigvalsh(tridiagonal)
    lowest, highest = float(ritz[0]), float(ritz[-1])
    damping = max(2 * max(0.0, -lowest), highest / 100)
    return damping, {"lambda_min": lowest, "lambda_max": highest, "steps": len(tridiagonal)}


def influence_functions(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
                        damping: float | None = None, indices: Sequence[int] | Tensor | None = None,
                        weight_decay: float = 0.0, curvature: str = "hessian", iterations: int = 100,
                        tolerance: float = 1e-6, batch_size: int = 64, config: dict | None = None,
                        max_residual: float = MAX_RESIDUAL) -> InfluenceResult:
    """Influence-function estimate of LOO at the trained ``net``: (1/n) grad L_j^T (H + lambda I)^-1 grad L_i.

    H is the curvature of the training objective mean_i L_i + weight_decay / 2 ||theta||^2 over all n images
    (so ``weight_decay`` should be the protocol's, and ``damping`` lambda is extra). ``damping`` None (the
    default) chooses it from the curvature (``curvature_damping``, estimates in ``meta["lanczos"]``): a
    trained network's Hessian has negative eigenvalues, and a damping below |lambda_min| makes CG diverge.
    The sign follows the LOO definition: positive when leaving i out raises test loss j. Returns ``matrix``
    [k, T]; ``meta["cg_residual"]`` holds each row's relative CG residual (CG stops at ``tolerance``).
    Raises ``DdnbError`` when the solve is not a result: a row met negative curvature, or ended with a
    relative residual above ``max_residual``.
    """
    _check_independent(net)
    rows = _rows(len(images), indices)
    meta: dict[str, Any] = {}
    if damping is None:
        damping, meta["lanczos"] = curvature_damping(net, images, labels, weight_decay, curvature)
    solve, = _influence_matrices(net, images, labels, test_images, test_labels, [damping], rows, weight_decay, curvature,
                                 iterations, tolerance, batch_size)
    failure = solve.failure(iterations, max_residual)
    if failure:
        raise DdnbError(f"influence functions: {failure}; raise the damping (damping=None chooses it from the curvature)"
                        " or the iterations")
    settings = {"method": "influence_function", "damping": damping, "weight_decay": weight_decay, "curvature": curvature,
                "cg_iterations": iterations, "cg_tolerance": tolerance, "train_count": len(images),
                "test_count": len(test_images), "rows": rows.tolist()} | (config or {})
    return InfluenceResult(solve.matrix, rows, settings, meta=meta | {"cg_residual": solve.residual.tolist()})


def tracin(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
           checkpoints: Sequence[dict[str, Tensor]] | None = None, lr: float = 1.0,
           indices: Sequence[int] | Tensor | None = None, batch_size: int = 64, config: dict | None = None) -> InfluenceResult:
    """TracIn-like baseline: (lr / n) sum over checkpoints of grad L_j(theta_c) . grad L_i(theta_c), [k, T].

    ``checkpoints``: parameter dicts or state_dicts (e.g. ``train(..., snapshot_at=...).snapshots.values()``);
    default the final ``net`` alone. Each checkpoint stands for one full-batch step of size ``lr``, whose
    first-order effect of removing i on test loss j is this dot product, so the sign matches LOO.
    """
    rows = _rows(len(images), indices)
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    device = images.device
    states = [detached_parameters(net)] if checkpoints is None else [{k: c[k].to(device) for k in names} for c in checkpoints]
    matrix = torch.zeros(len(rows), len(test_images), dtype=images.dtype, device=device)
    for params in states:
        train_grads = per_image_gradients(net, params, images[rows.to(device)], labels[rows.to(device)], batch_size)
        matrix += _test_dot(net, params, test_images, test_labels, train_grads, batch_size)
    settings = {"method": "tracin", "lr": lr, "checkpoints": len(states), "train_count": len(images),
                "test_count": len(test_images), "rows": rows.tolist()} | (config or {})
    return InfluenceResult(matrix * (lr / len(images)), rows, settings)


# ---- agreement


@dataclass
class Agreement:
    """How well influence matrix ``a`` agrees with ``b`` (both [k, T]).

    ``pearson``, ``spearman`` [T]: per test image, correlation over the k training images (NaN where a
    column is constant); ``top_overlap`` [k]: per training image, the fraction of its ``top`` most
    influenced test images (largest values) that both matrices share; ``pearson_all``: over all entries.
    ``note``: empty, or why ``a`` is not a result and every score is NaN (see ``damping_sweep``).
    """

    pearson: Tensor
    spearman: Tensor
    top_overlap: Tensor
    pearson_all: float
    top: int
    note: str = ""  # why the estimate is not a result (then every score is NaN), e.g. a diverged CG solve

    def summary(self) -> dict[str, float]:
        """Means over test images (NaN ignored) and training images."""
        return {"pearson": float(self.pearson.nanmean()), "spearman": float(self.spearman.nanmean()),
                "top_overlap": float(self.top_overlap.mean()), "pearson_all": self.pearson_all}


def _column_pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))  # 0 / 0 -> NaN for a constant column


def _ranks(x: Tensor) -> Tensor:
    """Ranks along dim 0 (ties broken by order; influence values are continuous)."""
    return x.argsort(0).argsort(0).to(torch.float64)


def agreement(a: Tensor, b: Tensor, top: int = 10) -> Agreement:
    """Per-test-image Pearson and Spearman, top-``top`` overlap per training image, of a and b [k, T]."""
    if a.shape != b.shape:
        raise DdnbError(f"influence matrices differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    top = min(top, a.shape[1])
    top_a, top_b = a.topk(top, dim=1).indices, b.topk(top, dim=1).indices
    overlap = (top_a[:, :, None] == top_b[:, None, :]).any(2).double().mean(1)
    flat = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    return Agreement(_column_pearson(a, b), _column_pearson(_ranks(a), _ranks(b)), overlap, flat, top)


def damping_sweep(net: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
                  reference: InfluenceResult, dampings: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                  weight_decay: float = 0.0, curvature: str = "hessian", iterations: int = 100,
                  tolerance: float = 1e-6, batch_size: int = 64, top: int = 10,
                  max_residual: float = MAX_RESIDUAL) -> dict[float, Agreement]:
    """Agreement with ``reference`` (a LOO result; its rows are used) of the IF estimate at each damping.

    ``net`` must be the network trained on all images (for LOO, the same protocol and initialisation).
    A damping whose solve is not a result (negative curvature met, or a residual above ``max_residual``:
    see ``influence_functions``) is not an error here, so one bad damping leaves the others' scores:
    its ``Agreement`` is NaN throughout and its ``note`` says why.
    """
    rows = reference.rows
    solves = _influence_matrices(net, images, labels, test_images, test_labels, dampings, rows, weight_decay,
                                 curvature, iterations, tolerance, batch_size)
    return {solve.damping: _scored(solve, reference.matrix, iterations, max_residual, top) for solve in solves}


def _scored(solve: _Solve, reference: Tensor, iterations: int, max_residual: float, top: int) -> Agreement:
    """``agreement`` of the solve's matrix with ``reference``, or NaN scores and the reason when it is no result."""
    failure = solve.failure(iterations, max_residual)
    if not failure:
        return agreement(solve.matrix, reference.to(solve.matrix), top)
    k, count = solve.matrix.shape
    nan = float("nan")
    columns, rows = torch.full((count,), nan, dtype=torch.float64), torch.full((k,), nan, dtype=torch.float64)
    return Agreement(columns, columns.clone(), rows, nan, min(top, count), failure)


AGREEMENT_FIELDS = ("pearson", "spearman", "top_overlap")


def estimate_agreement(distilled: Distilled, reference: InfluenceResult, test_images: Tensor, test_labels: Tensor,
                       net: str = "convnet", seed: int = 0, protocol: Protocol | str = "paper300",
                       dampings: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0), iterations: int = 100,
                       top: int = 10) -> dict[str, Agreement]:
    """How well the cheap estimates agree with ``reference``, the LOO result of ``distilled_influence`` (same
    ``net``, ``seed``, ``protocol`` and test images): the influence function at each damping (with the
    protocol's weight decay in the curvature) and the gradient dot product, all at the network trained on
    every image from the shared initialisation. Returns label -> ``Agreement``, in the order of a table (no
    ``dampings``: the gradient dot product alone). A damping whose solve diverged scores NaN and its
    ``note`` says why (``damping_sweep``). The conjugate gradients behind them are most of the semantics page's
    time at ``cifar10-cpu`` once LOO is stored.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    images, labels = distilled.images.to(test_images.device), distilled.labels.to(test_images.device)
    model = _initial_network(distilled, net, seed, test_images.device)
    train(model, images, labels, protocol, seed)
    sweep = damping_sweep(model, images, labels, test_images, test_labels, reference, dampings, protocol.weight_decay,
                          iterations=iterations, top=top) if dampings else {}
    results = {f"influence function, damping {damping:g}": result for damping, result in sweep.items()}
    dots = tracin(model, images, labels, test_images, test_labels, indices=reference.rows)
    results["gradient dot product (TracIn-like)"] = agreement(dots.matrix, reference.matrix.to(dots.matrix), top)
    return results
