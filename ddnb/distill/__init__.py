"""Distillers behind one call: ``distill(method, dataset, ipc=10, seed=0, steps=..., **options) -> Distilled``.

Every method is a small module with its paper's published settings beside the code; this module only
dispatches. Runs checkpoint to the store and resume after a kill (see ``loop``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable

import torch

from ddnb.data import DataConfig, Dataset, load_dataset
from ddnb.distill import bptt, dm, gm, mtt
from ddnb.distill.loop import LoopConfig, Preset, finish, make_synthetic, run_loop
from ddnb.distill.real_subset import random_subset
from ddnb.distill.result import KIND, Distilled
from ddnb.errors import DdnbError
from ddnb.jobs import Job, Runner, data_job, run_jobs
from ddnb.precision import POLICY
from ddnb.profiles import PROFILES
from ddnb.store import Store, settings_key

# method name -> (options dataclass, Method class); "random" has no optimisation loop
OPTIMISED = {"bptt": (bptt.BPTTOptions, bptt.TruncatedBPTT), "dm": (dm.DMOptions, dm.DistributionMatching), "gm": (gm.GMOptions, gm.GradientMatching),
             "mtt": (mtt.MTTOptions, mtt.TrajectoryMatching)}
MODULES = {"bptt": bptt, "dm": dm, "gm": gm, "mtt": mtt}
METHODS = ("random", *OPTIMISED)


def preset(method: str, profile: str = "paper", ipc: int = 10) -> Preset:
    """``method``'s settings for a profile: the reduced presets beside each method's code, or for ``paper``
    the published CIFAR-10 settings at ``ipc`` (the nearest published IPC when ``ipc`` has none)."""
    if method not in OPTIMISED:
        raise DdnbError(f"unknown method {method!r}; choose one of {', '.join(OPTIMISED)}")
    if profile not in PROFILES:
        raise DdnbError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    module = MODULES[method]
    if profile != "paper":
        return module.PRESETS[profile]
    published_ipc = min(module.PUBLISHED, key=lambda known: abs(known - ipc))
    zca = getattr(module, "PUBLISHED_ZCA", {}).get(published_ipc, False)
    return Preset(module.PUBLISHED_STEPS, module.PUBLISHED[published_ipc], zca)


def candidates(method: str, profile: str) -> dict[str, Preset]:
    """The settings ``ddnb search`` compares for ``method`` at a profile, by name (the method module's
    ``CANDIDATES``; a profile without any has its one preset, named ``preset``). The profile's preset is one of them."""
    chosen = preset(method, profile)
    return getattr(MODULES[method], "CANDIDATES", {}).get(profile) or {"preset": chosen}


