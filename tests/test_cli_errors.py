"""Every bad input gets one clear line, and no fault loses or corrupts work (issue 24).

The table runs every ``ddnb`` subcommand against bad values of its arguments, in this process (``main``): each
must exit 2 with one ``ddnb: error:`` line that names the argument (or the file) and what is accepted, no
traceback, and leave the store as it was. Data sets are tiny image folders, so that no case loads ``shapes``
(a bad value is refused before the data loads, or the data is small). The fault tests run two processes
making one artifact, a full disk, and corrupt artifacts already in the store.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddnb.cli import main
from ddnb.data import DataConfig, load_dataset
from ddnb.data.dataset import InputTransform
from ddnb.data.shapes import SHAPE_CLASSES
from ddnb.distill import Distilled
from ddnb.errors import DdnbError, WriteError
from ddnb.store import VERSIONS, Store, save_artifact

ROOT = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _image_tree(root: Path, classes: list[str], size: int = 32, per_class: int = 6, sizes: dict[str, int] | None = None) -> Path:
    """A class-per-folder tree of small PNGs; ``sizes`` gives some classes' images another size."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            side = (sizes or {}).get(f"{name}/{i}", size)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _set(classes: list[str], side: int = 32) -> Distilled:
    labels = torch.arange(len(classes)).repeat_interleave(2)
    config = {"method": "random", "data": {"name": "shapes"}, "ipc": 2, "seed": 0}
    return Distilled(torch.randn(len(labels), 3, side, side), labels, config, InputTransform(torch.zeros(3), torch.ones(3)),
                     meta={"classes": list(classes)})


