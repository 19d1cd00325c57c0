import pytest
import torch

from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.stacked import logits, stack, train_stacked
from ddnb.train import Protocol, evaluate, get_protocol, train


def _sequential(images, labels, protocol, seeds, eval_split, record_at):
    nets, results = [], []
    for seed in seeds:
        net = build_net("convnet-tiny", seed).double()
        results.append(train(net, images, labels, protocol, seed, eval_split=eval_split, record_at=record_at))
        nets.append(net)
    return nets, results


@pytest.mark.parametrize("backend", ["vmap", "loop"])
@pytest.mark.parametrize("protocol", [Protocol("minibatch-aug", batch_size=32, steps=12, weight_decay=5e-4, augment=True,
                                               decay_at_half=True), get_protocol("paper300", steps=10)])
def test_stacked_training_equals_one_network_at_a_time(shapes_small, protocol, backend):
    # float64: in float32 the two summation orders drift apart by ~1e-4 over 12 momentum steps on some CPUs (seen
    # in CI), which a loose tolerance would hide; in float64 they agree to ~1e-16, so a real mismatch cannot hide
    images, labels = shapes_small.train.images[:200].double(), shapes_small.train.labels[:200]
    eval_split, seeds = (shapes_small.test.images[:100].double(), shapes_small.test.labels[:100]), [0, 1, 2]
    nets, results = _sequential(images, labels, protocol, seeds, eval_split, record_at=(0, 5, protocol.steps))
    stacked = stack([build_net("convnet-tiny", seed).double() for seed in seeds])
    result = train_stacked(stacked, images, labels, protocol, seeds, eval_split=eval_split, record_at=(0, 5, protocol.steps),
                           backend=backend)
    for m, net in enumerate(nets):
        for name, value in net.named_parameters():
            assert torch.allclose(stacked.params[name][m], value, atol=1e-10, rtol=0), name
        assert torch.allclose(result.losses[m].double(), results[m].losses.double(), atol=1e-6)
        assert torch.equal(result.predictions[5][m], results[m].predictions[5])
        assert evaluate(stacked.unstack(m, net), *eval_split).accuracy == pytest.approx(float(result.accuracies[protocol.steps][m]))


@pytest.mark.parametrize("backend", ["vmap", "loop"])
def test_subsets_and_zero_weights_equal_training_on_fewer_images(shapes_small, backend):
    images, labels = shapes_small.train.images[:40].double(), shapes_small.train.labels[:40]  # float64: see above
    protocol = get_protocol("paper300", steps=8)
    # network 0 trains on images 0..19, network 1 on 20..39: the same as two runs on those slices
    stacked = stack([build_net("convnet-tiny", 0).double(), build_net("convnet-tiny", 0).double()])
    train_stacked(stacked, images, labels, protocol, [0, 0], subsets=torch.arange(40).view(2, 20), backend=backend)
    for m in range(2):
        net = build_net("convnet-tiny", 0).double()
        train(net, images[20 * m:20 * (m + 1)], labels[20 * m:20 * (m + 1)], protocol, 0)
        assert torch.allclose(stacked.params["head.weight"][m], net.head.weight, atol=1e-10, rtol=0)
    # weight 0 on image 3 is leaving it out (full batch): the mean runs over the other 39
    stacked = stack([build_net("convnet-tiny", 0).double()])
    weights = torch.ones(1, 40)
    weights[0, 3] = 0
    train_stacked(stacked, images, labels, protocol, [0], weights=weights, backend=backend)
    net, keep = build_net("convnet-tiny", 0).double(), torch.arange(40) != 3
    train(net, images[keep], labels[keep], protocol, 0)
    assert torch.allclose(stacked.params["head.weight"][0], net.head.weight, atol=1e-10, rtol=0)


def test_logits_match_each_network_and_batchnorm_is_refused(shapes_small):
    nets = [build_net("convnet-tiny", seed) for seed in (3, 4)]
    images = shapes_small.test.images[:50]
    stacked = stack(nets)
    out = logits(stacked, images)
    assert out.shape == (2, 50, 10)
    with torch.no_grad():
        assert all(torch.allclose(out[m], net(images), atol=1e-5) for m, net in enumerate(nets))
    # bounded memory: images split (20 pairs: one network, 20 images) or networks split (60: one net, 50 images)
    for pairs in (20, 60):
        assert torch.allclose(logits(stacked, images, pairs=pairs), out, atol=1e-6)
    per_network = torch.stack([images, images.flip(0)])  # [M, N, ...]: each network its own images
    unshared = logits(stacked, per_network, shared=False, pairs=20)
    assert torch.allclose(unshared[1], out[1].flip(0), atol=1e-5) and torch.allclose(unshared[0], out[0], atol=1e-6)
    with pytest.raises(DdnbError, match="BatchNorm"):
        stack([build_net("convnet-bn", 0)])