def method_options(method: str, overrides: dict[str, object]):
    """``method``'s options dataclass with ``overrides``; an unknown name or a bad value raises ``DdnbError``."""
    if method not in OPTIMISED:
        raise DdnbError(f"{method!r} has no options; these methods do: {', '.join(OPTIMISED)}")
    options_type = OPTIMISED[method][0]
    names = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise DdnbError(f"{method} has no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    try:
        return options_type(**overrides)
    except DdnbError as error:
        raise DdnbError(f"{method} option {error}") from None


def setup(method: str, dataset: Dataset, ipc: int, generator: torch.Generator, init: str = "real",
          store: Store | None = None, **options: object):
    """Everything an optimised method starts from: ``(method object, Synthetic, options dataclass)``."""
    if method not in OPTIMISED:
        raise DdnbError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    settings = method_options(method, options)
    method_type = OPTIMISED[method][1]
    learned_lr = settings.lr_teacher if getattr(method_type, "learns_lr", False) else None
    synthetic = make_synthetic(dataset, ipc, init, settings.lr_images, generator, learned_lr,
                               getattr(settings, "lr_lr", 0.0), getattr(method_type, "image_optimizer", "sgd"))
    return method_type(settings, dataset, store), synthetic, settings


def distill(
    method: str,
    dataset: Dataset,
    ipc: int = 10,
    seed: int = 0,
    loop: LoopConfig | None = None,
    init: str = "real",
    store: Store | None = None,
    on_step: Callable[[int, float], None] | None = None,
    **options: object,
) -> Distilled:
    """Make ``ipc`` images per class from ``dataset`` with ``method`` (one of ``METHODS``).

    ``loop`` sets the number of steps and checkpointing; ``options`` override the method's options
    dataclass (e.g. ``real_per_class=64`` for DM). With a ``store``, the run checkpoints there and a
    rerun with the same arguments resumes from its last checkpoint.
    """
    if ipc < 1:  # zero images per class make a NaN loss, not a set
        raise DdnbError(f"ipc (images per class) must be at least 1, got {ipc}")
    if method == "random":
        if options:
            raise DdnbError(f"random takes no options (got {', '.join(options)})")
        return random_subset(dataset, ipc, seed)
    loop = loop or LoopConfig()
    generator = torch.Generator().manual_seed(seed)
    runner, synthetic, settings = setup(method, dataset, ipc, generator, init, store, **options)
    run_config = {"method": method, "data": dataset.source, "ipc": ipc, "seed": seed, "init": init,
                  "steps": loop.steps, "options": settings_key(settings)}
    if loop.precision != "fp32":  # named only when not fp32, so that fp32 runs keep their keys
        run_config["precision"] = loop.precision
    losses = run_loop(runner, synthetic, dataset, generator, loop, run_config, store, on_step)
    return finish(synthetic, dataset, losses, run_config, store)


def _make_distilled(dataset: Dataset, method: str, ipc: int, seed: int, loop: LoopConfig, store: Store,
                    options: dict[str, object], key: dict[str, object]):
    result = distill(method, dataset, ipc, seed, loop, store=store, **options)
    result.config = key  # the store's key, so that the saved set is found again
    return result.parts()


def distill_job(method: str, data: DataConfig, profile: str = "smoke", ipc: int = 10, seed: int = 0,
                store: Store | None = None, device: torch.device | str = "cpu", progress: bool = True,
                loaded: dict[DataConfig, Dataset] | None = None, settings: Preset | None = None) -> Job:
    """The job (``ddnb.jobs``) that makes ``method``'s set for a profile, as ``distill_preset`` describes, or with
    other ``settings`` (a search candidate; the key holds them, so the profile's own preset finds that set again).
    Loads the data set here (its source is part of the key), or takes it from ``loaded`` (data config -> data
    set, filled here): jobs sharing one dict share one copy (CIFAR-10 is 0.7 GB as float32, per copy)."""
    store = Store((store or Store()).root.resolve())  # checkpoints go here, also from a Ray worker elsewhere
    if method == "random":
        settings = Preset(0, None)
    settings = settings or preset(method, profile, ipc)
    config = dataclasses.replace(data, zca=settings.zca)
    loaded = {} if loaded is None else loaded
    dataset = loaded[config] if config in loaded else loaded.setdefault(config, load_dataset(config, store, device))
    options = {} if method == "random" else dataclasses.asdict(settings.options)
    key = {"method": method, "data": dataset.source, "profile": profile, "ipc": ipc, "seed": seed, "steps": settings.steps,
           "options": {} if method == "random" else settings_key(settings.options)}
    if POLICY["distillation"] != "fp32":  # as in distill's run config: fp32 sets keep their keys
        key["precision"] = POLICY["distillation"]
    loop = LoopConfig(settings.steps, progress=progress, precision=POLICY["distillation"])
    make = partial(_make_distilled, method=method, ipc=ipc, seed=seed, loop=loop,
                   store=store, options=options, key=key)
    return data_job(KIND, key, make, dataset)


def distill_presets(methods: list[str], data: DataConfig, profile: str = "smoke", ipc: int = 10, seed: int = 0,
                    store: Store | None = None, device: torch.device | str = "cpu", progress: bool = True,
                    runner: Runner | None = None, loaded: dict[DataConfig, Dataset] | None = None) -> dict[str, Distilled]:
    """Each method's set for a profile, made once and then loaded from the store (kind ``distilled``).

    The data set is loaded from ``data`` with the ZCA setting of the method's preset (MTT and BPTT whiten
    CIFAR-10); each result stays in that input space (``Distilled.pixels`` decodes it). Interrupted runs
    resume from their checkpoint. ``runner``: where the missing sets are made (``ddnb.jobs``; default one
    after another in this process; on Ray all at once). ``loaded``: data sets already in memory, by their
    config (see ``distill_job``).
    """
    store, loaded = store or Store(), {} if loaded is None else loaded
    jobs = [distill_job(method, data, profile, ipc, seed, store, device, progress, loaded) for method in methods]
    artifacts = run_jobs(jobs, store, runner, progress=False)
    return {method: Distilled.from_artifact(dataclasses.replace(artifact, tensors={name: tensor.to(device) for name, tensor in artifact.tensors.items()}))
            for method, artifact in zip(methods, artifacts)}


def distill_preset(method: str, data: DataConfig, profile: str = "smoke", ipc: int = 10, seed: int = 0,
                   store: Store | None = None, device: torch.device | str = "cpu", progress: bool = True,
                   runner: Runner | None = None) -> Distilled:
    """``method``'s set for a profile (``distill_presets`` for one method)."""
    return distill_presets([method], data, profile, ipc, seed, store, device, progress, runner)[method]


__all__ = ["METHODS", "Distilled", "LoopConfig", "Preset", "candidates", "distill", "distill_job", "distill_preset", "distill_presets", "method_options",
           "preset", "setup"]
