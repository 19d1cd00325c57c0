"""``ddnb book``: execute the parameterized notebooks for a profile, then build the static HTML book.

The book's sources sit at the repository root (``_config.yml``, ``_toc.yml``, ``book/``,
``notebooks/``); the HTML goes to ``_build/html``. Sphinx warnings are errors. Each notebook in
``notebooks/`` is executed by papermill into ``book/`` (git-ignored) with the profile's parameters,
unless the copy there was made from the same notebook, parameters and ddnb source (its execution key).
The JavaScript the pages need (the widget manager that renders saved ipywidgets, and MathJax) is installed
from the npm registry (``package.json``, ``npm ci``) and copied into ``_assets/``, which Sphinx serves as
static files: the book loads nothing from a CDN and works offline.
``load_sets`` is what every notebook starts from: the profile, the data and the distilled sets.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ddnb import __version__
from ddnb.errors import DdnbError
from ddnb.profiles import Profile, get_profile

PACKAGE = Path(__file__).resolve().parent


@dataclass
class Run:
    """What a notebook analyses: the profile, its data set (analysis space), the distilled sets by name, the
    store and the runner (``ddnb.jobs``) that makes missing sets and pools, in this process or on Ray."""

    profile: Profile
    data_name: str
    device: torch.device
    ipc: int
    dataset: object
    sets: dict
    store: object
    runner: object


def load_sets(profile: str, data: str | None, ipc: int | None, methods: list[str], seed: int = 0, device: str = "auto",
              store: str | None = None, extra_sets: list[str] = (), ray: str | None = None) -> Run:
    """The profile's data and one distilled set per method (made once, then loaded from the store), plus
    ``extra_sets`` (paths of sets written by ``ddnb distill`` or ``ddnb import``) under their file names.
    ``ray``: a Ray address (or ``$DDNB_RAY``) to make the missing sets as Ray tasks, all at once."""
    from ddnb.data import load_dataset
    from ddnb.distill import Distilled, distill_presets
    from ddnb.jobs import get_runner
    from ddnb.store import Store
    from ddnb.train import resolve_device

    settings, device, store, runner = get_profile(profile, data), resolve_device(device), Store(store), get_runner(ray)
    ipc = ipc or settings.ipc
    dataset = load_dataset(settings.data, store, device)
    sets = distill_presets(methods, settings.data, profile, ipc, seed, store, device, progress=False, runner=runner)
    sets |= {Path(path).name.removesuffix(".safetensors"): Distilled.load(path, device) for path in extra_sets}
    return Run(settings, settings.data.name, device, ipc, dataset, sets, store, runner)


def notebook_parameters(profile: Profile, device: str, store: str | None, ray: str | None = None) -> dict:
    """What ``ddnb book`` passes to every notebook's ``parameters`` cell."""
    return {"profile": profile.name, "data": profile.data.name, "ipc": profile.ipc, "device": device,
            "store": None if store is None else str(store), "ray": ray}


def _source_hash() -> str:
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def execution_key(notebook: Path, parameters: dict) -> str:
    """Hash of the notebook source, its parameters and the ddnb source that runs it."""
    payload = notebook.read_bytes() + json.dumps(parameters, sort_keys=True).encode() + _source_hash().encode()
    return hashlib.sha256(payload).hexdigest()


def _executed_key(path: Path) -> str | None:
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("metadata", {}).get("ddnb", {}).get("execution_key")


def execute_notebooks(root: Path, parameters: dict) -> list[Path]:
    """Execute every ``notebooks/*.ipynb`` into ``book/`` unless its execution key is unchanged; returns the outputs."""
    import nbformat
    import papermill

    outputs = []
    for source in sorted((root / "notebooks").glob("*.ipynb")):
        target, key = root / "book" / source.name, execution_key(source, parameters)
        if _executed_key(target) != key:
            try:
                papermill.execute_notebook(str(source), str(target), parameters=parameters, cwd=str(root), progress_bar=False)
            except papermill.PapermillExecutionError as error:
                raise DdnbError(f"notebook {source.name} failed: {error.ename}: {error.evalue} (see {target})") from None
            executed = nbformat.read(target, as_version=4)
            executed.metadata["ddnb"] = {"execution_key": key, "parameters": parameters}
            nbformat.write(executed, target)
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
               ray: str | None = None) -> Path:
    """Execute the notebooks for ``profile`` and build the book at ``root``; returns the path of the HTML index.
    ``ray``: a Ray address; the notebooks then make their distilled sets and model pools as Ray tasks."""
    root = Path(root).resolve()
    if not (root / "_config.yml").exists() or not (root / "_toc.yml").exists():
        raise DdnbError(f"{root} holds no book (_config.yml and _toc.yml); run from the ddnb checkout or pass --root")
    execute_notebooks(root, notebook_parameters(profile, device, store, ray))
    install_assets(root)
    command = jupyter_book_command() + ["build", str(root), "--path-output", str(root), "-W", "-n", "--keep-going"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise DdnbError(f"jupyter-book build failed for profile {profile.name}:\n{tail}")
    return root / "_build" / "html" / "index.html"
