"""ddnb.sections: every result of a page is a job; ``ddnb run`` makes them, pages load them and never compute."""

import json

import pytest
import torch

from ddnb.analysis import curvature, dynamics, influence, substitution
from ddnb.analysis.substitution import real_trained_model
from ddnb.cli import main
from ddnb.errors import DdnbError
from ddnb.jobs import job_id, run_jobs, waves
from ddnb.sections import MissingResults, PAGES, export, open_inputs, open_page, page_jobs, run_profile
from ddnb.store import Store, read_sidecar
from tests.conftest import RANDOM_ONLY as METHODS
from tests.forbid import forbid_compute, restore, snapshot

@pytest.fixture()
def no_compute():
    saved = snapshot()
    forbid_compute()
    yield
    restore(saved)


def test_run_makes_every_job_once_and_reports_what_it_made(random_book_runs, random_book):
    inputs = open_inputs("smoke", methods=METHODS, device="cpu", store=random_book)
    planned = [job for wave in waves(page_jobs(inputs)) for job in wave]  # the listed results and what they need
    assert [report.key for report in random_book_runs[1:]] == [job_id(job)[1] for job in planned]
    made_now = {report.kind for report in random_book_runs if report.made}
    assert made_now == {"mixing", "model", "real-model-score", "feature-map", "pool-subset", "pool-early", "pool-early-curve",
                        "pool-agreement", "recognition", "curvature", "influence",
                        "influence-agreement"}  # the evaluation was made by the first, distillation-only run
    assert all(report.minutes > 0 and report.peak_mb > 0 for report in random_book_runs if report.made)
    again = run_profile("smoke", methods=METHODS, device="cpu", store=random_book)
    assert not any(report.made for report in again)


def test_pages_load_their_results_without_computing_anything(random_book_runs, random_book, no_compute):
    pages = {page: open_page(page, "smoke", methods=METHODS, device="cpu", store=str(random_book.root)) for page in PAGES}
    evaluation = pages["distillation"].evaluations["random"]
    assert evaluation.accuracies.shape == (2,) and evaluation.predictions.shape == (2, 1000)
    assert pages["distillation"].own_space == {}  # the random set is in the plain space
    mixing = pages["substitution"].mixing["random"]
    assert isinstance(mixing, substitution.MixingResult) and mixing.ks == [0, 2]
    assert torch.equal(mixing.accuracies[0], evaluation.accuracies)  # k = 0 is the evaluation, one stored result
    assert set(pages["substitution"].scores["convnet-tiny"]) == {"random", "real test"}
    assert pages["substitution"].points["random"].shape == (100, 2)
    assert isinstance(pages["dynamics"].subsets, dynamics.SubsetPool) and pages["dynamics"].recognition["random"].ndim == 2
    assert isinstance(pages["dynamics"].curves["real"], curvature.TraceCurve)
    assert torch.equal(pages["dynamics"].evaluations["random"].predictions, evaluation.predictions)
    semantics = pages["semantics"]
    assert isinstance(semantics.matrices["random"], influence.InfluenceResult) and semantics.estimated_set == "random"
    assert list(semantics.estimates)[-1] == "gradient dot product (TracIn-like)"
    with pytest.raises(RuntimeError, match="computed: train"):  # the guard itself works
        from ddnb.sections.common import real_trained_model
        real_trained_model(pages["distillation"].inputs.dataset, "convnet-tiny", None)


def test_a_page_missing_results_names_them_and_the_command_that_makes_them(tmp_path):
    with pytest.raises(MissingResults, match=r"1 result\(s\) of profile smoke are not in the store \(distilled [0-9a-f]{16}\).*"
                                             r"`ddnb run --profile smoke`"):
        open_page("distillation", "smoke", methods=METHODS, device="cpu", store=str(tmp_path))
    with pytest.raises(DdnbError, match="unknown page"):
        run_profile("smoke", methods=METHODS, device="cpu", store=Store(tmp_path), pages=["nonsense"])


def test_export_then_add_into_an_empty_store_serves_every_page(random_book_runs, random_book, tmp_path, capsys):
    assert main(["store", "export", str(tmp_path / "kept"), "--profile", "smoke", "--methods", "random",
                 "--store", str(random_book.root)]) == 0
    files = sorted((tmp_path / "kept").glob("*.safetensors"))
    # what the pages load, not the networks and pools it was made from (a complete book needs none of them)
    assert {path.name.rsplit("-", 1)[0] for path in files} == {report.kind for report in random_book_runs} - {"model", "pool-early"}
    assert len([path for path in (tmp_path / "kept").glob("*.json") if path.name not in ("findings.json", "progress.json")]) == len(files)
    fresh = tmp_path / "fresh"
    assert main(["store", "add", *map(str, files), "--store", str(fresh)]) == 0
    again = run_profile("smoke", methods=METHODS, device="cpu", store=Store(fresh))  # nothing to make: the pools stay away
    assert not any(report.made for report in again) and {report.kind for report in again} & {"model", "pool-early"} == set()
    saved = snapshot()
    forbid_compute()
    try:
        for page in PAGES:
            open_page(page, "smoke", methods=METHODS, device="cpu", store=str(fresh))
    finally:
        restore(saved)
    written = json.loads((tmp_path / "kept" / "findings.json").read_text())
    inputs = open_inputs("smoke", methods=METHODS, device="cpu", store=random_book)
    rows = PAGES["findings"].load(inputs).rows
    assert [row["claim"] for row in written["findings"]] == [row.claim for row in rows] and rows
    assert [row["effect"] for row in written["findings"]] == pytest.approx([row.effect for row in rows], nan_ok=True)
    assert written["sets"]["random"]["accuracies"] == PAGES["distillation"].load(inputs).evaluations["random"].accuracies.tolist()
    assert main(["store", "list", "--costs", "--store", str(fresh)]) == 0
    assert "curvature" in capsys.readouterr().out
    begun = Store(tmp_path / "begun")  # a book whose set and its evaluation are made, nothing else
    for path in files:
        if path.name.split("-")[0] in ("distilled", "evaluation"):
            begun.add(path)
    inputs = open_inputs("smoke", methods=METHODS, device="cpu", store=begun)
    with pytest.raises(MissingResults):
        export(inputs, tmp_path / "x")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "findings.json").write_text("{}")  # an earlier complete export's, now wrong
    done = export(inputs, tmp_path / "x", partial=True)
    assert sorted(path.name.split("-")[0] for path in done.results) == ["distilled", "evaluation"] and done.inputs == []
    assert len(done.results) + len(done.missing) == len(inputs.set_jobs + page_jobs(inputs))
    assert not (tmp_path / "x" / "findings.json").exists()
    progress = json.loads((tmp_path / "x" / "progress.json").read_text())
    assert progress["exported"] == {"distilled": 1, "evaluation": 1} and sum(progress["missing"].values()) == len(done.missing)
    assert progress["sets"] == written["sets"]  # every set evaluated: their accuracies before the rest is made


