import pytest
import torch

from ddnb.distill import LoopConfig, distill
from ddnb.distill.experts import ExpertConfig, expert_trajectories, snapshot_iterations, train_expert
from ddnb.distill.mtt import CANDIDATES, parameter_distance
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.profiles import get_profile
from ddnb.store import Store

EXPERT = ExpertConfig(net="convnet-tiny", epochs=2, snapshot_iterations=4, batch_size=100, dsa=False)


def test_expert_snapshots_follow_training(shapes_small):
    trajectory = train_expert(shapes_small, EXPERT, seed=3)
    initial = build_net("convnet-tiny", seed=3)
    # 1000 images / batch 100 = 10 iterations per epoch, 20 in all, a snapshot every 4: t = 0, 4, ..., 20
    assert trajectory["head.weight"].shape == (6, 10, 256)
    assert torch.equal(trajectory["head.weight"][0], initial.head.weight.detach())
    moves = [parameter_distance({k: v[i] for k, v in trajectory.items()}, {k: v[0] for k, v in trajectory.items()}) for i in range(6)]
    assert all(a < b for a, b in zip(moves, moves[1:]))  # the network moves away from its initialisation


def test_experts_are_made_once_and_reloaded(shapes_small, tmp_path):
    store = Store(tmp_path)
    first = expert_trajectories(shapes_small, EXPERT, 2, store, progress=False)
    assert len(list((tmp_path / "expert").glob("*.safetensors"))) == 2
    again = expert_trajectories(shapes_small, EXPERT, 2, store, progress=False)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, again) for k in a)
    assert not torch.equal(first[0]["head.weight"][-1], first[1]["head.weight"][-1])


def test_mtt_learns_images_and_step_size(shapes_small, tmp_path):
    options = dict(syn_steps=4, experts=2, expert_epochs=2, max_start_epoch=2, expert_epochs_trained=4,
                   expert_snapshot_iterations=4, net="convnet-tiny", lr_images=100.0)
    result = distill("mtt", shapes_small, ipc=2, seed=0, loop=LoopConfig(steps=4, progress=False), store=Store(tmp_path), **options)
    assert result.lr is not None and result.lr != pytest.approx(0.01) and len(result.losses) == 4
    assert torch.isfinite(result.images).all()
    with pytest.raises(DdnbError, match="snapshots"):  # refused before any expert is trained
        distill("mtt", shapes_small, ipc=2, loop=LoopConfig(steps=1, progress=False), store=Store(tmp_path / "fresh"),
                **(options | {"max_start_epoch": 4}))
    assert not list((tmp_path / "fresh").glob("expert/*.safetensors"))


@pytest.mark.parametrize("name", ["lr-images-1000", "lr-images-100"])
def test_the_cifar10_cpu_experts_reach_every_start_and_target(name):
    """The experts of each cifar10-cpu candidate, trained on the 45,000 CIFAR-10 training images its validation split
    leaves (5,000 per class less 500), keep enough snapshots for max_start_epoch + expert_epochs intervals."""
    options = CANDIDATES["cifar10-cpu"][name].options
    images = 10 * (5000 - get_profile("cifar10-cpu").validation_per_class)
    kept = snapshot_iterations(options.expert_config(), images)
    assert len(kept) >= options.max_start_epoch + options.expert_epochs, list(kept)  # as TrajectoryMatching.prepare checks
