"""Copy the distilled sets a book made, and its small analysis results, out of the store into a folder kept in the
repository.

A session's store does not outlive it; the sets are the book's costliest inputs (up to an hour each on a 2-core
CPU), and the analyses behind the notebooks (evaluations, mixing points, real-trained models, leave-one-out
influence, curvature curves, influence-estimate agreements) are another two to three hours at ``cifar10-cpu``,
in files of a few hundred kB. Kept here, a later session (or a reader) puts them back with ``ddnb store add`` and
the book goes on from there instead of computing them again:

    python benchmarks/keep_book_sets.py --store /tmp/store-c10 --profile cifar10-cpu --to benchmarks/sets/cifar10-cpu
    ddnb store add benchmarks/sets/cifar10-cpu/*.safetensors      # in the next session, before `ddnb book`

The analysis results carry no profile in their keys: those of every kind below in the store are kept, so use a
store that one book used. Model pools are left out (the early pool is 63 MB at ``cifar10-cpu``; 12 minutes to
make again), and so are executed notebooks (a changed ddnb executes them again anyway).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ddnb.analysis.curvature import CURVE_KIND
from ddnb.analysis.influence import AGREEMENT_KIND
from ddnb.analysis.influence import KIND as INFLUENCE_KIND
from ddnb.analysis.substitution import EVALUATION_KIND, MIXING_KIND, MODEL_KIND
from ddnb.distill import KIND
from ddnb.store import Store, load_artifact

ANALYSIS_KINDS = (EVALUATION_KIND, MIXING_KIND, MODEL_KIND, INFLUENCE_KIND, CURVE_KIND, AGREEMENT_KIND)
LARGEST_ANALYSIS_MB = 20  # a result larger than this is not what this folder is for


def book_sets(store: Store, profile: str) -> list[tuple[str, Path]]:
    """(readable name, artifact path) of every complete, verified distilled set in ``store`` made for ``profile``
    (not the random real baseline)."""
    found = []
    for path, sidecar in store.sidecars(KIND):
        config = sidecar["config"]
        if config.get("profile") != profile or config.get("method") == "random":  # random costs nothing to remake
            continue
        load_artifact(path)  # a half-written or corrupt set is refused here, not in the next session
        found.append((f"{config['method']}-ipc{config['ipc']}-seed{config['seed']}", path))
    return found


def book_analyses(store: Store, kinds: tuple[str, ...] = ANALYSIS_KINDS) -> list[tuple[str, Path]]:
    """(name ``kind-key``, artifact path) of every complete, verified analysis result of ``kinds`` in ``store``."""
    found = []
    for kind in kinds:
        for path, _ in store.sidecars(kind):
            if path.stat().st_size > LARGEST_ANALYSIS_MB * 1e6:
                continue
            load_artifact(path)
            found.append((f"{kind}-{path.stem}", path))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store the book used (default $DDNB_STORE or ~/.cache/ddnb)")
    parser.add_argument("--profile", default="cifar10-cpu")
    parser.add_argument("--to", type=Path, required=True, help="folder to copy the sets into")
    parser.add_argument("--sets-only", action="store_true", help="keep the distilled sets, not the analysis results")
    args = parser.parse_args()
    args.to.mkdir(parents=True, exist_ok=True)
    store = Store(args.store)
    kept = book_sets(store, args.profile) + ([] if args.sets_only else book_analyses(store))
    for name, path in kept:
        shutil.copyfile(path, args.to / f"{name}.safetensors")
        shutil.copyfile(path.with_suffix(".json"), args.to / f"{name}.json")
        print(f"{path.name} -> {args.to / name}.safetensors ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