def test_a_partial_export_keeps_the_networks_and_checkpoints_the_missing_results_resume_from(random_book_runs, random_book, tmp_path):
    """A book longer than a session: what its missing results are made from goes with the exported results, so the
    next session (a fresh machine, the repository's files) goes on where this one stopped."""
    inputs = open_inputs("smoke", methods=METHODS, device="cpu", store=random_book)
    (model,) = PAGES["substitution"].model_jobs(inputs).values()
    trained, stopped = Store(tmp_path / "trained"), Store(tmp_path / "stopped")
    for store in (trained, stopped):
        for job in inputs.set_jobs:
            store.add(random_book.path(job.kind, job.key))
    trained.add(random_book.path(model.kind, model.key))  # the network is trained, the scores it gives are not made
    stopped.save("checkpoint", model.checkpoint, {"done": torch.tensor(3)}, {"done": 3})  # killed while training it
    for store, kind in ((trained, "model"), (stopped, "checkpoint")):
        done = export(open_inputs("smoke", methods=METHODS, device="cpu", store=store), tmp_path / kind, partial=True)
        assert [path.name.split("-")[0] for path in done.inputs] == [kind] and done.too_large == []
        fresh = Store(tmp_path / f"fresh-{kind}")
        for path in done.results + done.inputs:
            fresh.add(path)
        assert fresh.exists(kind, model.key if kind == "model" else model.checkpoint)
    for job in page_jobs(inputs):  # every score and map the network gives is made: the network is no longer kept
        if job_id(model) in map(job_id, job.needs):
            trained.add(random_book.path(job.kind, job.key))
    export(open_inputs("smoke", methods=METHODS, device="cpu", store=trained), tmp_path / "model", partial=True)
    assert not list((tmp_path / "model").glob("model-*"))


def test_ddnb_evaluate_gives_the_mean_of_the_books_table(random_book_runs, random_book, tmp_path, capsys):
    inputs = open_inputs("smoke", methods=METHODS, device="cpu", store=random_book)
    table = PAGES["distillation"].load(inputs).evaluations["random"].accuracies
    path = inputs.sets["random"].save(tmp_path / "random")
    assert main(["evaluate", str(path), "--profile", "smoke", "--protocol", "paper300", "--seeds", "2", "--json",
                 "--store", str(random_book.root), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mean"] == pytest.approx(float(table.mean()), abs=1e-7) and printed["accs"] == pytest.approx(table.tolist())


def test_a_real_trained_network_killed_midway_resumes_from_its_checkpoint(shapes_small, tmp_path, monkeypatch):
    """A kill after the training's third checkpoint: the next run starts from it (not from scratch), ends with the
    uninterrupted network, counts the killed attempt's work in its cost and leaves no checkpoint behind."""
    from ddnb.sections import common
    from ddnb.train import get_protocol

    monkeypatch.setattr(common, "MODEL_CHECKPOINT_EVERY_S", 0.0)  # one after every update
    protocol = get_protocol("real", epochs=2, batch_size=400)  # 6 updates
    whole = run_jobs([common.model_job(shapes_small, "convnet-tiny", protocol, Store(tmp_path / "whole"))], Store(tmp_path / "whole"))[0]
    store, saving = Store(tmp_path / "killed"), Store.save
    job = common.model_job(shapes_small, "convnet-tiny", protocol, store)

    def killed_after_the_third(self, kind, config, tensors, meta=None, **kwargs):
        saving(self, kind, config, tensors, meta, **kwargs)
        if kind == "checkpoint" and meta["done"] == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "save", killed_after_the_third)
        with pytest.raises(KeyboardInterrupt):
            run_jobs([job], store)
    assert not store.exists(job.kind, job.key) and len(list((store.root / "checkpoint").glob("*.safetensors"))) == 1
    resumed_from = []
    monkeypatch.setattr(common, "real_trained_model", lambda *args, **kwargs: resumed_from.append(int(kwargs["resume"]["done"]))
                        or real_trained_model(*args, **kwargs))
    resumed = run_jobs([job], store)[0]
    assert resumed_from == [3] and read_sidecar(resumed.path)["cost"]["cpu_s"] > resumed.meta["earlier_cost"]["cpu_s"] > 0
    assert resumed.tensors.keys() == whole.tensors.keys() and all(torch.equal(resumed.tensors[k], whole.tensors[k]) for k in whole.tensors)
    assert not list((store.root / "checkpoint").glob("*.safetensors"))
