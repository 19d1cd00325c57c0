"""Every method's profile presets: valid settings, and at ``smoke`` each method beats random real images."""

import pytest
import torch

from ddnb.data import load_dataset
from ddnb.distill import MODULES, OPTIMISED, distill, distill_preset, preset
from ddnb.errors import DdnbError
from ddnb.profiles import PROFILES
from ddnb.train import run


@pytest.mark.parametrize("method", sorted(OPTIMISED))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_presets_hold_the_methods_own_options(method, profile):
    settings = preset(method, profile, ipc=10)
    assert isinstance(settings.options, OPTIMISED[method][0]) and settings.steps > 0
    if profile == "paper":
        assert settings.options == MODULES[method].PUBLISHED[10] and settings.steps == MODULES[method].PUBLISHED_STEPS


def test_paper_preset_takes_the_nearest_published_ipc_and_unknown_names_are_errors():
    assert preset("gm", "paper", ipc=1).options.outer_loop == 1 and preset("gm", "paper", ipc=40).options.outer_loop == 50
    assert preset("mtt", "paper", ipc=10).zca and not preset("dm", "paper").zca
    with pytest.raises(DdnbError, match="unknown profile"):
        preset("dm", "laptop")
    with pytest.raises(DdnbError, match="unknown method"):
        preset("kip", "smoke")


@pytest.fixture(scope="module")
def smoke_data(store):
    return load_dataset(PROFILES["smoke"].data, store)


@pytest.fixture(scope="module")
def random_accuracy(smoke_data):
    subset = distill("random", smoke_data, ipc=PROFILES["smoke"].ipc, seed=0)
    test = (smoke_data.test.images, smoke_data.test.labels)
    return run(subset.images, subset.labels, test, PROFILES["smoke"].evaluation).mean


@pytest.mark.parametrize("method", sorted(OPTIMISED))
def test_each_method_beats_random_real_images_at_the_smoke_profile(method, smoke_data, random_accuracy, store):
    """The smoke preset itself, on the smoke profile's data and evaluation: the book's smallest claim.
    (The sets stay in the session store, where the smoke book finds them.)"""
    profile = PROFILES["smoke"]
    result = distill_preset(method, profile.data, "smoke", ipc=profile.ipc, seed=0, store=store, progress=False)
    assert len(result.losses) == preset(method, "smoke").steps and result.losses[-5:].mean() < result.losses[:5].mean()
    again = distill_preset(method, profile.data, "smoke", ipc=profile.ipc, seed=0, store=store)  # loaded, not re-made
    assert torch.equal(again.images, result.images)
    accuracy = run(result.images, result.labels, (smoke_data.test.images, smoke_data.test.labels), profile.evaluation).mean
    assert accuracy > random_accuracy + 0.03, (method, accuracy, random_accuracy)
