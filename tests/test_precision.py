"""ddnb.precision: what each precision does, and the checks behind ``POLICY`` (on the CPU, with bf16 autocast)."""

import dataclasses

import pytest
import torch

from ddnb.analysis.curvature import hutchinson_trace
from ddnb.analysis.influence import loo_influence
from ddnb.distill import LoopConfig, distill
from ddnb.distill.loop import initial_images
from ddnb.errors import DdnbError
from ddnb.nets import build_net
from ddnb.precision import POLICY, precision
from ddnb.stacked import evaluate_seeds
from ddnb.train import EvalConfig, get_protocol


def test_fp32_changes_nothing_and_bf16_autocasts_matrix_products():
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    with precision("fp32"):
        assert (a @ a).dtype == torch.float32
    with precision("bf16"):
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32  # autocast ends with the block


def test_tf32_is_fp32_off_cuda_and_restores_the_cuda_flags():
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision("tf32", "cpu"):
        inside = a @ a
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
    assert torch.equal(inside, a @ a)
    with precision("tf32", "cuda"):  # sets the flags even where no GPU runs
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(DdnbError, match="unknown precision 'fp16'; choose one of fp32, tf32, bf16"):
        with precision("fp16"):
            pass
    with pytest.raises(DdnbError, match="unknown precision"):
        EvalConfig(precision="fp16")


def test_a_key_names_the_precision_only_when_it_is_not_fp32():
    assert "precision" not in EvalConfig().key()  # results kept before precisions existed keep their keys
    assert EvalConfig(precision="bf16").key()["precision"] == "bf16"
    assert set(POLICY) == {"evaluation", "distillation", "leave-one-out", "curvature"}


def test_a_training_inside_one_bf16_block_learns_as_in_fp32(shapes_small):
    """The whole training runs in one autocast block (``evaluate_seeds``): a cached bf16 copy of the first weights
    would leave every network at chance."""
    images, labels = shapes_small.train.images[:300], shapes_small.train.labels[:300]
    test = (shapes_small.test.images[:500], shapes_small.test.labels[:500])
    config = EvalConfig(net="convnet-tiny", seeds=(0,), steps=100)
    fp32 = evaluate_seeds(images, labels, test, config).accuracies
    bf16 = evaluate_seeds(images, labels, test, dataclasses.replace(config, precision="bf16")).accuracies
    assert fp32.min() > 0.18 and (bf16 - fp32).abs().max() < 0.03, (fp32, bf16)  # chance: 0.1


def test_bf16_leave_one_out_misses_the_policys_bar_so_it_stays_fp32(shapes_small):
    """Leave-one-out influences are differences between two trainings' test losses: the policy asks a faster
    precision for a correlation of at least 0.99 with float32, which bf16 rounding does not reach."""
    images, labels = shapes_small.train.images[:20], shapes_small.train.labels[:20]
    test_images, test_labels = shapes_small.test.images[:300], shapes_small.test.labels[:300]
    net = build_net("convnet-tiny", 0, 3, images.shape[-1], 10)
    protocol = get_protocol("paper300", steps=50)
    matrices = {}
    for name in ("fp32", "bf16"):
        with precision(name):
            matrices[name] = loo_influence(net, images, labels, test_images, test_labels, protocol, indices=range(0, 20, 4)).matrix
    correlation = float(torch.corrcoef(torch.stack([matrices["fp32"].flatten(), matrices["bf16"].flatten()]))[0, 1])
    assert correlation < 0.99 and POLICY["leave-one-out"] == "fp32", correlation


def test_a_bf16_distillation_moves_the_images_as_fp32_does_and_says_so_in_its_config(shapes_small):
    """Every step runs under autocast (other bits than fp32), the images move the same way, and the run's config (its
    checkpoints' key) names the precision only when it is not fp32."""
    runs = {name: distill("dm", shapes_small, ipc=2, seed=0, real_per_class=20, net="convnet-tiny",
                          loop=LoopConfig(steps=30, progress=False, checkpoint_every=0, precision=name)) for name in ("fp32", "bf16")}
    start, _ = initial_images(shapes_small, 2, "real", torch.Generator().manual_seed(0))  # where both runs start
    moves = {name: (run.images - start).flatten() for name, run in runs.items()}
    assert not torch.equal(runs["fp32"].images, runs["bf16"].images)
    assert moves["fp32"].norm() > 0.1 * start.norm()
    assert torch.nn.functional.cosine_similarity(moves["fp32"], moves["bf16"], dim=0) > 0.8  # 0.91 measured; unrelated moves: ~0
    assert "precision" not in runs["fp32"].config and runs["bf16"].config["precision"] == "bf16"


def test_bf16_curvature_is_within_a_tenth_of_a_standard_error_of_fp32(shapes_small):
    """The policy's bar for curvature is one standard error; with the same probes bf16 lands far inside it (0.01 of
    one measured), so curvature may take bf16 where a GPU measures it faster."""
    net = build_net("convnet-tiny", 0, 3, 32, 10)
    images, labels = shapes_small.train.images[:100], shapes_small.train.labels[:100]
    estimates = {}
    for name in ("fp32", "bf16"):
        with precision(name):
            estimates[name] = hutchinson_trace(net, images, labels, probes=16, seed=0)
    assert abs(estimates["bf16"].estimate - estimates["fp32"].estimate) < 0.1 * estimates["fp32"].stderr, estimates
    assert not torch.equal(estimates["bf16"].values, estimates["fp32"].values)  # autocast did run
