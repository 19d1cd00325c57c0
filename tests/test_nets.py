import pytest
import torch
from torch.func import functional_call

from ddnb.errors import DdnbError
from ddnb.nets import NET_NAMES, ConvNet, ConvNetConfig, build_net, count_parameters
from ddnb.store import Store


@pytest.mark.parametrize("name, expected", [("convnet", 320_010), ("convnet-tiny", 7_754)])
def test_convnet_parameter_counts_match_the_paper(name, expected):
    assert count_parameters(build_net(name)) == expected


def test_convnet_is_instance_norm_avgpool_relu():
    net = build_net("convnet")
    kinds = [type(m).__name__ for m in net.body]
    assert kinds[:4] == ["Conv2d", "GroupNorm", "ReLU", "AvgPool2d"]
    assert net.body[1].num_groups == net.body[1].num_channels == 128


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnets_have_cifar_stem_and_classify(name):
    net = build_net(name)
    stem_conv = net.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert isinstance(net.stem[1], torch.nn.BatchNorm2d)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("name", NET_NAMES)
def test_every_network_is_saved_and_loaded_by_the_store(name, tmp_path):
    """A trained network is a ``model`` artifact: its state dict must be writable by safetensors (no aliased
    tensors) and load back into a fresh network of the same name."""
    torch.manual_seed(0)
    net = build_net(name)
    Store(tmp_path).save("model", {"net": name}, net.state_dict())
    again = build_net(name)
    again.load_state_dict(Store(tmp_path).load("model", {"net": name}).tensors)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(again.eval()(images), net.eval()(images))


@pytest.mark.parametrize("norm", ["instance", "batch", "layer", "none"])
@pytest.mark.parametrize("pool", ["avg", "max", "none"])
def test_convnet_family_variants_run(norm, pool):
    net = ConvNet(ConvNetConfig(width=8, depth=2, norm=norm, pool=pool), image_size=16, num_classes=5)
    out = net(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 5)
    side = 4 if pool != "none" else 16
    assert net.features(torch.randn(1, 3, 16, 16)).shape == (1, 8 * side * side)


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_net("convnet-tiny", seed=4), build_net("convnet-tiny", seed=4), build_net("convnet-tiny", seed=5)
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("name", ["convnet-tiny", "convnet-bn", "resnet18"])
def test_functional_call_with_explicit_parameters_matches_module(name):
    net = build_net(name).eval()
    x = torch.randn(4, 3, 32, 32)
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    assert torch.allclose(functional_call(net, state, (x,)), net(x), atol=1e-6)
    doubled = {k: v * 2 if k == "head.bias" else v for k, v in state.items()}
    assert torch.allclose(functional_call(net, doubled, (x,)) - net(x), net.head.bias.expand(4, -1), atol=1e-5)


def test_gradients_flow_to_input_through_functional_call():
    net = build_net("convnet-tiny")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    params = {k: v.detach().requires_grad_() for k, v in net.named_parameters()}
    functional_call(net, params, (x,)).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is not None for p in params.values())


def test_unknown_names_are_clear_errors():
    with pytest.raises(DdnbError, match="unknown network"):
        build_net("vgg11")
    with pytest.raises(DdnbError, match="unknown norm"):
        build_net("convnet", norm="weird")
