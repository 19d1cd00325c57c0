"""Independent jobs (a pool chunk, an expert, a distilled set, a notebook) run in this process or on Ray.

A ``Job`` names the store artifact it produces (``kind`` + ``key``) and how to make it:
``make(*inputs) -> (tensors, meta)``. ``run_jobs`` loads the jobs already in the store and makes the
others, one after another in this process (``LocalRunner``) or as one Ray task each (``RayRunner``).
Results always go through the store, so a rerun after a failure makes only what is missing, and both
runners give the same tensors for the same seeds (bit for bit on the CPU, at the same torch thread count:
a Ray task uses one thread per CPU it holds, 1 by default).

What a job must look like for Ray to ship it:

- ``make`` is picklable: a top-level function, wrapped in ``functools.partial`` with its small settings
  (no lambdas or closures);
- large inputs shared by many jobs (the data set) go in ``inputs`` and are passed after the partial's own
  positional arguments. The Ray runner puts each distinct input object into Ray's object store once (on
  the CPU) instead of pickling it into every task; a task with ``gpus > 0`` moves inputs that have a
  ``.to(device)`` method (tensors, ``Dataset``) onto its GPU first;
- a job without tensors (executing a notebook) returns ``({}, meta)``: its artifact records that it
  finished and ``meta`` says what it wrote (which must then be on a filesystem the caller can read).

Example, one notebook execution::

    Job("notebook", {"notebook": "dynamics", "profile": "paper", "source": source_hash},
        partial(execute_notebook, "notebooks/dynamics.ipynb", "_build/dynamics.ipynb"), gpus=1)

where ``execute_notebook(path, out) -> ({}, {"out": out})`` is a top-level function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol

import torch
from tqdm.auto import tqdm

from ddnb.errors import DdnbError
from ddnb.kernels import current_kernels, kernels
from ddnb.store import Artifact, Store, config_key

Make = Callable[..., tuple[dict[str, torch.Tensor], dict]]


@dataclass
class Job:
    """One artifact to make: ``make(*inputs) -> (tensors, meta)``, saved in the store under ``(kind, key)``.

    ``gpus`` is what the job asks Ray for per task (0: a CPU job); in-process it changes nothing.
    """

    kind: str
    key: dict[str, Any]
    make: Make
    inputs: tuple = ()
    gpus: float = 0
    needs: tuple["Job", ...] = ()  # jobs whose artifacts ``make`` takes after ``inputs``; they are made first
    checkpoint: dict[str, Any] | None = None  # key of the checkpoint a killed attempt leaves (kind "checkpoint")

    def maker(self, store: Store) -> Callable[[], tuple[dict[str, torch.Tensor], dict]]:
        """``make`` with its inputs and the artifacts of its ``needs``, from ``store`` when called (a need that is
        missing there, as when a kept result turned out corrupt and its pool was not kept, is made first)."""
        return lambda: self.make(*self.inputs, *(_need(store, need) for need in self.needs))


def _need(store: Store, need: Job) -> Artifact:
    if need.make is None:  # a Ray task's needs travel as kind and key only: they were made before it
        return store.load(need.kind, need.key)
    return store.get_or_make(need.kind, need.key, need.maker(store))


def data_job(kind: str, key: dict[str, Any], make: Make, dataset) -> Job:
    """A job whose one input is ``dataset`` (a ``ddnb.data.Dataset``); it asks Ray for a GPU when the data is on one."""
    return Job(kind, key, make, (dataset,), gpus=float(dataset.train.images.is_cuda))


class Runner(Protocol):
    """Where missing jobs are made: ``LocalRunner`` (this process) or ``RayRunner`` (one Ray task each)."""

    def run(self, jobs: list[Job], store: Store, progress: bool, desc: str) -> list[Artifact]: ...


class LocalRunner:
    """Makes the missing jobs one after another in this process (the default)."""

    def run(self, jobs: list[Job], store: Store, progress: bool = True, desc: str = "jobs") -> list[Artifact]:
        artifacts = []
        with tqdm(jobs, desc=desc, disable=not progress) as bar:
            for job in bar:
                bar.set_postfix_str(job.kind)  # which job the time goes to (a distillation shows its own bar too)
                artifacts.append(store.get_or_make(job.kind, job.key, job.maker(store)))
        return artifacts


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DdnbError("running jobs on Ray needs Ray, which is not installed: pip install 'ddnb[ray]'") from None
    return ray


def _to(value: Any, device: str) -> Any:
    return value.to(device) if hasattr(value, "to") else value


def _task(root: str, job: Job, threads: int, kernels_name: str, *inputs: Any) -> None:
    """The body of one Ray task: make the artifact into the shared store, with the driver's ``kernels``.
    ``get_or_make`` again, because a retried task may find that its killed first attempt had already saved it."""
    torch.set_num_threads(threads)  # a reused worker keeps the count of its first task otherwise
    device = "cuda" if job.gpus > 0 else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's own GPU
    store = Store(root)
    job = replace(job, inputs=tuple(_to(value, device) for value in inputs))  # its needs came as kind and key only
    with kernels(kernels_name):
        store.get_or_make(job.kind, job.key, job.maker(store))


class RayRunner:
    """One Ray task per missing job, ``num_gpus=job.gpus`` and ``num_cpus=cpus`` (= its torch threads) each.

    ``address`` is the cluster (``"auto"``: the one ``ray start`` runs on this machine; ``None``: Ray's
    default, ``$RAY_ADDRESS`` else a new local instance); a Ray already initialised in this process is used
    as it is. A task whose worker dies
    (killed, node lost, out of memory) is retried up to ``retries`` times; an exception raised by a job is
    not retried. The store must be a folder that every worker writes and this process reads: on a
    multi-node cluster, a shared filesystem.
    """

    def __init__(self, address: str | None = "auto", retries: int = 3, cpus: int = 1):
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            try:
                self.ray.init(address=address, ignore_reinit_error=True)
            except ConnectionError as error:
                raise DdnbError(f"no Ray cluster at {address!r} ({error}); start one with `ray start --head`") from None
        self.retries, self.cpus = retries, cpus

    def run(self, jobs: list[Job], store: Store, progress: bool = True, desc: str = "jobs") -> list[Artifact]:
        ray = self.ray
        task = ray.remote(max_retries=self.retries, num_cpus=self.cpus)(_task)
        root = str(store.root.resolve())  # workers need not share this process's working directory
        # verified, not just present: a corrupt artifact is made again (``find`` warns), as in this process
        found = {job_id(job): store.find(job.kind, job.key) for job in jobs}
        missing = {job_id(job): job for job in jobs if found[job_id(job)] is None}
        shared: dict[int, Any] = {}  # id(input) -> object ref: a data set used by every job is put once
        pending = []
        for job in missing.values():
            for value in job.inputs:
                if id(value) not in shared:
                    shared[id(value)] = ray.put(_to(value, "cpu"))
            refs = [shared[id(value)] for value in job.inputs]
            light = replace(job, inputs=(), needs=tuple(replace(need, make=None, inputs=(), needs=()) for need in job.needs))
            pending.append(task.options(num_gpus=job.gpus).remote(root, light, self.cpus, current_kernels(), *refs))
        failures = []
        with tqdm(total=len(pending), desc=desc, disable=not progress or not pending) as bar:
            while pending:  # keep waiting after a failure: every job that can finish lands in the store
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(done[0])
                except Exception as error:  # the job's own exception (Ray re-raises it as its cause's type)
                    failures.append(error)
                    bar.set_postfix(failed=len(failures))
                bar.update()
        if failures:
            raise failures[0]
        return [found[job_id(job)] or self._load(store, job) for job in jobs]

    @staticmethod
    def _load(store: Store, job: Job) -> Artifact:
        if not store.exists(job.kind, job.key):
            raise DdnbError(f"a Ray task made {job.kind} {config_key(job.kind, job.key)}, but it is not in {store.root}: "
                            "the store must be a folder every worker can write and this process can read "
                            "(a shared filesystem; set it with --store or DDNB_STORE)")
        return store.load(job.kind, job.key)


def get_runner(address: str | None = None) -> LocalRunner | RayRunner:
    """``RayRunner(address)`` when an address is given (or ``$DDNB_RAY`` holds one, e.g. ``auto``), else in-process."""
    address = address or os.environ.get("DDNB_RAY") or None
    return LocalRunner() if address is None else RayRunner(address)


def job_id(job: Job) -> tuple[str, str]:
    """What identifies a job's artifact: its kind and the hash of its key."""
    return job.kind, config_key(job.kind, job.key)


