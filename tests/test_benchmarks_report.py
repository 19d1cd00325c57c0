"""The tables of benchmarks/README.md are the recorded results: regenerated from benchmarks/results, they do not change."""

import importlib.util
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("benchmarks_report", BENCHMARKS / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_equals_its_results(report):
    text = (BENCHMARKS / "README.md").read_text()
    assert all(f"<!-- {marker} -->" in text for marker in report.tables()), "a generated table has no place in the README"
    assert report.render(text)[1] == []


def test_a_number_typed_into_a_table_is_caught(report):
    text = (BENCHMARKS / "README.md").read_text()
    block = re.search(r"<!-- search-cifar10-cpu -->.*?<!-- /search-cifar10-cpu -->", text, flags=re.S).group(0)
    edited = text.replace(block, block.replace("0.429", "0.492"))
    assert edited != text and report.render(edited)[1] == ["search-cifar10-cpu"]
