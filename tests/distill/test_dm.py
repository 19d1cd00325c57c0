import torch

from ddnb.nets import build_net, reinitialise


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
