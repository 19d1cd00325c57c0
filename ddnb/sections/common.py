"""What every page shares: the book's inputs (profile, data, sets), the jobs several pages show, and loading.

``BookInputs`` is made once per run or notebook by ``open_inputs``: it either makes the missing distilled
sets (``ddnb run``) or only loads them (a notebook). A page module (``ddnb.sections.<page>``) then lists its
``jobs(inputs)`` and reads them back with ``load(inputs)``; ``load`` never computes a missing result, it
raises ``MissingResults`` naming it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from ddnb.analysis.substitution import evaluate_set, in_analysis_space, real_trained_model
from ddnb import viz
from ddnb.data import DataConfig, Dataset, load_dataset
from ddnb.distill import Distilled, distill_job
from ddnb.distill.loop import CHECKPOINT_KIND
from ddnb.distill.imports import import_set
from ddnb.errors import DdnbError
from ddnb.jobs import Job, Runner, data_job, run_jobs
from ddnb.nets import build_net
from ddnb.profiles import Profile, get_profile
from ddnb.stacked import StackedEvaluation
from ddnb.store import Artifact, Store, artifact_path, config_key, fingerprint, work_so_far
from ddnb.train import EvalConfig, Protocol, evaluate, resolve_device

BOOK_METHODS = ("random", "bptt", "dm", "gm", "mtt")  # the random real baseline and the paper's four distillers
EVALUATION_KIND, MODEL_KIND = "evaluation", "model"


class MissingResults(DdnbError):
    """Results a page needs are not in the store (``ddnb run`` makes them)."""

    def __init__(self, jobs: Sequence[Job], profile: str):
        names = sorted({f"{job.kind} {config_key(job.kind, job.key)}" for job in jobs})
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        super().__init__(f"{len(names)} result(s) of profile {profile} are not in the store ({shown}); "
                         f"make them with `ddnb run --profile {profile}`")
        self.jobs = list(jobs)


@dataclass
class BookInputs:
    """What every page analyses: the ``profile``, its ``dataset`` (plain normalisation, on ``device``), the
    distilled ``sets`` by name as made, ``analysis`` their images re-encoded into the dataset's space (as the
    paper's analyses work), and the ``store`` that holds every result."""

    profile: Profile
    dataset: Dataset
    sets: dict[str, Distilled]
    analysis: dict[str, torch.Tensor]
    device: torch.device
    store: Store
    ipc: int
    set_jobs: list[Job]  # the jobs that made ``sets`` (the reader's own sets have none)
    loaded: dict[DataConfig, Dataset]  # every version of the data loaded so far (plain, ZCA): one copy each

    def labels(self, name: str) -> torch.Tensor:
        """Labels [M] of set ``name`` on the data's device."""
        return self.sets[name].labels.to(self.dataset.test.labels.device)

    def header(self) -> str:
        """The Markdown box at the top of every page: profile, data, ddnb version, seeds, device."""
        return viz.page_header(self.profile.name, self.profile.data.name, str(self.device), self.profile.evaluation.seeds, self.ipc)


def set_jobs(profile: Profile, methods: Sequence[str], ipc: int, seed: int, store: Store, device: torch.device,
             loaded: dict[DataConfig, Dataset], progress: bool = True) -> list[Job]:
    """One job per method's distilled set (``ddnb.distill.distill_job``), sharing the data sets in ``loaded``
    (data config -> data set; a version a method needs, e.g. ZCA-whitened, is added to it). The sets are made from
    the profile's training images less its validation split."""
    return [distill_job(method, profile.set_data(), profile.name, ipc, seed, store, device, progress, loaded) for method in methods]


def named_set(spec: str | Path) -> tuple[str, Path]:
    """A ``--set`` value ``[NAME=]PATH`` -> (NAME, PATH). Without NAME a set is named after its file. A NAME that is a
    book method (``bptt``, ``dm``, ...) stands in for that method's set, which is then not distilled: the paper's own
    sets analysed under their method names."""
    name, separator, rest = str(spec).partition("=")
    if separator and name and "/" not in name:
        return name, Path(rest).expanduser()
    path = Path(spec).expanduser()
    return path.name.removesuffix(".safetensors").removesuffix(".pt"), path


def is_released(path: Path) -> bool:
    """Whether a set file is another project's release (a ``.pt`` file, read as ``ddnb import`` reads it)."""
    return path.suffix == ".pt"


def set_file(path: Path) -> Path:
    """Where a set's tensors are: a released ``.pt`` file as given, ddnb's own as its ``.safetensors``."""
    return path if is_released(path) else artifact_path(path)


def load_set(path: Path, dataset: Dataset, device: torch.device) -> Distilled:
    """A reader's set file in ``dataset``'s input space: ddnb's own (``.safetensors``, from ``ddnb distill`` or
    ``ddnb import``) or a released ``.pt`` file, read as ``ddnb import`` reads it (the paper authors' ``{"data",
    "label"}`` files among others; ``torch.load(weights_only=True)`` only)."""
    if not is_released(path):
        return Distilled.load(set_file(path), device)
    released = import_set(path, dataset.transform, dataset.classes)
    return dataclasses.replace(released, images=released.images.to(device), labels=released.labels.to(device))


