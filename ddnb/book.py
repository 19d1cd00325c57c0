"""``ddnb book``: execute the parameterized notebooks for a profile, then build the static HTML book.

The book's sources sit at the repository root (``_config.yml``, ``_toc.yml``, ``book/``,
``notebooks/``); the HTML goes to ``_build/html``. Sphinx warnings are errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ddnb.errors import DdnbError
from ddnb.profiles import Profile


def jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` executable next to this Python (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise DdnbError("jupyter-book is not installed; run `make book` or `pip install -r requirements.txt`")
    return [found]


def build_book(profile: Profile, root: str | Path = ".") -> Path:
    """Build the book at ``root`` for ``profile``; returns the path of the HTML index."""
    root = Path(root).resolve()
    if not (root / "_config.yml").exists() or not (root / "_toc.yml").exists():
        raise DdnbError(f"{root} holds no book (_config.yml and _toc.yml); run from the ddnb checkout or pass --root")
    command = jupyter_book_command() + ["build", str(root), "--path-output", str(root), "-W", "-n", "--keep-going"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise DdnbError(f"jupyter-book build failed for profile {profile.name}:\n{tail}")
    return root / "_build" / "html" / "index.html"
