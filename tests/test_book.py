from pathlib import Path

import pytest

from ddnb.book import build_book, execute_notebooks, notebook_parameters
from ddnb.errors import DdnbError
from ddnb.profiles import PROFILES, get_profile

ROOT = Path(__file__).resolve().parents[1]


SECTIONS = ("distillation", "substitution", "dynamics", "semantics")


def test_smoke_book_executes_every_section_and_builds_with_warnings_as_errors():
    index = build_book(get_profile("smoke"), ROOT)
    assert "book/intro.html" in index.read_text()  # the index redirects to the root page of the toc
    assert "What is Dataset Distillation Learning?" in (index.parent / "book" / "intro.html").read_text()
    for section in SECTIONS:
        page = (index.parent / "book" / f"{section}.html").read_text()
        assert "How this page was made" in page and "not CIFAR-10" in page, section  # the header box
        assert "<img" in page, section  # its figures
        assert "pasted-text" in page, section  # numbers in the prose are glued from the executed notebook
    # unchanged notebooks, parameters and ddnb source: nothing is executed again
    executed = {path: path.stat().st_mtime_ns for path in (ROOT / "book").glob("*.ipynb")}
    assert len(executed) == len(SECTIONS)
    execute_notebooks(ROOT, notebook_parameters(get_profile("smoke"), "auto", None))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in executed.items())


def test_book_outside_a_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(DdnbError, match="holds no book"):
        build_book(get_profile("smoke"), tmp_path)


def test_profiles_are_named_and_can_point_at_other_data():
    assert list(PROFILES) == ["smoke", "quick", "cifar10-cpu", "paper"]
    assert get_profile("cifar10-cpu", "imagefolder:/data/cifar").data.name == "imagefolder:/data/cifar"
    with pytest.raises(DdnbError, match="unknown profile"):
        get_profile("huge")
