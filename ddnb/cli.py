"""``ddnb`` command line: parses flags into the library's config dataclasses and calls it.

Bad input exits with status 2 and one line ``ddnb: error: REASON`` (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddnb import __version__
from ddnb.errors import DdnbError


def _add_common(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    parser.add_argument("--data", required=data_required, help="shapes, cifar10 or imagefolder:PATH (folder or .tar)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb."""
    from ddnb.distill import METHODS
    from ddnb.nets import NET_NAMES
    from ddnb.profiles import PROFILES
    from ddnb.train import PROTOCOLS

    parser = argparse.ArgumentParser(prog="ddnb", description="Dataset distillation, analysed: the executable edition of "
                                     "'What is Dataset Distillation Learning?' (ICML 2024).")
    parser.add_argument("--version", action="version", version=f"ddnb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    distill = commands.add_parser("distill", help="make a distilled set (or the random real baseline)")
    distill.add_argument("--method", required=True, choices=sorted(METHODS))
    distill.add_argument("--ipc", type=int, default=10, help="images per class")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--out", required=True, help="where to write the set (.safetensors + .json)")
    _add_common(distill)

    evaluate = commands.add_parser("evaluate", help="train fresh networks on a distilled set and report test accuracy")
    evaluate.add_argument("path", help="a distilled set written by `ddnb distill` or `ddnb import`")
    evaluate.add_argument("--protocol", default="paper300", choices=sorted(PROTOCOLS))
    evaluate.add_argument("--net", default="convnet", choices=NET_NAMES)
    evaluate.add_argument("--seeds", type=int, default=3, help="number of networks (seeds 0..N-1)")
    evaluate.add_argument("--json", action="store_true", help='print {"mean", "std", "accs"} as JSON')
    _add_common(evaluate)

    book = commands.add_parser("book", help="execute the notebooks for a profile and build the HTML book")
    book.add_argument("--profile", default="quick", choices=list(PROFILES))
    book.add_argument("--root", default=".", help="the checkout holding _config.yml and _toc.yml")
    _add_common(book, data_required=False)
    return parser


def _load_data(args: argparse.Namespace, **config: object):
    from ddnb.data import DataConfig, load_dataset
    from ddnb.store import Store
    from ddnb.train import resolve_device

    return load_dataset(DataConfig(args.data, **config), Store(args.store), resolve_device(args.device))


def cmd_distill(args: argparse.Namespace) -> None:
    from ddnb.distill import distill

    dataset = _load_data(args)
    result = distill(args.method, dataset, ipc=args.ipc, seed=args.seed)
    print(result.save(args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ddnb.distill import Distilled
    from ddnb.train import EvalConfig, run

    if args.seeds < 1:
        raise DdnbError("--seeds must be at least 1")
    distilled = Distilled.load(args.path)
    dataset = _load_data(args)
    distilled.images, distilled.labels = distilled.images.to(dataset.train.images.device), distilled.labels.to(dataset.train.images.device)
    if distilled.images.shape[1:] != dataset.train.images.shape[1:] or int(distilled.labels.max()) >= dataset.num_classes:
        raise DdnbError(f"{args.path} holds images {tuple(distilled.images.shape[1:])} that do not fit data set {args.data}")
    config = EvalConfig(args.protocol, args.net, tuple(range(args.seeds)))
    summary = run(distilled.images, distilled.labels, (dataset.test.images, dataset.test.labels), config,
                  dataset.num_classes, progress=not args.json)
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(f"{args.protocol} test accuracy over {args.seeds} seeds: {summary.mean:.4f} ± {summary.std:.4f}")


def cmd_book(args: argparse.Namespace) -> None:
    from ddnb.book import build_book
    from ddnb.profiles import get_profile

    index = build_book(get_profile(args.profile, args.data), Path(args.root))
    print(index)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddnb`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handlers = {"distill": cmd_distill, "evaluate": cmd_evaluate, "book": cmd_book}
    try:
        handlers[args.command](args)
    except DdnbError as error:
        print(f"ddnb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddnb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
