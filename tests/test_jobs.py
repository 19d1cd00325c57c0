"""ddnb.jobs: in-process and Ray runs make the same artifacts, each once, and survive a killed worker."""

import dataclasses
import os
import signal
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from ddnb.analysis.dynamics import early_pool_of, subset_chunks, subset_pool_of
from ddnb.cli import build_parser
from ddnb.distill.experts import ExpertConfig, expert_jobs, expert_trajectories
from ddnb.errors import DdnbError
from ddnb.jobs import Job, LocalRunner, RayRunner, get_runner, run_jobs, waves
from ddnb.profiles import PoolConfig
from ddnb.sections.dynamics import early_jobs, subset_jobs
from ddnb.store import Store

try:
    import ray
except ImportError:
    ray = None

POOL = PoolConfig(net="convnet-tiny", subset_fractions=(0.05,), models_per_fraction=2, subset_epochs=1, early_models=2,
                  early_iterations=4, record_every=2, snapshot_models=1, chunk=1)  # two jobs per pool
EXPERT = ExpertConfig(net="convnet-tiny", epochs=1, snapshot_iterations=5, batch_size=100)  # DSA on: seeded augmentation too


def _count_calls(log: Path, value: float):
    with log.open("a") as file:
        file.write("call\n")
    return {"value": torch.tensor([value])}, {"value": value}


def _die_once(marker: Path, make, *inputs):
    """Kill this worker process on the first attempt (as a lost node would), then make the artifact."""
    with marker.open("a") as file:
        file.write("attempt\n")
    if marker.read_text().count("attempt") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return make(*inputs)


def _sum_needs(log: Path, *needs):
    """A job made from the artifacts of the jobs it needs."""
    with log.open("a") as file:
        file.write("sum\n")
    return {"value": sum(need.tensors["value"] for need in needs)}, {}


def _pools(dataset, store: Store, runner=None):
    subsets = run_jobs(subset_jobs(dataset, POOL), store, runner, progress=False)
    early = run_jobs(early_jobs(dataset, POOL), store, runner, progress=False)
    return subset_pool_of([a.tensors for a in subsets], subset_chunks(POOL)), early_pool_of([a.tensors for a in early])


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_in_process_jobs_are_made_once_and_returned_in_job_order(tmp_path):
    store, log = Store(tmp_path / "store"), tmp_path / "calls"
    jobs = [Job("toy", {"value": value}, partial(_count_calls, log, value)) for value in (3.0, 1.0, 2.0)]
    run_jobs(jobs[:2], store, progress=False)
    artifacts = run_jobs(jobs, store, progress=False)  # the first two are loaded, only the third is made
    assert [float(a.tensors["value"]) for a in artifacts] == [3.0, 1.0, 2.0]
    assert [a.meta for a in artifacts] == [{"value": 3.0}, {"value": 1.0}, {"value": 2.0}]
    assert log.read_text().count("call") == 3 and len(_files(store.root)) == 6


def _needing(log: Path) -> tuple[list[Job], Job]:
    parts = [Job("toy", {"value": value}, partial(_count_calls, log, value)) for value in (1.0, 2.0)]
    return parts, Job("sum", {"of": [1.0, 2.0]}, partial(_sum_needs, log), needs=tuple(parts))


def test_a_job_gets_what_it_needs_made_first_and_each_need_is_made_once(tmp_path):
    store, log = Store(tmp_path / "store"), tmp_path / "calls"
    parts, total = _needing(log)
    assert [[job.kind for job in wave] for wave in waves([total, parts[0]])] == [["toy", "toy"], ["sum"]]
    artifact, first = run_jobs([total, parts[0]], store, progress=False)  # asked before its need: made after it
    assert float(artifact.tensors["value"]) == 3.0 and float(first.tensors["value"]) == 1.0
    assert log.read_text().split() == ["call", "call", "sum"]


def test_the_runner_is_in_process_unless_ray_is_asked_for(monkeypatch):
    monkeypatch.delenv("DDNB_RAY", raising=False)
    assert isinstance(get_runner(None), LocalRunner)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(DdnbError, match=r"pip install 'ddnb\[ray\]'"):
        get_runner("auto")
    monkeypatch.setenv("DDNB_RAY", "auto")
    with pytest.raises(DdnbError, match=r"pip install 'ddnb\[ray\]'"):
        get_runner(None)
    assert build_parser().parse_args(["experts", "--data", "shapes", "--ray", "auto"]).ray == "auto"


