import pytest
import torch

from ddnb.analysis.dynamics import EarlyPool, SubsetPool, agreement, early_pool, matched_agreement, recognition, subset_pool
from ddnb.nets import build_net
from ddnb.profiles import PoolConfig
from ddnb.train import evaluate, get_protocol, train

TINY = PoolConfig(net="convnet-tiny", subset_fractions=(0.05, 0.1), models_per_fraction=2, subset_epochs=2, early_models=3,
                  early_iterations=6, record_every=2, snapshot_models=2, chunk=2)


def test_agreement_of_a_model_with_itself_is_one_and_with_disjoint_predictions_zero():
    a = torch.tensor([0, 1, 2, 3])
    assert agreement(a, a) == 1 and agreement(a, (a + 1) % 10) == 0
    assert agreement(torch.stack([a, a.flip(0)]), a).tolist() == [1.0, 0.0]


def test_pools_are_stacked_runs_of_the_plain_training(shapes_small):
    early = early_pool(shapes_small, TINY)
    assert early.iterations.tolist() == [0, 2, 4, 6] and early.predictions.shape == (3, 4, 1000)
    assert early.snapshots["head.weight"].shape == (2, 4, 10, 256)  # two networks kept, chunked 2 + 1
    # network 0 of the pool is `train` with its seed: same predictions along the way (float tolerance)
    net, seed = build_net("convnet-tiny", 500_000), 500_000
    single = train(net, shapes_small.train.images, shapes_small.train.labels, get_protocol("real", steps=6), seed,
                   eval_split=(shapes_small.test.images, shapes_small.test.labels), record_at=[0, 2, 4, 6])
    for column, iteration in enumerate([0, 2, 4, 6]):
        assert agreement(early.predictions[0, column], single.predictions[iteration]) > 0.99
    subsets = subset_pool(shapes_small, TINY)
    assert subsets.fractions.tolist() == [0.05, 0.05, 0.1, 0.1] and subsets.predictions.shape == (4, 1000)
    curve = recognition(early, "convnet-tiny", shapes_small.test.images[:100], shapes_small.test.labels[:100])
    net.load_state_dict({name: value[0, -1] for name, value in early.snapshots.items()})
    assert curve.shape == (2, 4)
    assert abs(float(curve[0, -1]) - evaluate(net, shapes_small.test.images[:100], shapes_small.test.labels[:100]).accuracy) <= 0.02


def test_matching_picks_the_accuracy_matched_networks_and_iterations():
    labels = torch.zeros(10, dtype=torch.long)
    distilled = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]])  # accuracy 0.6
    same = distilled[0]
    other = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # also 0.6, agrees on 2 of 10
    subsets = SubsetPool(torch.tensor([0.01, 0.02, 0.05]), torch.tensor([0.6, 0.6, 0.9]),
                         torch.stack([same, other, torch.zeros(10, dtype=torch.long)]))
    early_predictions = torch.stack([torch.ones(10, dtype=torch.long), same, torch.zeros(10, dtype=torch.long)])[None]
    early = EarlyPool(torch.tensor([0, 5, 10]), torch.tensor([[0.0, 0.6, 1.0]]), early_predictions, {})
    result = matched_agreement(distilled, labels, subsets, early, tolerance=0.05, minimum=1)
    assert sorted(result.subset.tolist()) == pytest.approx([0.2, 1.0]) and result.subset_gap == 0
    assert result.early.tolist() == [1.0] and result.early_iterations.tolist() == [5]
