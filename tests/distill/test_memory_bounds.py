"""Options that bound a distiller's memory change how the work is split, not what it computes or where it is kept."""

import pytest
import torch

from ddnb.data import DataConfig, load_dataset
from ddnb.distill import LoopConfig, distill, distill_job
from ddnb.distill.bptt import BPTTOptions, TruncatedBPTT
from ddnb.distill.loop import REAL_IMAGES_PER_PASS, RealSampler, classes_per_pass, make_synthetic
from ddnb.distill.mtt import MTTOptions
from ddnb.distill.unroll import activation_values, choose_recompute
from ddnb.nets import build_net
from ddnb.store import Store, settings_key

MTT = dict(syn_steps=4, experts=1, expert_epochs=2, max_start_epoch=2, expert_epochs_trained=4, expert_snapshot_iterations=4,
           net="convnet-tiny", lr_images=100.0)
BPTT = dict(window=4, unroll=6, real_batch=50, net="convnet-tiny", lr_images=0.01)  # augmentation on: drawn outside each step


@pytest.mark.parametrize("method, options", [("mtt", MTT), ("bptt", BPTT), ("bptt", BPTT | {"inner_optimizer": "sgd", "augment": False})])
def test_recomputed_unrolled_steps_give_the_same_set(method, options, shapes_small, tmp_path):
    """BPTT's set is the same bits; MTT's to float rounding (the gradients of the batches it indexes from the set add
    up in another order)."""
    runs = {recompute: distill(method, shapes_small, ipc=2, seed=1, loop=LoopConfig(steps=3, progress=False, checkpoint_every=0),
                               store=Store(tmp_path), recompute=recompute, **options) for recompute in (False, True)}
    assert not torch.equal(runs[False].images, distill("random", shapes_small, ipc=2, seed=1).images)
    tolerance = dict(rtol=1e-5, atol=1e-6) if method == "mtt" else dict(rtol=0, atol=0)
    torch.testing.assert_close(runs[True].images, runs[False].images, **tolerance)
    torch.testing.assert_close(runs[True].losses, runs[False].losses, **tolerance)
    assert runs[True].lr == pytest.approx(runs[False].lr, rel=1e-5) if method == "mtt" else runs[True].lr is None


def _graph_bytes(recompute: bool, shapes_small) -> int:
    """Bytes the autograd graph of one BPTT window keeps until the backward pass."""
    generator = torch.Generator().manual_seed(0)
    method = TruncatedBPTT(BPTTOptions(window=8, unroll=8, net="convnet-tiny", recompute=recompute))
    synthetic = make_synthetic(shapes_small, 10, "real", 0.01, generator, None, 0.0, "adam")
    method.prepare(synthetic, RealSampler(shapes_small), generator)
    kept = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        kept += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        method._inner(synthetic, generator)
    return kept


def test_recompute_keeps_a_fraction_of_the_unrolled_graph(shapes_small):
    """Only each step's inputs stay for the backward pass: the 8-step window keeps under a quarter of its graph."""
    full, recomputed = _graph_bytes(False, shapes_small), _graph_bytes(True, shapes_small)
    assert recomputed < full / 4, (recomputed, full)


def test_recompute_is_chosen_from_free_memory(monkeypatch):
    net, batch = build_net("convnet-tiny"), torch.zeros(10, 3, 32, 32)
    monkeypatch.setattr("ddnb.distill.unroll.free_memory", lambda device: 10**12)
    assert not choose_recompute(None, 60, net, batch) and choose_recompute(True, 60, net, batch)
    monkeypatch.setattr("ddnb.distill.unroll.free_memory", lambda device: 10**6)
    assert choose_recompute(None, 60, net, batch) and not choose_recompute(False, 60, net, batch)


def _one_step(method: str, classes_per_pass: int, shapes_small) -> torch.Tensor:
    options = dict(real_per_class=20, net="convnet-tiny", classes_per_pass=classes_per_pass)
    if method == "gm":
        options |= dict(outer_loop=2, inner_loop=2)
    return distill(method, shapes_small, ipc=2, seed=2, loop=LoopConfig(steps=2, progress=False, checkpoint_every=0), **options).images


def test_real_images_in_class_chunks_give_the_same_step(shapes_small):
    """DM's embeddings are per image: the same bits in any chunking. GM's per-class gradients are vmapped over the
    classes of a chunk, whose kernels sum in another order: the same to float rounding."""
    assert torch.equal(_one_step("dm", 1, shapes_small), _one_step("dm", 10, shapes_small))
    torch.testing.assert_close(_one_step("gm", 1, shapes_small), _one_step("gm", 10, shapes_small), rtol=1e-5, atol=1e-5)


def test_classes_per_pass_defaults_to_the_references_batch():
    assert classes_per_pass(10, 256, None) == 1 and REAL_IMAGES_PER_PASS == 256  # the published settings: one class a pass
    assert classes_per_pass(10, 64, None) == 4 and classes_per_pass(10, 512, None) == 1
    assert classes_per_pass(10, 64, 3) == 3 and classes_per_pass(10, 64, 50) == 10


def test_runtime_options_stay_out_of_store_keys():
    data = DataConfig("shapes", train_per_class=100, test_size=1000)
    assert "recompute" not in settings_key(MTTOptions(recompute=True)) and "syn_steps" in settings_key(MTTOptions())
    for method in ("bptt", "dm", "gm", "mtt"):
        job = distill_job(method, data, "smoke", progress=False)
        assert not {"recompute", "classes_per_pass"} & set(job.key["options"]), method


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu.sh runs it)")
def test_cuda_memory_bounds_give_the_same_sets(store):
    dataset = load_dataset(DataConfig("shapes", train_per_class=100, test_size=1000), store, "cuda")
    loop = LoopConfig(steps=2, progress=False, checkpoint_every=0)
    for method, options, bounds in [("bptt", BPTT, ({"recompute": False}, {"recompute": True})),
                                    ("dm", {"real_per_class": 20}, ({"classes_per_pass": 10}, {"classes_per_pass": 1})),
                                    ("gm", {"real_per_class": 20, "outer_loop": 2, "inner_loop": 2}, ({"classes_per_pass": 10}, {"classes_per_pass": 1}))]:
        first, second = (distill(method, dataset, ipc=2, seed=3, loop=loop, **options, **bound).images for bound in bounds)
        torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-5, msg=method)


def test_estimating_the_graph_leaves_the_network_as_it_was():
    net = build_net("resnet18", norm="batch")
    before = {name: buffer.clone() for name, buffer in net.named_buffers()}
    activation_values(net, torch.randn(4, 3, 32, 32))
    assert net.training and all(torch.equal(before[name], buffer) for name, buffer in net.named_buffers())
