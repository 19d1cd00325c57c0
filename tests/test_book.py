from pathlib import Path

import pytest

from ddnb.book import build_book
from ddnb.errors import DdnbError
from ddnb.profiles import PROFILES, get_profile

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_book_builds_with_warnings_as_errors():
    index = build_book(get_profile("smoke"), ROOT)
    assert "book/intro.html" in index.read_text()  # the index redirects to the root page of the toc
    assert "What is Dataset Distillation Learning?" in (index.parent / "book" / "intro.html").read_text()


def test_book_outside_a_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(DdnbError, match="holds no book"):
        build_book(get_profile("smoke"), tmp_path)


def test_profiles_are_named_and_can_point_at_other_data():
    assert list(PROFILES) == ["smoke", "quick", "cifar10-cpu", "paper"]
    assert get_profile("cifar10-cpu", "imagefolder:/data/cifar").data.name == "imagefolder:/data/cifar"
    with pytest.raises(DdnbError, match="unknown profile"):
        get_profile("huge")