class Thing:  # pickled into a .pt file: never to be unpickled
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every file the table points at, and a store warmed with the image folders that decode."""
    base = tmp_path_factory.mktemp("inputs")
    paths: dict[str, Path] = {"missing": base / "missing", "out": base / "out" / "set", "empty": base / "empty"}
    paths["empty"].mkdir()
    paths["tiny"] = _image_tree(base / "tiny", CIFAR_CLASSES)  # CIFAR-10-shaped: 32 x 32, CIFAR's classes
    paths["small16"] = _image_tree(base / "small16", [f"c{i}" for i in range(10)], size=16)
    paths["one_class"] = _image_tree(base / "one_class", ["cat"])
    paths["mixed"] = _image_tree(base / "mixed", ["ant", "bee"], size=8, sizes={"bee/3": 12})
    paths["junk_pt"] = base / "junk.pt"
    paths["junk_pt"].write_text("these are notes, not a PyTorch file\n")
    paths["junk_tar"] = base / "junk.tar"
    paths["junk_tar"].write_text("not a tar either\n")
    with tarfile.open(base / "whole.tar", "w") as archive:
        archive.add(paths["tiny"], arcname="tiny")
    paths["truncated_tar"] = base / "truncated.tar"
    paths["truncated_tar"].write_bytes((base / "whole.tar").read_bytes()[:3000])
    paths["empty_pt"] = base / "empty.pt"
    paths["empty_pt"].write_bytes(b"")
    paths["released"] = base / "released.pt"
    torch.save({"data": torch.randn(20, 3, 32, 32), "label": torch.arange(10).repeat_interleave(2)}, paths["released"])
    paths["truncated_pt"] = base / "truncated.pt"
    paths["truncated_pt"].write_bytes(paths["released"].read_bytes()[:2000])
    paths["released16"] = base / "released16.pt"
    torch.save({"data": torch.randn(20, 3, 16, 16), "label": torch.arange(10).repeat_interleave(2)}, paths["released16"])
    paths["bad_labels"] = base / "bad_labels.pt"
    torch.save({"data": torch.randn(20, 3, 32, 32), "label": torch.arange(20)}, paths["bad_labels"])
    paths["res_list"] = base / "res_list.pt"
    torch.save({"data": [[torch.randn(10, 3, 32, 32), torch.arange(10)]]}, paths["res_list"])
    paths["wrong_keys"] = base / "wrong_keys.pt"
    torch.save({"images": torch.randn(10, 3, 32, 32)}, paths["wrong_keys"])
    paths["evil_pt"] = base / "evil.pt"
    torch.save({"data": Thing()}, paths["evil_pt"])
    paths["shapes_set"] = _set(list(SHAPE_CLASSES)).save(base / "shapes_set")
    paths["model"] = save_artifact(base / "model", {"conv.weight": torch.randn(4, 3, 3, 3)}, {"net": "convnet"}, kind="model")
    paths["truncated_set"] = base / "truncated_set.safetensors"
    paths["truncated_set"].write_bytes(paths["shapes_set"].read_bytes()[:1000])
    shutil.copy(paths["shapes_set"].with_suffix(".json"), paths["truncated_set"].with_suffix(".json"))
    paths["bad_sidecar"] = base / "bad_sidecar.safetensors"
    shutil.copy(paths["shapes_set"], paths["bad_sidecar"])
    paths["bad_sidecar"].with_suffix(".json").write_text('{"format": "ddnb-artif')
    paths["no_sidecar"] = base / "no_sidecar.safetensors"
    shutil.copy(paths["shapes_set"], paths["no_sidecar"])
    paths["folder_set"] = base / "folder_set.safetensors"
    paths["folder_set"].mkdir()
    paths["a_file"] = base / "a_file"
    paths["a_file"].write_text("a file where a folder belongs\n")
    paths["store"] = base / "store"
    for name in ("tiny", "small16"):  # decoded once here: the cases that load them find them cached
        load_dataset(DataConfig(f"imagefolder:{paths[name]}"), Store(paths["store"]))
    return {name: str(path) for name, path in paths.items()}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder``: relative path -> (size, mtime in ns)."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _one_error_line(err: str) -> str:
    """The one ``ddnb: error:`` line of ``err`` (progress bars before it allowed), checked to be alone."""
    assert "Traceback" not in err and "weights_only=False" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ddnb: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all("|" in line for line in lines[:-1]), err  # anything else is a progress bar
    return errors[0]


D = "--data imagefolder:{tiny}"  # a data set that loads in milliseconds from the warmed store
OUT = "--out {out}"
CASES = [
    # distill: names, numbers, options, files
    ("distill --method kip --data shapes " + OUT, ["--method", "choose from", "dm"]),
    ("distill --data shapes " + OUT, ["required", "--method"]),
    ("distill --method random --data shapes", ["required", "--out"]),
    ("distill --method dm --data shapes --ipc 0 " + OUT, ["--ipc", "from 1"]),
    ("distill --method dm --data shapes --ipc -3 " + OUT, ["--ipc", "from 1"]),
    ("distill --method dm --data shapes --ipc 99999999999999999999 " + OUT, ["--ipc", "to 2147483647"]),
    ("distill --method dm --data shapes --ipc 2.5 " + OUT, ["--ipc", "whole number"]),
    ("distill --method random --ipc 7 " + D + " " + OUT, ["--ipc", "at most 5"]),
    ("distill --method dm --ipc 9 " + D + " " + OUT, ["--ipc", "at most 5"]),
    ("distill --method dm --profile smoke --steps -5 --data shapes " + OUT, ["--steps", "from 1"]),
    ("distill --method dm --profile smoke --steps 0 --data shapes " + OUT, ["--steps", "from 1"]),
    ("distill --method random --seed -1 --data shapes " + OUT, ["--seed", "from 0"]),
    ("distill --method random --seed 1e400 --data shapes " + OUT, ["--seed", "whole number"]),
    ("distill --method dm --profile laptop --data shapes " + OUT, ["--profile", "choose from", "smoke"]),
    ("distill --method dm --init zeros --data shapes " + OUT, ["--init", "choose from", "noise"]),
    ("distill --method dm --checkpoint-every -1 --data shapes " + OUT, ["--checkpoint-every", "from 0"]),
    ("distill --method dm --option lr_images=nan --data shapes " + OUT, ["--option", "lr_images", "finite number"]),
    ("distill --method dm --option lr_images=inf --data shapes " + OUT, ["--option", "lr_images", "finite number"]),
    ("distill --method gm --option lr_net=-Infinity --data shapes " + OUT, ["--option", "lr_net", "finite number"]),
    ("distill --method dm --option lr_images=-1 --data shapes " + OUT, ["--option", "lr_images", ">= 0"]),
    ("distill --method dm --option lr_images=fast --data shapes " + OUT, ["--option", "lr_images", "number"]),
    ("distill --method dm --option real_per_class=0 --data shapes " + OUT, ["--option", "real_per_class", ">= 1"]),
    ("distill --method dm --option real_per_class=1.5 --data shapes " + OUT, ["--option", "real_per_class", "whole number"]),
    ("distill --method dm --option net=vgg --data shapes " + OUT, ["--option", "net", "convnet"]),
    ("distill --method dm --option dsa=maybe --data shapes " + OUT, ["--option", "dsa", "true or false"]),
    ("distill --method bptt --profile smoke --option window=500 --data shapes " + OUT, ["--option", "window", "unroll"]),
    ("distill --method bptt --option inner_optimizer=rmsprop --data shapes " + OUT, ["--option", "inner_optimizer", "adam, sgd"]),
    ("distill --method mtt --option experts=0 --data shapes " + OUT, ["--option", "experts", ">= 1"]),
    ("distill --method dm --option bogus=1 --data shapes " + OUT, ["--option", "bogus", "it has", "lr_images"]),
    ("distill --method dm --option lr_images --data shapes " + OUT, ["--option", "KEY=VALUE"]),
    ("distill --method random --option seed=1 --data shapes " + OUT, ["--option", "random takes no options"]),
    ("distill --method random --data shapes --out /proc/x", ["--out", "cannot write in /proc"]),
    ("distill --method random --data shapes --out {a_file}/x", ["--out", "cannot write in {a_file}"]),
    ("distill --method random --data mnist " + OUT, ["--data", "'mnist'", "shapes, cifar10 or imagefolder:PATH"]),
    ("distill --method random --data imagefolder:{missing} " + OUT, ["--data", "{missing}", "does not exist"]),
    ("distill --method random --data imagefolder:{junk_pt} " + OUT, ["--data", "neither a folder nor a readable tar"]),
    ("distill --method random --data imagefolder:{junk_tar} " + OUT, ["--data", "neither a folder nor a readable tar"]),
    ("distill --method random --data imagefolder:{truncated_tar} " + OUT, ["--data", "{truncated_tar}"]),
    ("distill --method random --data imagefolder:{empty} " + OUT, ["--data", "no images found", "<class>/<image>"]),
    ("distill --method random --data imagefolder:{one_class} " + OUT, ["--data", "one class", "at least two"]),
    ("distill --method random --data imagefolder:{mixed} " + OUT, ["--data", "'bee'", "differ in size", "one size"]),
    ("distill --method random --data shapes --store {a_file} " + OUT, ["--store", "{a_file}", "is a file", "folder"]),
    ("distill --method random --data shapes --device tpu " + OUT, ["--device", "'tpu'", "cpu, cuda"]),
    # evaluate: the set file, the data it meets, the protocol
    ("evaluate {missing}.safetensors --data shapes", ["no artifact at {missing}.safetensors"]),
    ("evaluate {model} --data shapes", ["{model}", "model artifact, not a distilled set"]),
    ("evaluate {truncated_set} --data shapes", ["{truncated_set}", "checksum"]),
    ("evaluate {bad_sidecar} --data shapes", ["bad_sidecar.json", "not a readable JSON sidecar"]),
    ("evaluate {no_sidecar} --data shapes", ["{no_sidecar}", "no sidecar"]),
    ("evaluate {shapes_set} --data shapes --precision fp16", ["argument --precision", "fp32", "bf16"]),
    ("evaluate {shapes_set} --data shapes --kernels fast", ["argument --kernels", "eager", "graphs"]),
    ("evaluate {folder_set} --data shapes", ["{folder_set}", "is a folder"]),
    ("evaluate {empty_pt} --data shapes", ["no artifact at {empty_pt}.safetensors"]),
    ("evaluate {shapes_set} " + D, ["--data", "classes circle", "airplane", "the data set it was made on"]),
    ("evaluate {shapes_set} --data imagefolder:{small16}", ["--data", "(3, 32, 32)", "(3, 16, 16)"]),
    ("evaluate {shapes_set} --data mnist", ["--data", "shapes, cifar10 or imagefolder:PATH"]),
    ("evaluate {shapes_set} --data shapes --protocol fast", ["--protocol", "choose from", "paper300"]),
    ("evaluate {shapes_set} --data shapes --net vgg", ["--net", "choose from", "convnet"]),
    ("evaluate {shapes_set} --data shapes --seeds 0", ["--seeds", "from 1"]),
    ("evaluate {shapes_set} --data shapes --seeds -2", ["--seeds", "from 1"]),
    ("evaluate {shapes_set} --data shapes --store {a_file}", ["--store", "is a file"]),
    # experts
    ("experts --data shapes --count 0", ["--count", "from 1"]),
    ("experts --data shapes --count 1e3", ["--count", "whole number"]),
    ("experts --data shapes --epochs -1", ["--epochs", "from 1"]),
    ("experts --data shapes --snapshot-iterations 0", ["--snapshot-iterations", "from 1"]),
    ("experts --data shapes --net vgg", ["--net", "choose from"]),
    ("experts --data shapes --profile huge", ["--profile", "choose from"]),
    ("experts --data imagefolder:{missing}", ["--data", "does not exist"]),
    ("experts --data shapes --store {a_file}", ["--store", "is a file"]),
    # import: what is not a released set, what does not fit the data
    ("import {missing}.pt " + D + " " + OUT, ["no file at {missing}.pt"]),
    ("import {junk_pt} " + D + " " + OUT, ["{junk_pt}", "not a PyTorch file"]),
    ("import {empty_pt} " + D + " " + OUT, ["{empty_pt}", "not a PyTorch file"]),
    ("import {truncated_pt} " + D + " " + OUT, ["{truncated_pt}", "not a PyTorch file"]),
    ("import {evil_pt} " + D + " " + OUT, ["{evil_pt}", "objects other than tensors", "never unpickles"]),
    ("import {shapes_set} " + D + " " + OUT, ["{shapes_set}", "not a PyTorch file"]),
    ("import {empty} " + D + " " + OUT, ["{empty}", "is a folder"]),
    ("import {wrong_keys} " + D + " " + OUT, ["{wrong_keys}", "not a known distilled-set format"]),
    ("import {released16} " + D + " " + OUT, ["--data", "(3, 16, 16)", "(3, 32, 32)"]),
    ("import {bad_labels} " + D + " " + OUT, ["{bad_labels}", "labels do not fit", "0 to 9"]),
    ("import {res_list} --experiment 3 " + D + " " + OUT, ["--experiment 3", "1 experiments"]),
    ("import {res_list} --experiment -1 " + D + " " + OUT, ["--experiment", "from 0"]),
    ("import {released} " + D + " --out /proc/x", ["--out", "cannot write in /proc"]),
    ("import {released} " + D + " --store {a_file} " + OUT, ["--store", "is a file"]),
    # book
    ("book --profile nope", ["--profile", "choose from", "quick"]),
    ("book --methods kip", ["--methods", "choose from", "random"]),
    ("book --methods", ["nothing to analyse"]),
    ("book --set {missing}.safetensors", ["no distilled set at {missing}.safetensors"]),
    ("book --set {model}", ["{model}", "model artifact, not a distilled set"]),
    ("book --data mnist", ["--data", "shapes, cifar10 or imagefolder:PATH"]),
    ("book --data imagefolder:{missing}", ["--data", "does not exist"]),
    ("book --root {empty}", ["{empty}", "holds no book", "--root"]),
    ("book --store {a_file}", ["--store", "is a file"]),
    # search
    ("search --method random --profile smoke", ["--method", "choose from", "dm"]),
    ("search --method dm --profile smoke", ["--validation", "holds out no validation images"]),
    ("search --method dm --profile smoke --validation 0", ["--validation", "from 1"]),
    ("search --method dm --profile cifar10-cpu --validation 9 --data imagefolder:{tiny}", ["--validation", "holding out 9 images per class", "hold out at most"]),
    ("search --method dm --profile smoke --validation 2 --out /proc/x", ["--out", "cannot write in /proc"]),
    ("search --method dm --profile smoke --validation 2 --store {a_file}", ["--store", "is a file"]),
    # store
    ("store add {missing}.safetensors", ["no artifact at {missing}.safetensors"]),
    ("store add {truncated_set}", ["{truncated_set}", "checksum"]),
    ("store add {bad_sidecar}", ["not a readable JSON sidecar"]),
    ("store add {shapes_set} --store {a_file}", ["--store", "is a file"]),
    ("store list --store {a_file}", ["--store", "is a file"]),
    ("store prune --store {a_file}", ["--store", "is a file"]),
    ("store frobnicate", ["invalid choice", "'add'"]),
    ("frobnicate", ["invalid choice", "distill"]),
]
DEVICE = ("distill", "evaluate", "experts", "import", "book", "search")


@pytest.mark.parametrize("command, expected", CASES, ids=[command[:70] for command, _ in CASES])
def test_bad_input_gives_one_line_and_exit_2_and_leaves_the_store_as_it_was(command, expected, files, capsys, monkeypatch):
    monkeypatch.setenv("DDNB_STORE", files["store"])
    monkeypatch.delenv("DDNB_RAY", raising=False)
    argv = command.format(**files).split()
    if argv[0] in DEVICE and "--device" not in argv:
        argv += ["--device", "cpu"]
    store, inputs = Path(files["store"]), Path(files["empty"]).parent
    before, inputs_before = _tree(store), _tree(inputs)
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    for part in expected:
        assert part.format(**files) in line, line
    assert _tree(store) == before and _tree(inputs) == inputs_before  # nothing written, no temporary or lock file
    assert not Path(files["out"]).parent.exists()


def test_the_table_covers_every_subcommand_with_forty_cases_or_more():
    import argparse

    from ddnb.cli import build_parser

    commands = set(next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)).choices)
    covered = {command.split()[0] for command, _ in CASES}
    assert len(CASES) >= 40 and commands <= covered | {"run"}, commands - covered  # `ddnb run` has its own tests


def test_a_bad_kernels_setting_in_the_environment_is_one_line(files, capsys, monkeypatch):
    monkeypatch.setenv("DDNB_STORE", files["store"])
    monkeypatch.setenv("DDNB_KERNELS", "fast")
    assert main(["evaluate", files["shapes_set"], "--data", "shapes", "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "DDNB_KERNELS" in line and "eager, compile, graphs" in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_where_there_is_none_is_one_line(files, capsys, monkeypatch):
    monkeypatch.setenv("DDNB_STORE", files["store"])
    assert main(["distill", "--method", "random", "--data", "shapes", "--out", files["out"], "--device", "cuda"]) == 2
    assert "--device" in _one_error_line(capsys.readouterr().err)


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "ddnb.cli", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, "PYTHONPATH": path}, cwd=ROOT)


def test_the_console_script_gives_the_issues_rows_as_one_line(files):
    """Two rows of the issue, as a user runs them: the process exits 2 and prints no traceback."""
    env = {"DDNB_STORE": files["store"]}
    negative = _cli("distill", "--method", "dm", "--data", "shapes", "--ipc", "-3", "--out", files["out"], env=env)
    junk = _cli("import", files["junk_pt"], "--data", f"imagefolder:{files['tiny']}", "--out", files["out"], "--device", "cpu", env=env)
    for completed in (negative, junk):
        assert completed.returncode == 2 and completed.stdout == ""
        _one_error_line(completed.stderr)
    assert "--ipc" in negative.stderr and "not a PyTorch file" in junk.stderr


MAKER = """
import sys, time
from pathlib import Path
import torch
from ddnb.store import Store