def waves(jobs: Iterable[Job], store: Store | None = None) -> list[list[Job]]:
    """``jobs`` and everything they need, each once, in waves: a job comes one wave after the last of its needs.
    With ``store``, a job already there needs nothing: what it was made from is left out (it may be gone, as a
    model pool that was not exported beside the analyses made from it)."""
    depth: dict[tuple[str, str], int] = {}
    unique: dict[tuple[str, str], Job] = {}

    def visit(job: Job) -> int:
        ident = job_id(job)
        if ident not in depth:
            kept = store is not None and store.exists(job.kind, job.key)
            depth[ident] = 0 if kept else 1 + max((visit(need) for need in job.needs), default=-1)
            unique[ident] = job
        return depth[ident]

    for job in jobs:
        visit(job)
    grouped: list[list[Job]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for ident, job in unique.items():
        grouped[depth[ident]].append(job)
    return grouped


def run_jobs(jobs: Iterable[Job], store: Store, runner: Runner | None = None, progress: bool = True,
             desc: str = "jobs") -> list[Artifact]:
    """The artifact of every job, in job order: loaded from ``store`` when there, else made by ``runner``
    (default: in this process) and saved there. The jobs that a missing job needs are made first, wave by wave
    (``waves``); those of a job already in the store are not touched."""
    jobs, runner = list(jobs), runner or LocalRunner()
    made: dict[tuple[str, str], Artifact] = {}
    for wave in waves(jobs, store):
        made |= {job_id(job): artifact for job, artifact in zip(wave, runner.run(wave, store, progress, desc))}
    return [made[job_id(job)] for job in jobs]
