import time
import json
import pickle

import pytest
import torch

from ddnb.cli import main
from ddnb.errors import DdnbError
from ddnb.store import VERSIONS, Store, config_key, load_artifact, save_artifact


def _tensors():
    return {"images": torch.randn(4, 3, 8, 8), "labels": torch.arange(4), "mask": torch.tensor([True, False])}


def test_round_trip_keeps_tensors_config_and_meta(tmp_path):
    tensors = _tensors()
    path = save_artifact(tmp_path / "set", tensors, {"method": "random", "seed": 3}, {"classes": ["a", "b"]})
    assert path.name == "set.safetensors" and path.with_suffix(".json").exists()
    loaded = load_artifact(path)
    assert all(torch.equal(loaded.tensors[k], v) for k, v in tensors.items())
    assert loaded.config == {"method": "random", "seed": 3} and loaded.meta == {"classes": ["a", "b"]}
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["seed"] == 3 and len(sidecar["sha256"]) == 64 and sidecar["ddnb_version"]


def test_store_keys_by_config_and_finds_reruns(tmp_path):
    store = Store(tmp_path)
    config = {"a": 1, "b": [1, 2]}
    assert not store.exists("pool", config)
    calls = []
    make = lambda: (calls.append(1), ({"x": torch.ones(2)}, {"note": "made"}))[1]  # noqa: E731
    first = store.get_or_make("pool", config, make)
    again = store.get_or_make("pool", {"b": [1, 2], "a": 1}, make)  # key order does not matter
    assert calls == [1] and torch.equal(first.tensors["x"], again.tensors["x"]) and again.meta == {"note": "made"}
    assert store.exists("pool", config) and not store.exists("pool", {"a": 2, "b": [1, 2]})
    assert config_key("pool", config) != config_key("model", config)
    store.remove("pool", config)
    assert not store.exists("pool", config)


def test_store_records_what_making_an_artifact_cost(tmp_path):
    store = Store(tmp_path)

    def busy():  # about 0.2 s of this process's CPU
        start = time.process_time()
        while time.process_time() - start < 0.2:
            pass
        return {"x": torch.ones(1)}, {}

    store.get_or_make("pool", {"a": 1}, busy)
    store.save("model", {"b": 1}, {"x": torch.zeros(1)})  # saved directly: no cost to report
    (rows,) = store.costs()
    assert rows["kind"] == "pool" and rows["path"] == str(store.path("pool", {"a": 1}))
    assert 0.2 <= rows["cpu_s"] < 5 and 0.2 <= rows["wall_s"] < 60

    resumed = store.get_or_make("pool", {"a": 2}, lambda: ({"x": torch.ones(1)}, {"earlier_cost": {"wall_s": 600.0, "cpu_s": 1200.0}}))
    assert json.loads(resumed.path.with_suffix(".json").read_text())["cost"]["cpu_s"] >= 1200  # earlier attempts' work counts


def test_an_artifact_kept_elsewhere_is_added_under_its_key_and_not_made_again(tmp_path, capsys):
    made_here = Store(tmp_path / "first").get_or_make("distilled", {"method": "dm", "seed": 0}, lambda: ({"x": torch.ones(3)}, {"n": 1}))
    kept = tmp_path / "repository" / "dm.safetensors"  # e.g. a set kept in a repository under another name
    kept.parent.mkdir()
    kept.write_bytes(made_here.path.read_bytes())
    kept.with_suffix(".json").write_bytes(made_here.path.with_suffix(".json").read_bytes())
    other = Store(tmp_path / "other")
    assert main(["store", "add", str(kept), "--store", str(other.root)]) == 0
    assert str(other.path("distilled", {"method": "dm", "seed": 0})) in capsys.readouterr().out
    loaded = other.get_or_make("distilled", {"seed": 0, "method": "dm"}, lambda: pytest.fail("made again"))
    assert torch.equal(loaded.tensors["x"], torch.ones(3)) and loaded.meta == {"n": 1}
    assert [row["kind"] for row in other.costs()] == ["distilled"]  # what it cost to make travels with it
    data = bytearray(kept.read_bytes())
    data[-1] ^= 1
    kept.write_bytes(bytes(data))
    with pytest.raises(DdnbError, match="checksum"):
        Store(tmp_path / "third").add(kept)


