"""The shared distillation loop: exact resume after a kill, and divergence handling (run with DM)."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from ddnb.distill import Distilled, LoopConfig, distill
from ddnb.distill.loop import CHECKPOINT_KIND
from ddnb.errors import DdnbError
from ddnb.store import Store

FAST = {"real_per_class": 8, "net": "convnet-tiny"}


class Killed(Exception):
    pass


def _kill_at(step_to_die):
    def on_step(step, loss):
        if step == step_to_die:
            raise Killed

    return on_step


BPTT_FAST = {"window": 2, "unroll": 4, "real_batch": 16, "net": "convnet-tiny"}  # Adam on images: its moments must resume too


@pytest.mark.parametrize("method, options", [("dm", FAST), ("bptt", BPTT_FAST)])
def test_resumed_run_equals_uninterrupted_run(shapes_small, tmp_path, method, options):
    loop = LoopConfig(steps=7, checkpoint_every=2, progress=False)
    whole = distill(method, shapes_small, ipc=2, seed=5, loop=loop, store=Store(tmp_path / "a"), **options)
    store = Store(tmp_path / "b")
    with pytest.raises(Killed):  # dies after step 5: the checkpoint at step 4 survives, step 5 is redone
        distill(method, shapes_small, ipc=2, seed=5, loop=loop, store=store, on_step=_kill_at(5), **options)
    assert len(list((store.root / CHECKPOINT_KIND).glob("*.safetensors"))) == 1
    resumed = distill(method, shapes_small, ipc=2, seed=5, loop=loop, store=store, **options)
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.losses, whole.losses)
    assert len(resumed.losses) == 7
    # the work kept from the killed attempt (steps 1-4, up to its checkpoint) is named, so the store can count it
    assert "earlier_cost" not in whole.meta and resumed.meta["earlier_cost"]["cpu_s"] > 0
    assert not list((store.root / CHECKPOINT_KIND).glob("*.safetensors"))  # removed once complete
    other_seed = distill(method, shapes_small, ipc=2, seed=6, loop=loop, **options)
    assert not torch.equal(other_seed.images, whole.images)


def test_diverging_run_stops_clearly_and_keeps_the_last_good_checkpoint(shapes_small, tmp_path):
    dataset = shapes_small.to("cpu")
    dataset.train.images = dataset.train.images.clone()
    store = Store(tmp_path)

    def poison_after_step_4(step, loss):  # numbers blow up after step 4: every later loss is NaN
        if step == 4:
            dataset.train.images[:] = float("nan")

    loop = LoopConfig(steps=10, checkpoint_every=2, progress=False)
    with pytest.raises(DdnbError, match="diverged: loss is nan at step 4") as error:
        distill("dm", dataset, ipc=2, seed=0, loop=loop, store=store, on_step=poison_after_step_4, **FAST)
    assert "checkpoint is kept" in str(error.value)
    kept = store.load(CHECKPOINT_KIND, _only_config(store))
    assert kept.meta["step"] == 4 and len(kept.tensors["losses"]) == 4
    assert torch.isfinite(kept.tensors["images"]).all() and torch.isfinite(kept.tensors["losses"]).all()


def test_exploding_loss_is_stopped(shapes_small):
    calls = []

    def step(synthetic, real, generator):
        calls.append(1)
        return 1.0 if len(calls) < 3 else 1e9

    from ddnb.distill import loop as loop_module

    class Exploding:
        def prepare(self, *args):
            pass

    method = Exploding()
    method.step = step
    generator = torch.Generator().manual_seed(0)
    synthetic = loop_module.make_synthetic(shapes_small, 1, "real", 0.1, generator)
    with pytest.raises(DdnbError, match="exploded"):
        loop_module.run_loop(method, synthetic, shapes_small, generator, LoopConfig(steps=5, progress=False), {})


def _only_config(store):
    import json

    (sidecar,) = (store.root / CHECKPOINT_KIND).glob("*.json")
    return json.loads(sidecar.read_text())["config"]


def test_killed_cli_run_resumes_to_the_same_tensors(tmp_path):
    """Kill `ddnb distill` with SIGKILL after its first checkpoint, rerun it, compare with a clean run."""
    # 120 steps: on a fast machine 30 ran from the first checkpoint (step 3) to the end between two polls
    base = [sys.executable, "-m", "ddnb.cli", "distill", "--method", "dm", "--data", "shapes", "--ipc", "2",
            "--steps", "120", "--checkpoint-every", "3", "--device", "cpu",
            "--option", "real_per_class=8", "--option", "net=convnet-tiny"]
    run_store = tmp_path / "store"
    process = subprocess.Popen(base + ["--out", str(tmp_path / "killed"), "--store", str(run_store)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(run_store.glob(f"{CHECKPOINT_KIND}/*.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(base + ["--out", str(tmp_path / "resumed"), "--store", str(run_store)], check=True, capture_output=True)
    subprocess.run(base + ["--out", str(tmp_path / "clean"), "--store", str(tmp_path / "fresh")], check=True, capture_output=True)
    resumed, clean = Distilled.load(tmp_path / "resumed.safetensors"), Distilled.load(tmp_path / "clean.safetensors")
    assert torch.equal(resumed.images, clean.images) and torch.equal(resumed.losses, clean.losses)


def test_unknown_option_and_init_are_clear_errors(shapes_small):
    with pytest.raises(DdnbError, match="no option"):
        distill("dm", shapes_small, ipc=1, learning_rate=3)
    with pytest.raises(DdnbError, match="unknown initialisation"):
        distill("dm", shapes_small, ipc=1, init="zeros", loop=LoopConfig(steps=1, progress=False))