@pytest.fixture(scope="module")
def one_thread():
    """Ray tasks run with one torch thread; the in-process reference does too (bit-identical results)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local(shapes_small, one_thread, tmp_path_factory):
    """The in-process results: (subset pool, early pool, two experts)."""
    store = Store(tmp_path_factory.mktemp("local"))
    return (*_pools(shapes_small, store), expert_trajectories(shapes_small, EXPERT, 2, store, progress=False))


@pytest.fixture(scope="module")
def ray_runner(one_thread):
    """A local Ray instance with 2 CPUs; workers import this test module (for its job functions) from the checkout."""
    if ray is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("CI runs the Ray tests, but Ray is not installed (pip install 'ddnb[ray]')")
        pytest.skip("Ray is not installed (pip install 'ddnb[ray]')")
    checkout = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": checkout}})
    yield RayRunner(None)
    ray.shutdown()


def test_ray_makes_the_same_pools_and_experts_as_in_process(ray_runner, local, shapes_small, tmp_path):
    store = Store(tmp_path)
    subsets, early = _pools(shapes_small, store, ray_runner)
    experts = expert_trajectories(shapes_small, EXPERT, 2, store, progress=False, runner=ray_runner)
    local_subsets, local_early, local_experts = local
    assert len(_files(tmp_path / "pool-subset")) == len(_files(tmp_path / "pool-early")) == len(_files(tmp_path / "expert")) == 4
    for field in ("fractions", "accuracies", "predictions"):
        assert torch.equal(getattr(subsets, field), getattr(local_subsets, field)), field
    for field in ("iterations", "accuracies", "predictions"):
        assert torch.equal(getattr(early, field), getattr(local_early, field)), field
    assert early.snapshots.keys() == local_early.snapshots.keys() and len(early.snapshots) > 0
    assert all(torch.equal(early.snapshots[name], local_early.snapshots[name]) for name in early.snapshots)
    assert all(torch.equal(mine[name], theirs[name]) for mine, theirs in zip(experts, local_experts) for name in theirs)
    assert len(experts) == 2 and not torch.equal(experts[0]["head.weight"][-1], experts[1]["head.weight"][-1])


def test_ray_makes_needs_first_and_passes_their_artifacts(ray_runner, tmp_path):
    parts, total = _needing(tmp_path / "calls")
    artifact, = run_jobs([total], Store(tmp_path / "store"), ray_runner, progress=False)
    assert float(artifact.tensors["value"]) == 3.0


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(ray_runner, local, shapes_small, tmp_path):
    store, marker = Store(tmp_path / "store"), tmp_path / "attempts"
    jobs = expert_jobs(shapes_small, EXPERT, 2)
    jobs[1] = dataclasses.replace(jobs[1], make=partial(_die_once, marker, jobs[1].make))
    artifacts = run_jobs(jobs, store, ray_runner, progress=False)
    assert marker.read_text().count("attempt") == 2  # killed once, then retried
    for artifact, expected in zip(artifacts, local[2], strict=True):
        assert all(torch.equal(artifact.tensors[name], expected[name]) for name in expected)
    paths = [store.path(job.kind, job.key) for job in jobs]  # one tensor file and one sidecar per job, nothing else
    assert _files(store.root) == sorted(str(p.relative_to(store.root)) for path in paths for p in (path, path.with_suffix(".json")))


@pytest.mark.parametrize("on_ray", [False, True], ids=["in-process", "ray"])
def test_a_bit_flipped_artifact_is_made_again_not_returned(on_ray, request, tmp_path):
    runner = request.getfixturevalue("ray_runner") if on_ray else None
    store, log = Store(tmp_path / "store"), tmp_path / "calls"
    job = Job("toy", {"value": 5.0}, partial(_count_calls, log, 5.0))
    path = run_jobs([job], store, runner, progress=False)[0].path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the tensor data
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        artifact, = run_jobs([job], store, runner, progress=False)
    assert float(artifact.tensors["value"]) == 5.0 and log.read_text().count("call") == 2
    assert float(store.load(job.kind, job.key).tensors["value"]) == 5.0  # the store holds a good copy again
