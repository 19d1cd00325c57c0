"""``ddnb book``: execute the parameterized notebooks for a profile, then build the static HTML book.

The book's sources sit at the repository root (``_config.yml``, ``_toc.yml``, ``book/``,
``notebooks/``); the HTML goes to ``_build/html``. Sphinx warnings are errors. First every result of the
profile is made (``ddnb.sections.run_profile``, i.e. ``ddnb run``); then each notebook in ``notebooks/`` is executed by papermill
with the profile's parameters as a job (``ddnb.jobs``: in this process or as a Ray task) whose result, the
executed notebook, is kept in the store under its execution key (notebook, parameters, ddnb source) and
copied into ``book/`` (git-ignored). An unchanged notebook is never executed twice.
The JavaScript the pages need (the widget manager that renders saved ipywidgets, and MathJax) is installed
from the npm registry (``package.json``, ``npm ci``) and copied into ``_assets/``, which Sphinx serves as
static files: the book loads nothing from a CDN and works offline.
The notebooks only load those results and draw them (``ddnb.sections.open_page``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from ddnb import __version__
from ddnb.errors import DdnbError
from ddnb.distill import METHODS, Distilled
from ddnb.jobs import Job, Runner, get_runner, run_jobs
from ddnb.profiles import Profile
from ddnb.sections import MissingResults, missing_results, open_inputs, run_profile
from ddnb.sections.common import BOOK_METHODS as _METHODS, is_released, named_set, set_file
from ddnb.store import Store, read_sidecar

PACKAGE = Path(__file__).resolve().parent


BOOK_METHODS = list(_METHODS)


def notebook_parameters(profile: Profile, device: str, store: str | None, methods: Sequence[str] = BOOK_METHODS,
                        extra_sets: Sequence[str | Path] = ()) -> dict:
    """What ``ddnb book`` passes to every notebook's ``parameters`` cell: the profile, the ``methods`` whose sets
    are made, and ``extra_sets`` (a reader's own set files, checked here so that a wrong path fails before any
    work)."""
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise DdnbError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    sets = []
    for name, path in map(named_set, extra_sets):
        path = set_file(path).resolve()
        if not path.exists():
            raise DdnbError(f"no distilled set at {path} (write one with `ddnb distill` or `ddnb import`, or give a "
                            "released .pt file)")
        if not is_released(path):
            Distilled.load(path)  # a corrupt file or another kind of artifact fails here, not inside a notebook
        sets.append(f"{name}={path}")
    if not methods and not sets:
        raise DdnbError("nothing to analyse: give at least one method or one set")
    return {"profile": profile.name, "data": profile.data.name, "ipc": profile.ipc, "methods": list(methods),
            "extra_sets": sets, "device": device, "store": None if store is None else str(store)}


def _source_hash() -> str:
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def execution_key(notebook: Path, parameters: dict) -> str:
    """Hash of the notebook source, its parameters, the ddnb source that runs it and the contents of the
    reader's own sets (a set rewritten under the same path runs the notebooks again; its sidecar's checksum
    stands for its tensors, which every load verifies against it)."""
    digest = hashlib.sha256(notebook.read_bytes() + json.dumps(parameters, sort_keys=True).encode() + _source_hash().encode())
    for _, path in map(named_set, parameters.get("extra_sets", ())):
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() if is_released(path)
                      else read_sidecar(path)["sha256"].encode())
    return digest.hexdigest()


NOTEBOOK_KIND = "notebook"


def _keep_failed(partial: Path, cwd: str) -> Path | str:
    """Copy a partly executed notebook (papermill saves it after each cell) to ``book/``; returns where."""
    if not partial.exists():
        return "no saved cells"
    failed = Path(cwd) / "book" / partial.name
    shutil.copy(partial, failed)
    return failed


def _ipc_kernel_manager(folder: str) -> type:
    """A kernel manager that talks to its kernel over Unix sockets in ``folder`` (keep it short: a socket path
    holds about 100 characters) rather than TCP ports on 127.0.0.1, which any local user can reach (ipykernel
    warns of it on every start)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            return str(Path(folder) / "kernel")

    return IpcKernelManager


