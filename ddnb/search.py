"""``ddnb search``: choose a method's settings for a profile on held-out training images, never on the test split.

Each candidate of ``ddnb.distill.candidates`` is one distillation job, made from the profile's training images
less its validation split (``Profile.validation_per_class``); each set is then scored by the profile's evaluation
(``paper300`` with its seeds) on that split, in the analyses' input space. The profile's preset is one of the
candidates, so the book loads its set from the search instead of making it again. Both kinds of job live in the
store: a killed search resumes, and a finished one is only read back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ddnb.analysis.substitution import in_analysis_space
from ddnb.data import DataConfig, Dataset, load_dataset
from ddnb.distill import Distilled, Preset, candidates, distill_job, preset
from ddnb.errors import DdnbError
from ddnb.jobs import Runner, run_jobs
from ddnb.profiles import get_profile
from ddnb.sections.common import as_evaluation, evaluation_job
from ddnb.store import Store, read_sidecar, settings_key


@dataclass
class CandidateResult:
    """One candidate: its ``settings``, validation ``accuracies`` [S] (one per evaluation seed), the wall
    ``minutes`` its distillation took when made, and whether it is the profile's preset (``chosen``)."""

    name: str
    settings: Preset
    accuracies: torch.Tensor
    minutes: float
    chosen: bool

    def as_row(self) -> dict:
        """A JSON-ready row: name, steps, options, accuracy mean and std over seeds, minutes, chosen."""
        return {"name": self.name, "steps": self.settings.steps, "zca": self.settings.zca,
                "options": settings_key(self.settings.options), "accuracies": self.accuracies.tolist(),
                "mean": self.accuracies.mean().item(), "std": self.accuracies.std().item() if len(self.accuracies) > 1 else float("nan"),
                "minutes": self.minutes, "chosen": self.chosen}


def validation_data(profile: str, data: str | None = None, validation_per_class: int | None = None) -> DataConfig:
    """The data config the candidates are made from and scored on: the profile's, holding out
    ``validation_per_class`` training images per class (default: the profile's own validation split)."""
    settings = get_profile(profile, data)
    held_out = validation_per_class if validation_per_class is not None else settings.validation_per_class
    if held_out is None:
        raise DdnbError(f"profile {profile} holds out no validation images; pass --validation N (training images per class "
                        f"to score the candidates on)")
    return dataclasses.replace(settings.set_data(), validation_per_class=held_out)


def search(method: str, profile: str, data: str | None = None, validation_per_class: int | None = None, seed: int = 0,
           store: Store | None = None, device: torch.device | str = "cpu", runner: Runner | None = None,
           progress: bool = True) -> list[CandidateResult]:
    """Make and score every candidate setting of ``method`` at ``profile`` (see the module docstring), in the
    order ``candidates`` lists them; missing sets and scores are made, the rest loaded from ``store``."""
    store, settings = store or Store(), get_profile(profile, data)
    config, options, chosen = validation_data(profile, data, validation_per_class), candidates(method, profile), preset(method, profile)
    plain = load_dataset(config, store, device)  # the analyses' space, where every candidate is scored
    loaded: dict[DataConfig, Dataset] = {config: plain}
    sets = [distill_job(method, config, profile, settings.ipc, seed, store, device, progress, loaded, option) for option in options.values()]
    made = [Distilled.from_artifact(artifact) for artifact in run_jobs(sets, store, runner, desc=f"{method} candidates")]
    evaluations = [evaluation_job(in_analysis_space(distilled, plain), distilled.labels.to(plain.test.labels.device), plain,
                                  settings.evaluation) for distilled in made]
    scores = run_jobs(evaluations, store, runner, desc="validation scores")
    minutes = [read_sidecar(store.path(job.kind, job.key)).get("cost", {}).get("wall_s", float("nan")) / 60 for job in sets]
    return [CandidateResult(name, option, as_evaluation(score).accuracies, minute, option == chosen)
            for (name, option), score, minute in zip(options.items(), scores, minutes)]


def search_table(results: list[CandidateResult]) -> str:
    """The results as a text table: candidate, steps, validation accuracy (mean +- std over seeds), minutes."""
    lines = [f"{'candidate':<20} {'steps':>6} {'validation':>16} {'minutes':>8}"]
    for result in results:
        row = result.as_row()
        mark = "  <- the profile's preset" if result.chosen else ""
        lines.append(f"{result.name:<20} {row['steps']:>6} {row['mean']:>9.3f} +- {row['std']:.3f} {row['minutes']:>8.1f}{mark}")
    best = max(results, key=lambda result: result.accuracies.mean().item())
    if not best.chosen:
        lines.append(f"best on validation: {best.name}; set it as the profile's preset beside the method's code")
    return "\n".join(lines)


__all__ = ["CandidateResult", "search", "search_table", "validation_data"]
