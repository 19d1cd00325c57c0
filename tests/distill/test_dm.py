import torch

from ddnb.distill import LoopConfig, distill
from ddnb.nets import build_net, reinitialise
from ddnb.train import EvalConfig, run


def test_reinitialise_draws_new_weights_from_the_generator_only():
    net = build_net("convnet-tiny")
    torch.manual_seed(0)
    before_global = torch.rand(1)
    torch.manual_seed(0)
    reinitialise(net, torch.Generator().manual_seed(1))
    first = [p.clone() for p in net.parameters()]
    reinitialise(net, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, net.parameters()))
    reinitialise(net, torch.Generator().manual_seed(2))
    assert not torch.equal(first[0], next(net.parameters()))
    assert torch.equal(torch.rand(1), before_global)


def test_dm_beats_random_real_images_on_shapes(shapes_small):
    test = (shapes_small.test.images, shapes_small.test.labels)
    config = EvalConfig("paper300", "convnet-tiny", seeds=(0, 1))
    random = distill("random", shapes_small, ipc=10, seed=0)
    dm = distill("dm", shapes_small, ipc=10, seed=0, loop=LoopConfig(steps=200, progress=False),
                 real_per_class=32, net="convnet-tiny")
    assert dm.losses[-20:].mean() < dm.losses[:20].mean()  # the matching loss goes down
    random_acc = run(random.images, random.labels, test, config).mean
    dm_acc = run(dm.images, dm.labels, test, config).mean
    assert dm_acc > random_acc + 0.03, (dm_acc, random_acc)