def test_an_artifact_made_by_an_older_version_of_its_kind_is_remade_not_served(tmp_path, monkeypatch, capsys):
    store, config = Store(tmp_path / "store"), {"seed": 0}
    old = store.get_or_make("influence", config, lambda: ({"x": torch.zeros(2)}, {}))
    legacy = json.loads(old.path.with_suffix(".json").read_text())
    assert legacy["version"] == 1
    kept = tmp_path / "kept" / "influence.safetensors"  # a copy of the old result, e.g. kept in a repository
    kept.parent.mkdir()
    kept.write_bytes(old.path.read_bytes())
    kept.with_suffix(".json").write_bytes(old.path.with_suffix(".json").read_bytes())
    monkeypatch.setitem(VERSIONS, "influence", 2)  # the analysis was changed
    assert not store.exists("influence", config)
    new = store.get_or_make("influence", config, lambda: ({"x": torch.ones(2)}, {}))
    assert torch.equal(new.tensors["x"], torch.ones(2)) and new.path == old.path  # replaced in place
    assert torch.equal(store.get_or_make("influence", config, lambda: pytest.fail("made again")).tensors["x"], torch.ones(2))
    assert json.loads(new.path.with_suffix(".json").read_text())["version"] == 2
    with pytest.raises(DdnbError, match="version 1 of 'influence'.*makes version 2"):
        Store(tmp_path / "other").add(kept)
    assert main(["store", "add", str(kept), str(new.path), "--store", str(tmp_path / "other")]) == 2  # the current one is added
    assert Store(tmp_path / "other").exists("influence", config) and "not added" in capsys.readouterr().err
    legacy.pop("version")  # sidecars written before kinds had versions are version 1
    kept.with_suffix(".json").write_text(json.dumps(legacy))
    monkeypatch.setitem(VERSIONS, "influence", 1)
    third = Store(tmp_path / "third")
    third.add(kept)
    assert torch.equal(third.get_or_make("influence", config, lambda: pytest.fail("made again")).tensors["x"], torch.zeros(2))


def test_corrupted_tensor_file_is_refused(tmp_path):
    path = save_artifact(tmp_path / "x", _tensors(), {"seed": 0})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DdnbError, match="checksum"):
        load_artifact(path)


def test_tampered_config_is_refused_even_with_a_fixed_checksum(tmp_path):
    path = save_artifact(tmp_path / "x", _tensors(), {"seed": 0, "ipc": 10})
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["config"]["ipc"] = 50
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(DdnbError, match="modified"):
        load_artifact(path)


def test_missing_sidecar_or_file_is_a_clear_error(tmp_path):
    path = save_artifact(tmp_path / "x", _tensors(), {"seed": 0})
    path.with_suffix(".json").unlink()
    with pytest.raises(DdnbError, match="incomplete"):
        load_artifact(path)
    with pytest.raises(DdnbError, match="no artifact"):
        load_artifact(tmp_path / "absent.safetensors")


def test_a_pickle_posing_as_an_artifact_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    import hashlib

    sidecar = {"format": "ddnb-artifact/1", "config": {}, "meta": {}, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(DdnbError, match="not a readable safetensors"):
        load_artifact(path)


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = save_artifact(tmp_path / "x", {"v": torch.zeros(3)}, {"seed": 0})
    import ddnb.store as store_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(tmp_path / "x", {"v": torch.ones(3)}, {"seed": 1})
    monkeypatch.undo()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    # the old sidecar was withdrawn before the new tensors were written: the pair is refused, not mixed
    with pytest.raises(DdnbError, match="incomplete"):
        load_artifact(path)


def test_every_kind_ddnb_stores_has_a_version():
    import importlib
    import pkgutil
    import re

    import ddnb

    kinds = {"dataset"}  # ddnb.data.sources names it inline
    for module in pkgutil.walk_packages(ddnb.__path__, "ddnb."):
        names = vars(importlib.import_module(module.name))
        kinds |= {value for name, value in names.items() if re.fullmatch(r"([A-Z]+_)?KIND", name) and isinstance(value, str)}
    assert len(kinds) >= 13 and kinds <= set(VERSIONS), kinds - set(VERSIONS)


def test_store_list_and_prune_show_and_remove_only_stale_artifacts(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path)
    store.get_or_make("influence", {"seed": 0}, lambda: ({"x": torch.zeros(1000)}, {}))
    store.get_or_make("mixing", {"k": 1}, lambda: ({"x": torch.zeros(10)}, {}))
    monkeypatch.setitem(VERSIONS, "influence", 2)
    rows = {row["kind"]: row for row in store.listing()}
    assert rows["influence"]["stale"] and not rows["mixing"]["stale"] and rows["influence"]["bytes"] > 4000
    assert main(["store", "list", "--store", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[0] == "influence" and table[2].split()[-1] == "1" and table[3].split()[-1] == "0"
    assert main(["store", "prune", "--store", str(tmp_path)]) == 0
    assert "removed 1 stale" in capsys.readouterr().out
    assert [row["kind"] for row in store.listing()] == ["mixing"] and store.exists("mixing", {"k": 1})
    assert not store.path("influence", {"seed": 0}).exists()