def _execute(source: str, parameters: dict, key: str, cwd: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Execute one notebook with papermill; returns the executed notebook (its JSON as uint8 bytes) for the store.
    On failure the partly executed notebook is left in ``book/`` beside the others, to read its traceback."""
    import nbformat
    import papermill
    from nbclient.exceptions import DeadKernelError

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / Path(source).name
        try:
            # a bar of cells per notebook: at cifar10-cpu one cell (the mixing curves, leave-one-out) can take an hour
            papermill.execute_notebook(source, str(target), parameters=parameters, cwd=cwd,
                                       progress_bar={"desc": f"{Path(source).stem} (cells)", "leave": False},
                                       kernel_manager_class=_ipc_kernel_manager(folder))
        except papermill.PapermillExecutionError as error:
            raise DdnbError(f"notebook {target.name} failed: {error.ename}: {error.evalue} "
                            f"(see {_keep_failed(target, cwd)})") from None
        except DeadKernelError:
            raise DdnbError(f"the kernel running {target.name} died, most likely out of memory; the cells it "
                            f"finished are in {_keep_failed(target, cwd)}") from None
        executed = nbformat.read(target, as_version=4)
        executed.metadata["ddnb"] = {"execution_key": key, "parameters": parameters}
        data = nbformat.writes(executed).encode()
    return {"notebook": torch.frombuffer(bytearray(data), dtype=torch.uint8)}, {"notebook": target.name}


def notebook_jobs(root: Path, parameters: dict, gpus: float = 0) -> list[Job]:
    """One job (``ddnb.jobs``) per ``notebooks/*.ipynb``: execute it with ``parameters``; the store keeps the
    executed notebook under its execution key, so an unchanged notebook is never executed twice."""
    jobs = []
    for source in sorted((root / "notebooks").glob("*.ipynb")):
        key = execution_key(source, parameters)
        jobs.append(Job(NOTEBOOK_KIND, {"notebook": source.name, "execution_key": key},
                        partial(_execute, str(source), parameters, key, str(root)), gpus=gpus))
    return jobs


def execute_notebooks(root: Path, parameters: dict, runner: Runner | None = None) -> list[Path]:
    """Execute every ``notebooks/*.ipynb`` into ``book/`` (by ``runner``: in this process, or one Ray task each),
    re-using the executed copy in the store when the notebook, parameters and ddnb source are unchanged."""
    gpus = float(parameters["device"] == "cuda")
    artifacts = run_jobs(notebook_jobs(root, parameters, gpus), Store(parameters["store"]), runner, desc="notebooks")
    outputs = []
    for artifact in artifacts:
        target, data = root / "book" / artifact.meta["notebook"], artifact.tensors["notebook"].numpy().tobytes()
        if not target.exists() or target.read_bytes() != data:  # an unchanged file keeps its time: no HTML rebuild
            target.write_bytes(data)
        outputs.append(target)
    return outputs


ASSETS = "_assets"  # html_static_path in _config.yml; not "_static", whose .js files Jupyter Book adds to every page
# what the pages load from node_modules: the widget manager (plus the icon fonts it asks for beside it) and MathJax
WIDGET_FILES = ("@jupyter-widgets/html-manager/dist", ("embed.js", "*.woff", "*.woff2", "*.ttf", "*.eot", "*.svg"))
MATHJAX_FILES = ("mathjax/es5", ("tex-mml-chtml.js", "input/**/*.js", "output/chtml/**/*", "ui/*.js", "a11y/*.js"))


def install_assets(root: Path) -> Path:
    """``npm ci`` at ``root`` when ``node_modules`` is missing or older than ``package-lock.json``, then copy the
    widget manager to ``_assets/widgets`` and MathJax to ``_assets/mathjax``; returns the ``_assets`` folder."""
    modules, lock = root / "node_modules", root / "package-lock.json"
    stamp = modules / ".package-lock.json"  # written by npm after every install
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise DdnbError("the book serves its widget and MathJax JavaScript itself, installed with npm: "
                            "install Node.js and npm (e.g. `apt install npm`), then run again")
        completed = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=root,
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            raise DdnbError(f"npm ci failed in {root}:\n{completed.stderr.strip()[-2000:]}")
    assets = root / ASSETS
    for target, (package, patterns) in {"widgets": WIDGET_FILES, "mathjax": MATHJAX_FILES}.items():
        for pattern in patterns:
            for source in (modules / package).glob(pattern):
                if source.is_file():
                    destination = assets / target / source.relative_to(modules / package)
                    if not destination.exists() or destination.stat().st_mtime < source.stat().st_mtime:
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(source, destination)
    return assets


def jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` executable next to this Python (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise DdnbError("jupyter-book is not installed; run `make book` or `pip install -r requirements.txt`")
    return [found]


def build_book(profile: Profile, root: str | Path = ".", device: str = "auto", store: str | None = None,
               ray: str | None = None, methods: Sequence[str] = BOOK_METHODS, extra_sets: Sequence[str | Path] = (),
               compute: bool = True) -> Path:
    """``ddnb run`` for ``profile`` (unless not ``compute``), then the notebooks, then the HTML; returns the path of
    the HTML index. ``methods``: whose sets are made and analysed (default random and the four distillers);
    ``extra_sets``: the reader's own set files, analysed beside them in every section. Without ``compute`` a
    result missing from the store stops the build (``MissingResults``, naming it) before any notebook runs.
    With ``ray`` (a Ray address, or ``$DDNB_RAY``) the jobs and notebooks run as Ray tasks, and the store must be
    a folder every worker reaches."""
    parameters = notebook_parameters(profile, device, store, methods, extra_sets)
    root = Path(root).resolve()
    if not (root / "_config.yml").exists() or not (root / "_toc.yml").exists():
        raise DdnbError(f"{root} holds no book (_config.yml and _toc.yml); run from the ddnb checkout or pass --root")
    runner = get_runner(ray)
    sets = parameters["extra_sets"]
    if compute:  # makes every result the notebooks load
        run_profile(profile.name, profile.data.name, profile.ipc, methods, 0, device, store, sets, runner)
    else:
        missing = missing_results(open_inputs(profile.name, profile.data.name, profile.ipc, methods, 0, device, store, sets))
        if missing:
            raise MissingResults(missing, profile.name)
    execute_notebooks(root, parameters, runner)
    install_assets(root)
    command = jupyter_book_command() + ["build", str(root), "--path-output", str(root), "-W", "-n", "--keep-going"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise DdnbError(f"jupyter-book build failed for profile {profile.name}:\n{tail}")
    return root / "_build" / "html" / "index.html"
