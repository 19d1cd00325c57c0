import pytest
import torch
import torch.nn.functional as F

from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.train import EvalConfig, PROTOCOLS, Protocol, evaluate, get_protocol, run, train


def test_protocols_are_the_papers():
    paper = PROTOCOLS["paper300"]
    assert (paper.batch_size, paper.steps, paper.lr, paper.momentum, paper.weight_decay, paper.augment) == (None, 300, 0.01, 0.9, 0.0, False)
    assert PROTOCOLS["real"].iterations(50_000) == 196
    assert PROTOCOLS["dc300"].iterations(100) == 300 and not PROTOCOLS["dc300"].augment
    assert PROTOCOLS["dsa1000"].iterations(500) == 2000 and PROTOCOLS["dsa1000"].augment
    assert PROTOCOLS["dsa1000"].weight_decay == 5e-4 and PROTOCOLS["dsa1000"].decay_at_half
    assert get_protocol("real", epochs=3).iterations(512) == 6
    with pytest.raises(DdnbError, match="unknown protocol"):
        get_protocol("adam")


def _train_tiny(dataset, protocol, seed, **kwargs):
    net = build_net("convnet-tiny", seed=seed)
    result = train(net, dataset.train.images, dataset.train.labels, protocol, seed=seed, **kwargs)
    return net, result


def test_same_seed_gives_bit_identical_training(shapes_small):
    protocol = Protocol("t", batch_size=64, epochs=1, augment=True, weight_decay=5e-4, decay_at_half=True)
    (net_a, result_a), (net_b, result_b) = _train_tiny(shapes_small, protocol, 3), _train_tiny(shapes_small, protocol, 3)
    assert torch.equal(result_a.losses, result_b.losses)
    assert all(torch.equal(p, q) for p, q in zip(net_a.parameters(), net_b.parameters()))
    net_c, result_c = _train_tiny(shapes_small, protocol, 4)
    assert not torch.equal(result_a.losses, result_c.losses)


def test_training_learns_and_records_what_was_asked(shapes_small):
    test = (shapes_small.test.images, shapes_small.test.labels)
    protocol = Protocol("t", batch_size=100, epochs=4, lr=0.05)
    initial = build_net("convnet-tiny", seed=0)
    net, result = _train_tiny(shapes_small, protocol, 0, eval_split=test, record_at=(0, 20, 40), snapshot_at=(0, 40))
    assert len(result.losses) == 40 and torch.isfinite(result.losses).all()
    assert torch.equal(result.predictions[0], evaluate(initial, *test).predictions)
    assert all(torch.equal(v, initial.state_dict()[k]) for k, v in result.snapshots[0].items())
    final = evaluate(net, *test)
    assert torch.equal(result.predictions[40], final.predictions) and result.accuracies[40] == final.accuracy
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in result.snapshots[40].items())
    assert final.accuracy > result.accuracies[0] + 0.15 and final.accuracy > 0.3  # chance is 0.1


def test_training_stopped_early_is_the_full_run_up_to_there_and_sees_every_iteration(shapes_small):
    protocol = Protocol("t", batch_size=64, epochs=2, augment=True, decay_at_half=True)
    _, full = _train_tiny(shapes_small, protocol, 1, snapshot_at=(20,))
    seen = []
    net, stopped = _train_tiny(shapes_small, protocol, 1, until=20, at_iteration=lambda net, t: seen.append(t))
    assert seen == list(range(21)) and torch.equal(stopped.losses, full.losses[:20])
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in full.snapshots[20].items())
    with pytest.raises(DdnbError, match="outside"):
        _train_tiny(shapes_small, protocol, 1, until=len(full.losses) + 1)


def test_a_training_resumed_from_a_checkpoint_ends_as_the_uninterrupted_one(shapes_small):
    """Checkpoints mid-epoch, before and after the learning-rate drop, with augmentation and momentum: each
    resumed on a fresh network gives the uninterrupted run's weights and losses bit for bit."""
    protocol = Protocol("t", batch_size=400, epochs=2, augment=True, weight_decay=5e-4, decay_at_half=True)  # 2 x 3 updates
    states = []
    net, whole = _train_tiny(shapes_small, protocol, 3, checkpoint_every_s=0.0, on_checkpoint=states.append)
    assert [int(state["done"]) for state in states] == [1, 2, 3, 4, 5]  # none after the last update
    for state in (states[0], states[3]):  # mid-epoch: in the first; after the drop, in the second
        resumed_net, resumed = _train_tiny(shapes_small, protocol, 3, resume=state)
        assert torch.equal(resumed.losses, whole.losses)
        assert all(torch.equal(a, b) for a, b in zip(resumed_net.state_dict().values(), net.state_dict().values()))
    with pytest.raises(DdnbError, match="records nothing from before"):
        _train_tiny(shapes_small, protocol, 3, resume=states[1], record_at=[6], eval_split=(shapes_small.test.images, shapes_small.test.labels))


def test_progress_bars_count_every_update(shapes_small, monkeypatch):
    import ddnb.stacked
    import ddnb.train
    from ddnb.stacked import stack, train_stacked
    bars = []

    class RecordingBar(ddnb.train.tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(ddnb.train, "tqdm", RecordingBar)
    monkeypatch.setattr(ddnb.stacked, "tqdm", RecordingBar)
    protocol = Protocol("t", batch_size=100, epochs=1)
    _, result = _train_tiny(shapes_small, protocol, 0, progress=True)
    stacked = stack([build_net("convnet-tiny", seed) for seed in (0, 1)])
    train_stacked(stacked, shapes_small.train.images, shapes_small.train.labels, protocol, [0, 1], backend="vmap", progress=True)
    steps = len(result.losses)
    assert set(bars) == {(steps, steps)}  # each ended at "N/N", not one short


def test_evaluate_is_consistent_and_batch_size_invariant(shapes_small):
    net = build_net("convnet-tiny", seed=1)
    images, labels = shapes_small.test.images[:300], shapes_small.test.labels[:300]
    small, large = evaluate(net, images, labels, batch_size=7), evaluate(net, images, labels, batch_size=500)
    assert torch.equal(small.predictions, large.predictions)
    assert torch.allclose(small.losses, large.losses, atol=1e-5)
    with torch.no_grad():
        logits = net(images)
    assert torch.allclose(large.losses, F.cross_entropy(logits, labels, reduction="none"), atol=1e-5)
    assert large.accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_non_finite_loss_stops_with_a_clear_error(shapes_small):
    images = shapes_small.train.images[:20].clone()
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DdnbError, match="diverged.*iteration 0"):
        train(build_net("convnet-tiny"), images, shapes_small.train.labels[:20], PROTOCOLS["paper300"])


def test_run_trains_one_network_per_seed(shapes_small):
    config = EvalConfig(protocol="paper300", net="convnet-tiny", seeds=(0, 1), steps=30)
    index = torch.arange(0, 1000, 10)
    images, labels = shapes_small.train.images[index], shapes_small.train.labels[index]
    test = (shapes_small.test.images, shapes_small.test.labels)
    summary, again = run(images, labels, test, config), run(images, labels, test, config)
    assert len(summary.accs) == 2 and summary.accs == again.accs
    assert summary.mean == pytest.approx(sum(summary.accs) / 2)
    assert summary.accs[0] != summary.accs[1] and summary.std > 0
