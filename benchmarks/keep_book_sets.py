"""Copy the distilled sets a book made out of the store into a folder kept in the repository, with readable names.

A session's store does not outlive it; the sets are the book's costliest inputs (up to an hour each on a 2-core
CPU). Kept here, a later session (or a reader) puts them back with ``ddnb store add`` and the book goes on from
there instead of distilling again:

    python benchmarks/keep_book_sets.py --store /tmp/store-c10 --profile cifar10-cpu --to benchmarks/sets/cifar10-cpu
    ddnb store add benchmarks/sets/cifar10-cpu/*.safetensors      # in the next session, before `ddnb book`
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ddnb.distill import KIND
from ddnb.store import Store, load_artifact


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store the book used (default $DDNB_STORE or ~/.cache/ddnb)")
    parser.add_argument("--profile", default="cifar10-cpu")
    parser.add_argument("--to", type=Path, required=True, help="folder to copy the sets into")
    args = parser.parse_args()
    args.to.mkdir(parents=True, exist_ok=True)
    for name, path in book_sets(Store(args.store), args.profile):
        shutil.copyfile(path, args.to / f"{name}.safetensors")
        shutil.copyfile(path.with_suffix(".json"), args.to / f"{name}.json")
        print(f"{path.name} -> {args.to / name}.safetensors ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
