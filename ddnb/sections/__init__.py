"""The book's pages as library jobs: one module per page, each with ``jobs(inputs)`` (every computation the page
shows, as ``ddnb.jobs.Job`` store artifacts) and ``load(inputs)`` (its results, read from the store only).

``run_profile`` (``ddnb run``) makes every missing result of a profile: first the distilled sets, then each
page's jobs, in the order their needs give, in this process or as Ray tasks. A notebook calls
``open_page``, which loads and never computes: a result not in the store raises ``MissingResults``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ddnb.errors import DdnbError
from ddnb.jobs import Job, Runner, job_id, run_jobs, waves
from ddnb.sections import distillation, dynamics, findings, semantics, substitution
from ddnb.distill.loop import CHECKPOINT_KIND
from ddnb.sections.common import BOOK_METHODS, BookInputs, MissingResults, open_inputs
from ddnb.store import Store, read_sidecar

PAGES = {"findings": findings, "distillation": distillation, "substitution": substitution, "dynamics": dynamics, "semantics": semantics}


def _pages(only: Sequence[str] | None) -> list[str]:
    unknown = sorted(set(only or ()) - set(PAGES))
    if unknown:
        raise DdnbError(f"unknown page(s) {', '.join(unknown)}; choose from {', '.join(PAGES)}")
    return list(only or PAGES)


def page_jobs(inputs: BookInputs, pages: Sequence[str] | None = None) -> list[Job]:
    """The results the named pages (default all) load, each once. The jobs they need (model pools, real-trained
    networks) are not listed: ``run_jobs`` makes those when a result made from them is missing."""
    listed = {job_id(job): job for page in _pages(pages) for job in PAGES[page].jobs(inputs)}
    return list(listed.values())


@dataclass
class JobReport:
    """How one job of a run went: ``made`` (False: loaded from the store), its ``minutes`` of wall time and the
    peak memory (MB) recorded when it was made (``peak_rss_mb`` of its process; ``peak_cuda_mb`` with a GPU)."""

    kind: str
    key: str
    made: bool
    minutes: float
    peak_mb: float


def _report(store: Store, job: Job, since: float) -> JobReport:
    path = store.path(job.kind, job.key)
    cost = read_sidecar(path).get("cost", {})
    peak = cost.get("peak_cuda_mb", cost.get("peak_rss_mb", 0.0))
    made = path.with_suffix(".json").stat().st_mtime >= since  # written by this run (the sidecar is written last)
    return JobReport(job.kind, job_id(job)[1], made, cost.get("wall_s", 0.0) / 60, peak)


def run_profile(profile: str, data: str | None = None, ipc: int | None = None, methods: Sequence[str] = BOOK_METHODS,
                seed: int = 0, device: str = "auto", store: str | Store | None = None, extra_sets: Sequence[str] = (),
                runner: Runner | None = None, pages: Sequence[str] | None = None) -> list[JobReport]:
    """Make every missing result of ``profile`` (the sets, then the jobs of ``pages``, default all) and report
    on each job: made or loaded, minutes, peak memory. A rerun after a kill makes only what is missing."""
    pages = _pages(pages)
    store = store if isinstance(store, Store) else Store(store)
    started = time.time()
    inputs = open_inputs(profile, data, ipc, methods, seed, device, store, extra_sets, compute=True, runner=runner)
    jobs = page_jobs(inputs, pages)
    planned = [job for wave in waves(jobs, store) for job in wave]  # with the needs of the results still missing
    run_jobs(jobs, store, runner, desc="results")
    return [_report(store, job, started) for job in inputs.set_jobs + planned]


def report_table(reports: Sequence[JobReport]) -> str:
    """The reports as a text table, one job a line, and the total minutes of the jobs made."""
    lines = [f"{'job':<22} {'key':<16} {'made':>6} {'minutes':>8} {'peak MB':>8}"]
    lines += [f"{r.kind:<22} {r.key:<16} {'made' if r.made else 'loaded':>6} {r.minutes:>8.1f} {r.peak_mb:>8.0f}" for r in reports]
    made = [r for r in reports if r.made]
    lines.append(f"{len(made)} of {len(reports)} made, {sum(r.minutes for r in made):.1f} min")
    return "\n".join(lines)


def missing_results(inputs: BookInputs, pages: Sequence[str] | None = None) -> list[Job]:
    """The jobs of ``pages`` whose results are not in the store."""
    return [job for job in page_jobs(inputs, pages) if not inputs.store.exists(job.kind, job.key)]


def open_page(page: str, profile: str, data: str | None = None, ipc: int | None = None, methods: Sequence[str] = BOOK_METHODS,
              seed: int = 0, device: str = "auto", store: str | None = None, extra_sets: Sequence[str] = ()):
    """A notebook's one call: the results of ``page`` for the notebook's parameters, loaded from the store
    (``MissingResults`` names what ``ddnb run`` has not made yet)."""
    inputs = open_inputs(profile, data, ipc, methods, seed, device, store, extra_sets)
    return PAGES[_pages([page])[0]].load(inputs)


# inputs larger than this (a ResNet's checkpoint: 90 MB) are not kept by a partial export: a repository holds them
# badly, and such a job is remade from its start instead
KEEP_INPUT_MAX_MB = 50


@dataclass
class Exported:
    """What ``export`` wrote: the ``results`` copied, the ``inputs`` copied beside them for the ``missing`` jobs
    (finished networks and pools they are made from, checkpoints of killed trainings), and the inputs ``too_large``
    to copy (over ``KEEP_INPUT_MAX_MB``)."""

    results: list[Path]
    inputs: list[Path]
    missing: list[Job]
    too_large: list[Path]


def _copy(store: Store, kind: str, key: dict, folder: Path) -> Path:
    path = store.path(kind, key)
    for source in (path, path.with_suffix(".json")):
        shutil.copy2(source, folder / f"{kind}-{source.name}")
    return folder / f"{kind}-{path.name}"


def _resumable_inputs(store: Store, missing: Sequence[Job], results: Sequence[Job]) -> list[tuple[str, dict]]:
    """(kind, key) of what the ``missing`` jobs would resume from that is not one of the book's ``results``: their
    needs that exist (a missing need's own needs instead) and the checkpoints a killed attempt left."""
    found, seen, stack = [], {job_id(job) for job in results}, list(missing)
    while stack:
        job = stack.pop()
        if job.checkpoint is not None and store.exists(CHECKPOINT_KIND, job.checkpoint):
            found.append((CHECKPOINT_KIND, job.checkpoint))
        for need in job.needs:
            if job_id(need) not in seen:
                seen.add(job_id(need))
                if store.exists(need.kind, need.key):
                    found.append((need.kind, need.key))
                else:
                    stack.append(need)
    return found


def _remove_inputs_no_longer_needed(folder: Path, kept: Sequence[Path]) -> None:
    """Delete the inputs an earlier export of ``folder`` copied (its ``progress.json`` names them) that are not in
    ``kept``: their results are made now, and a finished book's folder holds only results."""
    try:
        earlier = json.loads((folder / "progress.json").read_text()).get("inputs", [])
    except (OSError, ValueError):
        return
    for name in set(earlier) - {path.name for path in kept}:
        for path in (folder / name, (folder / name).with_suffix(".json")):
            path.unlink(missing_ok=True)


def export(inputs: BookInputs, folder: str | Path, partial: bool = False) -> Exported:
    """Copy every result the book of ``inputs`` loads (its sets and every page's jobs; not what those were made
    from, such as model pools) with their sidecars into ``folder``, ready for ``ddnb store add``, and beside them
    ``findings.json`` (``summary``: each set's accuracy and every finding, read from those results, for texts that
    quote them) and ``progress.json`` (results exported and missing, by kind; with ``sets``, ``set_accuracies``,
    once every set is evaluated). ``MissingResults`` when results are missing, unless ``partial``: that copies
    what there is and what the missing results would resume from (``Exported.inputs``: a long book kept across
    sessions) and writes no ``findings.json``."""
    jobs = inputs.set_jobs + page_jobs(inputs)
    store = inputs.store
    missing = [job for job in jobs if not store.exists(job.kind, job.key)]
    if missing and not partial:
        raise MissingResults(missing, inputs.profile.name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    absent = {job_id(job) for job in missing}
    results = [_copy(store, job.kind, job.key, folder) for job in jobs if job_id(job) not in absent]
    kept, too_large = [], []
    for kind, key in _resumable_inputs(store, missing, jobs):
        if store.path(kind, key).stat().st_size > KEEP_INPUT_MAX_MB * 2**20:
            too_large.append(store.path(kind, key))
        else:
            kept.append(_copy(store, kind, key, folder))
    _remove_inputs_no_longer_needed(folder, kept)
    counts = {"profile": inputs.profile.name, "data": inputs.profile.data.name, "results": len(jobs),
              "exported": dict(Counter(job.kind for job in jobs if job_id(job) not in absent)),
              "missing": dict(Counter(job.kind for job in missing)), "inputs": [path.name for path in kept]}
    book = None if missing else summary(inputs)
    try:  # the sets' accuracies are the first thing a reader of an unfinished book asks for
        counts["sets"] = set_accuracies(inputs) if book is None else book["sets"]
    except MissingResults:
        pass
    (folder / "progress.json").write_text(json.dumps(counts, indent=1) + "\n")
    findings_file = folder / "findings.json"
    if book is None:
        findings_file.unlink(missing_ok=True)  # an older complete export's findings no longer describe this folder
    else:
        findings_file.write_text(json.dumps(book, indent=1) + "\n")
    return Exported(results, kept, missing, too_large)


def set_accuracies(inputs: BookInputs) -> dict[str, dict]:
    """Each set's ``paper300`` accuracies in the analysis space, JSON-ready: per evaluation seed, their mean and
    sample std (NaN for one seed). Loaded from the store only (``MissingResults`` when an evaluation is not there)."""
    return {name: {"accuracies": result.accuracies.tolist(), "mean": float(result.accuracies.mean()),
                   "std": float(result.accuracies.std()) if len(result.accuracies) > 1 else float("nan")}
            for name, result in distillation.load(inputs).evaluations.items()}


def summary(inputs: BookInputs) -> dict:
    """The book's headline numbers, JSON-ready: each set's accuracies (``sets``, ``set_accuracies``) and every
    finding of the findings page (``findings``) with its ``rule``. Loaded from the store only."""
    found = findings.load(inputs)
    return {"profile": inputs.profile.name, "data": inputs.profile.data.name, "ipc": inputs.ipc, "sets": set_accuracies(inputs),
            "rule": found.rule, "findings": [dataclasses.asdict(row) for row in found.rows]}


__all__ = ["BOOK_METHODS", "PAGES", "BookInputs", "JobReport", "MissingResults", "export", "missing_results", "open_inputs", "open_page",
           "page_jobs", "report_table", "run_profile", "set_accuracies", "summary"]
