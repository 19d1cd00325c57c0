"""``ddnb search``: candidates are made from the training images less a validation split and scored on that
split, never on the test split; the profile's preset is one candidate, so the book finds its set again."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ddnb.cli import main
from ddnb.data import DataConfig, load_dataset
from ddnb.distill import Preset, candidates, dm, preset
from ddnb.errors import DdnbError
from ddnb.profiles import PROFILES
from ddnb.search import search
from ddnb.sections.common import set_jobs


def _rows(split) -> set[bytes]:
    return {image.numpy().tobytes() for image in split.images}


def test_a_validation_split_is_held_out_of_training_and_replaces_the_test_split(store):
    plain = DataConfig("shapes", train_per_class=100, test_size=1000)
    held = dataclasses.replace(plain, validation_per_class=30)
    data, validation = load_dataset(plain, store), load_dataset(held, store)
    assert torch.equal(torch.bincount(validation.test.labels), torch.full((10,), 30))
    assert torch.equal(torch.bincount(validation.train.labels), torch.full((10,), 100))
    assert not _rows(validation.test) & _rows(validation.train)  # no validation image is trained on
    assert not _rows(validation.test) & _rows(data.test)  # nor is it a test image
    assert "validation_per_class" not in plain.key() and held.key()["validation_per_class"] == 30  # older keys still match
    with pytest.raises(DdnbError, match="hold out at most"):
        load_dataset(dataclasses.replace(plain, validation_per_class=10**6), store)


def test_every_profile_preset_is_one_of_its_candidates():
    for method in ("bptt", "dm", "gm", "mtt"):
        for profile in PROFILES:
            if profile != "paper":
                assert preset(method, profile) in candidates(method, profile).values(), (method, profile)
    assert all(not chosen.zca for chosen in candidates("bptt", "cifar10-cpu").values())  # sets live in the analyses' space


def test_search_scores_each_candidate_on_validation_and_the_book_reuses_the_chosen_set(store, monkeypatch, tmp_path, capsys):
    chosen = preset("dm", "smoke")
    short = Preset(20, dataclasses.replace(chosen.options, lr_images=5.0))
    monkeypatch.setattr(dm, "CANDIDATES", {"smoke": {"preset": chosen, "short": short}})
    results = search("dm", "smoke", validation_per_class=20, store=store, progress=False)
    assert [r.name for r in results] == ["preset", "short"] and [r.chosen for r in results] == [True, False]
    assert all(r.accuracies.shape == (2,) and 0 < r.accuracies.mean() < 1 and r.minutes > 0 for r in results)
    assert results[0].accuracies.mean() > 0.15  # the full preset learns the shapes (chance is 0.1)
    # the same search again loads everything: no new artifact
    count = len(list(store.root.rglob("*.safetensors")))
    again = search("dm", "smoke", validation_per_class=20, store=store, progress=False)
    assert len(list(store.root.rglob("*.safetensors"))) == count
    assert all(torch.equal(a.accuracies, b.accuracies) for a, b in zip(results, again))
    # a profile holding out the same split makes its set from the search's chosen candidate
    profile = dataclasses.replace(PROFILES["smoke"], validation_per_class=20)
    [job] = set_jobs(profile, ["dm"], profile.ipc, 0, store, torch.device("cpu"), {}, progress=False)
    assert store.exists(job.kind, job.key)
    # the command line prints the table and writes it as JSON
    out = tmp_path / "search.json"
    assert main(["search", "--method", "dm", "--profile", "smoke", "--validation", "20", "--device", "cpu", "--out", str(out)]) == 0
    assert "<- the profile's preset" in capsys.readouterr().out
    rows = json.loads(out.read_text())["candidates"]
    assert [row["mean"] for row in rows] == pytest.approx([r.accuracies.mean().item() for r in results])
