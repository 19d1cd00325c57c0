"""How long the book's notebooks take to execute from a complete store (they only load and draw).

    ddnb run --profile smoke --store /tmp/smoke-store
    python benchmarks/notebook_speed.py --profile smoke --store /tmp/smoke-store --out benchmarks/results/notebook-speed-smoke.json

Each notebook is executed once with papermill (no executed copy is reused), one after another, and timed
with the wall clock; the kernel start is included, as in a book build.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ddnb.book import _execute, execution_key, notebook_parameters
from ddnb.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--data", default=None)
    parser.add_argument("--store", required=True, help="a store holding every result of the profile (ddnb run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    parameters = notebook_parameters(get_profile(args.profile, args.data), args.device, args.store)
    seconds = {}
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        start = time.perf_counter()
        _execute(str(source), parameters, execution_key(source, parameters), str(ROOT))
        seconds[source.stem] = round(time.perf_counter() - start, 1)
        print(f"{source.stem}: {seconds[source.stem]} s", flush=True)
    report = {"profile": args.profile, "device": args.device, "seconds": seconds, "total_s": round(sum(seconds.values()), 1),
              "command": f"python benchmarks/notebook_speed.py --profile {args.profile} --store STORE --out {args.out}"}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"total: {report['total_s']} s")


if __name__ == "__main__":
    main()