def open_inputs(profile: str, data: str | None = None, ipc: int | None = None, methods: Sequence[str] = BOOK_METHODS,
                seed: int = 0, device: str = "auto", store: str | Store | None = None, extra_sets: Sequence[str] = (),
                compute: bool = False, runner: Runner | None = None) -> BookInputs:
    """The profile's data and sets. ``compute``: make the missing sets (by ``runner``); otherwise only load them
    and raise ``MissingResults`` for any not in the store. ``extra_sets``: the reader's own sets as ``[NAME=]PATH``
    (``named_set``); one named after a method replaces that method's set."""
    settings, device = get_profile(profile, data), resolve_device(device)
    store = store if isinstance(store, Store) else Store(store)
    ipc = ipc or settings.ipc
    dataset = load_dataset(settings.data, store, device)
    loaded = {settings.data: dataset}
    own = {name: load_set(path, dataset, device) for name, path in map(named_set, extra_sets)}
    made = [method for method in methods if method not in own]
    jobs = set_jobs(settings, made, ipc, seed, store, device, loaded)
    if compute:
        artifacts = run_jobs(jobs, store, runner, desc="sets")
    else:
        artifacts = load_results(store, jobs, settings.name)
    distilled = {method: Distilled.from_artifact(_on(artifact, device)) for method, artifact in zip(made, artifacts)}
    sets = {method: own[method] if method in own else distilled[method] for method in methods} | own
    analysis = {name: in_analysis_space(distilled, dataset) for name, distilled in sets.items()}
    return BookInputs(settings, dataset, sets, analysis, device, store, ipc, jobs, loaded)


def _on(artifact: Artifact, device: torch.device) -> Artifact:
    return dataclasses.replace(artifact, tensors={name: tensor.to(device) for name, tensor in artifact.tensors.items()})


def load_results(store: Store, jobs: Sequence[Job], profile: str) -> list[Artifact]:
    """The stored artifact of every job, in order; ``MissingResults`` names all that are absent."""
    missing = [job for job in jobs if not store.exists(job.kind, job.key)]
    if missing:
        raise MissingResults(missing, profile)
    return [store.load(job.kind, job.key) for job in jobs]


def set_key(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, config: EvalConfig) -> dict:
    """The key of a result made from a set: its fingerprints, the data and the evaluation settings."""
    whitening = dataset.transform.zca_fingerprint()  # a whitened test split is another test (absent: the plain one)
    return {"images": fingerprint(images), "labels": fingerprint(labels), "data": dataset.source,
            "evaluation": config.key()} | ({"zca": whitening} if whitening else {})


def _evaluate(images: torch.Tensor, labels: torch.Tensor, config: EvalConfig, dataset: Dataset):
    result = evaluate_set(images, labels, dataset, config, progress=True)
    return {"predictions": result.predictions, "accuracies": result.accuracies}, {}


def evaluation_job(images: torch.Tensor, labels: torch.Tensor, dataset: Dataset, config: EvalConfig) -> Job:
    """One network per seed of ``config`` trained on images [M, C, H, W] / labels [M] and tested on ``dataset``."""
    return data_job(EVALUATION_KIND, set_key(images, labels, dataset, config),
                    partial(_evaluate, images.cpu(), labels.cpu(), config), dataset)


def as_evaluation(artifact: Artifact) -> StackedEvaluation:
    """An ``evaluation`` artifact as test ``predictions`` [S, T] and ``accuracies`` [S]."""
    return StackedEvaluation(artifact.tensors["predictions"], artifact.tensors["accuracies"])


# wall seconds between a real-trained network's checkpoints: a ResNet-18 epoch on CIFAR-10 is over half an hour on
# 2 CPU cores, longer than a session may have left; a ResNet-18 checkpoint (weights and momentum) is 90 MB
MODEL_CHECKPOINT_EVERY_S = 300.0


def _train_real(net: str, protocol: Protocol, seed: int, store: Store, key: dict, dataset: Dataset):
    """Train, keeping a checkpoint in ``store`` now and then and resuming from one left by a killed attempt."""
    checkpoint_key, started = model_checkpoint_key(key), (time.perf_counter(), time.process_time())
    found = store.find(CHECKPOINT_KIND, checkpoint_key)  # a corrupt one: start over
    earlier = {} if found is None else found.meta.get("work_s", {})

    def keep(state: dict[str, torch.Tensor]) -> None:
        store.save(CHECKPOINT_KIND, checkpoint_key, state, {"done": int(state["done"]), "work_s": work_so_far(earlier, started)})

    model = real_trained_model(dataset, net, protocol, seed, progress=True, resume=None if found is None else found.tensors,
                               checkpoint_every_s=MODEL_CHECKPOINT_EVERY_S, on_checkpoint=keep)
    store.remove(CHECKPOINT_KIND, checkpoint_key)
    meta = {"test_accuracy": evaluate(model, dataset.test.images, dataset.test.labels).accuracy}
    return model.state_dict(), meta | ({"earlier_cost": earlier} if earlier else {})


def model_checkpoint_key(key: dict) -> dict:
    """The store key of the checkpoint that the training of model ``key`` leaves while it runs."""
    return {"model": key}


def model_job(dataset: Dataset, net: str, protocol: Protocol, store: Store, seed: int = 0) -> Job:
    """A ``net`` trained on all of ``dataset.train`` with ``protocol`` (its state dict; meta: test accuracy); the
    training checkpoints to ``store`` and a killed one resumes there."""
    key = {"data": dataset.source, "net": net, "protocol": dataclasses.asdict(protocol), "seed": seed}
    job = data_job(MODEL_KIND, key, partial(_train_real, net, protocol, seed, store, key), dataset)
    return dataclasses.replace(job, checkpoint=model_checkpoint_key(key))


def as_model(artifact: Artifact, net: str, dataset: Dataset) -> torch.nn.Module:
    """A ``model`` artifact as a network on the data's device, in eval mode."""
    model = build_net(net, 0, dataset.image_shape[0], dataset.image_shape[-1], dataset.num_classes, device=dataset.train.images.device)
    model.load_state_dict(artifact.tensors)
    return model.eval()
