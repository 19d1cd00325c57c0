"""The tables of benchmarks/README.md are the recorded results: regenerated from benchmarks/results, they do not change."""

import importlib.util
import json
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
    texts = [readme.read_text() for readme in report.READMES]
    assert all(any(f"<!-- {marker} -->" in text for text in texts) for marker in report.tables()), "a generated table has no place"
    assert [report.render(text)[1] for text in texts] == [[], []]


def test_a_number_typed_into_a_table_is_caught(report):
    text = (BENCHMARKS / "README.md").read_text()
    block = re.search(r"<!-- search-cifar10-cpu -->.*?<!-- /search-cifar10-cpu -->", text, flags=re.S).group(0)
    edited = text.replace(block, block.replace("0.429", "0.492"))
    assert edited != text and report.render(edited)[1] == ["search-cifar10-cpu"]


def test_the_status_table_quotes_the_exported_findings(report, tmp_path, monkeypatch):
    summary = {"sets": {"random": {"accuracies": [0.27, 0.28, 0.29], "mean": 0.28, "std": 0.01},
                        "dm": {"accuracies": [0.43, 0.44, 0.45], "mean": 0.44, "std": 0.01}},
               "rule": "holds when the sign is the paper's", "findings": [
                   {"section": 3, "claim": "real images lower a set's accuracy", "measure": "k=10 minus k=0", "sets": "BPTT",
                    "paper": "-0.09", "effect": -0.05, "stderr": 0.01, "verdict": "holds", "reason": ""},
                   {"section": 4, "claim": "early networks agree", "measure": "agreement", "sets": "DM", "paper": "0.575",
                    "effect": 0.3, "stderr": float("nan"), "verdict": "does not hold", "reason": "fewer networks"},
                   {"section": 5, "claim": "x", "measure": "y", "sets": "MTT", "paper": "1", "effect": 1.0, "stderr": 0.0,
                    "verdict": "holds", "reason": ""}]}
    (tmp_path / "findings.json").write_text(json.dumps(summary))
    monkeypatch.setattr(report, "BOOK_EXPORT", tmp_path)
    table = report.status_table()
    assert "| random real | 0.280 ± 0.010 (3 seeds) | 0.273 |" in table and "| DM | 0.440 ± 0.010 (3 seeds) | 0.427 |" in table
    assert table.endswith("Findings of sections 3-5 (3): 2 holds, 1 does not hold.")
    findings = report.findings_table()
    assert findings.startswith("Rule: holds when the sign is the paper's")
    assert "| 3 | real images lower a set's accuracy (k=10 minus k=0) | BPTT | -0.09 | -0.05 ± 0.01 | holds |" in findings
    assert "| 0.3 | does not hold: fewer networks |" in findings  # an unknown error is not shown as one


def test_a_partial_export_shows_how_far_the_book_is(report, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "BOOK_EXPORT", tmp_path)
    assert report.status_table() == report.findings_table() == "(no export yet)"
    (tmp_path / "progress.json").write_text(json.dumps({"results": 10, "exported": {"distilled": 5, "mixing": 1},
                                                        "missing": {"mixing": 3, "curvature": 1}}))
    assert report.status_table() == report.findings_table() == (
        "(the book is being made: 6 of 10 results exported; still to make: curvature 1, mixing 3)")
    (tmp_path / "progress.json").write_text(json.dumps({"results": 10, "exported": {"evaluation": 2}, "missing": {"curvature": 1},
                                                        "sets": {"mtt": {"accuracies": [0.5, 0.52], "mean": 0.51, "std": 0.0141}}}))
    status = report.status_table()  # every set evaluated: their accuracies while the rest is made
    assert status.startswith("(the book is being made: 9 of 10") and status.endswith("| MTT | 0.510 ± 0.014 (2 seeds) | 0.536 |")
    assert report.findings_table() == "(the book is being made: 9 of 10 results exported; still to make: curvature 1)"
