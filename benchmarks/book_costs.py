"""Where a book's time went, piece by piece, from the costs its store recorded (wall and CPU seconds per artifact).

    python benchmarks/book_costs.py --store /tmp/store-c10 --out benchmarks/results/book-cifar10-cpu-costs.json

Every artifact ``Store.get_or_make`` made carries its cost in its sidecar; this names each one (a set by its method,
a notebook by its file) so that the budgets of the issues can be checked: each distillation within 60 minutes, MTT's
experts within another 60. A distillation resumed after a kill counts the checkpointed work of its earlier attempts
too (stores written before 2026-12-03 counted only the last attempt); a piece made inside another (the experts inside
MTT's set, the trainings inside a notebook) counts in both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddnb.store import Store


def _name(sidecar: dict) -> str:
    config, meta = sidecar["config"], sidecar.get("meta", {})
    if sidecar["kind"] == "distilled":
        return config.get("method", "?")
    if sidecar["kind"] == "notebook":
        return meta.get("notebook", "?")
    return ""


def book_costs(store: Store) -> list[dict]:
    """One row per costed artifact: kind, name, created (UTC), wall_s, cpu_s; oldest first."""
    rows = [{"kind": sidecar["kind"], "name": _name(sidecar), "created": sidecar["created"], **sidecar["cost"]}
            for _, sidecar in store.sidecars() if "cost" in sidecar]
    return sorted(rows, key=lambda row: row["created"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store the book used (default $DDNB_STORE or ~/.cache/ddnb)")
    parser.add_argument("--note", default="", help="what a reader should know about this run (machine, interruptions)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = book_costs(Store(args.store))
    args.out.write_text(json.dumps({"note": args.note, "artifacts": rows}, indent=1) + "\n")
    for row in rows:
        print(f"{row['created']}  {row['kind']:<12} {row['name']:<22} {row['wall_s'] / 60:7.1f} min")


if __name__ == "__main__":
    main()