root, log, go = sys.argv[1:4]
Path(log + "." + sys.argv[4]).touch()  # ready
while not Path(go).exists():
    time.sleep(0.01)

def make():
    with open(log, "a") as file:
        file.write("made\\n")
    time.sleep(1.0)
    return {"x": torch.arange(6)}, {"by": sys.argv[4]}

artifact = Store(root).get_or_make("pool", {"k": 1}, make)
print(artifact.tensors["x"].tolist(), artifact.meta["by"])
"""


def test_two_processes_making_one_artifact_make_it_once(tmp_path):
    """Both processes ask for the same artifact at the same moment: one makes it, the other waits and loads it."""
    script, log, go, root = tmp_path / "maker.py", tmp_path / "made.log", tmp_path / "go", tmp_path / "store"
    script.write_text(MAKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    processes = [subprocess.Popen([sys.executable, str(script), str(root), str(log), str(go), name], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all(Path(f"{log}.{name}").exists() for name in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()  # both start asking now
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert log.read_text() == "made\n"  # made once
    assert outputs[0][0] == outputs[1][0] and outputs[0][0].startswith("[0, 1, 2, 3, 4, 5]")  # both got the one copy
    assert "waiting for another process" in outputs[0][1] + outputs[1][1]
    assert sorted(path.name for path in (root / "pool").iterdir()) == [f"{Store(root).path('pool', {'k': 1}).stem}{suffix}"
                                                                        for suffix in (".json", ".safetensors")]
    assert Store(root).listing()[0]["corrupt"] is False


def _disk_full(monkeypatch):
    def full(_descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_a_full_disk_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    store, config = Store(tmp_path / "store"), {"seed": 0}
    store.get_or_make("influence", config, lambda: ({"x": torch.zeros(3)}, {}))
    monkeypatch.setitem(VERSIONS, "influence", 2)  # the old result is stale: it is to be replaced
    before = _tree(store.root)
    _disk_full(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        store.get_or_make("influence", config, lambda: ({"x": torch.ones(3)}, {}))
    with pytest.raises(WriteError, match="No space left on device"):
        store.save("mixing", {"k": 1}, {"x": torch.ones(3)})
    assert _tree(store.root) == before  # the old pair kept, nothing half-written, no temporary or lock file
    monkeypatch.undo()
    assert torch.equal(store.load("influence", config).tensors["x"], torch.zeros(3))


def test_a_full_disk_on_the_command_line_is_one_line(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDNB_STORE", files["store"])
    other = Store(tmp_path / "other")
    before = _tree(Path(files["store"]))
    _disk_full(monkeypatch)
    out = tmp_path / "sets" / "random"
    assert main(["distill", "--method", "random", "--ipc", "2", "--data", f"imagefolder:{files['tiny']}", "--out", str(out),
                 "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write {out}.safetensors" in line and "No space left on device" in line
    assert main(["store", "add", files["shapes_set"], "--store", str(other.root)]) == 2
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert _tree(Path(files["store"])) == before and _tree(tmp_path) == {}  # nothing written anywhere


def _corrupt_store(root: Path) -> tuple[Store, dict[str, dict]]:
    """A store holding a good artifact and three broken ones: flipped bits, cut short, an unreadable sidecar."""
    store = Store(root)
    configs = {name: {"name": name} for name in ("good", "flipped", "truncated", "sidecar")}
    for config in configs.values():
        store.get_or_make("pool", config, lambda: ({"x": torch.arange(1000.0)}, {}))
    flipped = store.path("pool", configs["flipped"])
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = store.path("pool", configs["truncated"])
    truncated.write_bytes(truncated.read_bytes()[:500])
    store.path("pool", configs["sidecar"]).with_suffix(".json").write_text("{")
    return store, configs


def test_store_list_reports_corrupt_artifacts(tmp_path, capsys):
    store, configs = _corrupt_store(tmp_path / "store")
    rows = {row["path"]: row for row in store.listing()}
    assert [rows[store.path("pool", config)]["corrupt"] for config in configs.values()] == [False, True, True, True]
    assert main(["store", "list", "--store", str(store.root)]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split()[-2:] == ["corrupt", "stale"] and row.split()[0] == "pool" and row.split()[-2:] == ["3", "0"]
    assert main(["store", "prune", "--store", str(store.root)]) == 0
    assert "removed 3 stale or corrupt" in capsys.readouterr().out
    assert [row["path"] for row in store.listing()] == [store.path("pool", configs["good"])]


def test_a_corrupt_artifact_is_made_again_not_a_crash(tmp_path):
    store, configs = _corrupt_store(tmp_path / "store")
    assert store.exists("pool", configs["good"]) and store.find("pool", configs["good"]) is not None
    assert not store.exists("pool", configs["truncated"]) and not store.exists("pool", configs["sidecar"])
    made = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("flipped", "truncated", "sidecar"):
            artifact = store.get_or_make("pool", configs[name], lambda: (made.append(name), ({"x": torch.ones(2)}, {}))[1])
            assert torch.equal(artifact.tensors["x"], torch.ones(2))
            assert torch.equal(store.load("pool", configs[name]).tensors["x"], torch.ones(2))
    # flipped bits pass the cheap check of the header and are caught by the checksum on load, which says so
    assert [str(warning.message).split(" does not match")[0] for warning in caught] == [str(store.path("pool", configs["flipped"]))]
    assert made == ["flipped", "truncated", "sidecar"] and not any(row["corrupt"] for row in store.listing())
    store.get_or_make("pool", configs["good"], lambda: pytest.fail("a good artifact made again"))


def test_a_corrupt_data_cache_is_decoded_again(files, tmp_path):
    store = Store(tmp_path / "store")
    config = DataConfig(f"imagefolder:{files['tiny']}")
    first = load_dataset(config, store)
    (cached,) = (store.root / "dataset").glob("*.safetensors")
    cached.write_bytes(cached.read_bytes()[:-100])
    assert torch.equal(load_dataset(config, store).train.images, first.train.images)


def test_options_are_checked_where_they_are_set():
    from ddnb.distill import LoopConfig, method_options
    from ddnb.distill.dm import DMOptions

    with pytest.raises(DdnbError, match="lr_images must be a finite number >= 0, got nan"):
        DMOptions(lr_images=float("nan"))
    with pytest.raises(DdnbError, match="steps must be a whole number >= 0"):
        LoopConfig(steps=-5)
    with pytest.raises(DdnbError, match="^dm option real_per_class must be a whole number >= 1, got True$"):
        method_options("dm", {"real_per_class": True})
    assert method_options("dm", {"lr_images": 2}).lr_images == 2  # a whole number is a number
    with pytest.raises(DdnbError, match="ipc .* at least 1"):
        from ddnb.distill import distill

        distill("random", None, ipc=0)
