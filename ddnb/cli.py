"""``ddnb`` command line: parses flags into the library's config dataclasses and calls it.

Bad input exits with status 2 and one line ``ddnb: error: REASON`` (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from ddnb import __version__
from ddnb.errors import DdnbError


def _add_common(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    if data_required:
        parser.add_argument("--data", required=True, help="shapes, cifar10 or imagefolder:PATH (folder or .tar)")
    else:  # the book: the profile's data unless told otherwise
        parser.add_argument("--data", default=os.environ.get("DDNB_DATA"),
                            help="shapes, cifar10 or imagefolder:PATH (default $DDNB_DATA, else the profile's data)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    """``--ray ADDRESS``: run the command's independent jobs as Ray tasks (read by ``ddnb.jobs.get_runner``)."""
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run the jobs as Ray tasks on this cluster ('auto': the one `ray start` runs here; "
                             "default $DDNB_RAY, else in this process); needs pip install 'ddnb[ray]' and a --store every worker can reach")


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
    distill.add_argument("--method", required=True, choices=METHODS)
    distill.add_argument("--ipc", type=int, default=10, help="images per class")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--profile", default="paper", choices=list(PROFILES),
                         help="the method's settings: reduced presets, or paper (the published CIFAR-10 settings)")
    distill.add_argument("--steps", type=int, default=None, help="distillation steps (default: the profile's; ignored by random)")
    distill.add_argument("--init", default="real", choices=["real", "noise"], help="start from real images or noise")
    distill.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="override a method option, e.g. --option real_per_class=64 (repeatable)")
    distill.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None,
                         help="ZCA-whiten the data first (default: the profile's; MTT and BPTT use it on CIFAR-10)")
    distill.add_argument("--checkpoint-every", type=int, default=50, help="steps between resumable checkpoints")
    distill.add_argument("--out", required=True, help="where to write the set (.safetensors + .json)")
    _add_common(distill)

    evaluate = commands.add_parser("evaluate", help="train fresh networks on a distilled set and report test accuracy")
    evaluate.add_argument("path", help="a distilled set written by `ddnb distill` or `ddnb import`")
    evaluate.add_argument("--protocol", default="paper300", choices=sorted(PROTOCOLS))
    evaluate.add_argument("--net", default="convnet", choices=NET_NAMES)
    evaluate.add_argument("--seeds", type=int, default=3, help="number of networks (seeds 0..N-1)")
    evaluate.add_argument("--json", action="store_true", help='print {"mean", "std", "accs"} as JSON')
    _add_common(evaluate)

    experts = commands.add_parser("experts", help="train expert trajectories for trajectory matching (resumable)")
    experts.add_argument("--profile", default="paper", choices=list(PROFILES),
                         help="take the experts that MTT's settings for this profile use (the flags below override)")
    experts.add_argument("--count", type=int, default=None, help="number of experts")
    experts.add_argument("--epochs", type=int, default=None, help="epochs per expert")
    experts.add_argument("--snapshot-iterations", type=int, default=None, help="iterations between snapshots (default: the profile's)")
    experts.add_argument("--net", default=None, choices=NET_NAMES)
    experts.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None, help="ZCA-whiten the data (default: the profile's)")
    add_ray_argument(experts)
    _add_common(experts)

    imported = commands.add_parser("import", help="turn a distilled set released by another project into a ddnb artifact")
    imported.add_argument("file", help="{'data','label'} .pt, res_*.pt, or images_best.pt (labels_best.pt beside it)")
    imported.add_argument("--out", required=True, help="where to write the set (.safetensors + .json)")
    imported.add_argument("--experiment", type=int, default=0, help="which experiment of a res_*.pt list")
    imported.add_argument("--zca", action="store_true", help="the set is ZCA-whitened (MTT with --zca)")
    _add_common(imported)

    book = commands.add_parser("book", help="execute the notebooks for a profile and build the HTML book")
    book.add_argument("--profile", default="quick", choices=list(PROFILES))
    book.add_argument("--root", default=".", help="the checkout holding _config.yml and _toc.yml")
    book.add_argument("--methods", nargs="*", default=None, choices=METHODS, metavar="METHOD",
                      help=f"whose sets are made and analysed (default all: {' '.join(METHODS)})")
    book.add_argument("--set", action="append", default=[], dest="extra_sets", metavar="PATH",
                      help="your own distilled set (from ddnb distill or ddnb import), analysed beside the methods "
                           "in every section (repeatable)")
    add_ray_argument(book)
    _add_common(book, data_required=False)

    store = commands.add_parser("store", help="work with the artifact store")
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    added = store_commands.add_parser("add", help="put artifact files made elsewhere (e.g. distilled sets kept in a repository) "
                                                  "into the store under their own key, so that they are not made again")
    added.add_argument("files", nargs="+", metavar="FILE", help="ddnb artifacts (.safetensors with their .json sidecar)")
    added.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")
    listed = store_commands.add_parser("list", help="what the store holds, by kind: artifacts, size, the time they took "
                                                    "to make, and how many are stale (made by an older ddnb)")
    pruned = store_commands.add_parser("prune", help="delete the stale artifacts (made by an older version of their kind: "
                                                     "they would be made again, never used)")
    for command in (listed, pruned):
        command.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")
    return parser


def _load_data(args: argparse.Namespace, **config: object):
    from ddnb.data import DataConfig, load_dataset
    from ddnb.store import Store
    from ddnb.train import resolve_device

    return load_dataset(DataConfig(args.data, **config), Store(args.store), resolve_device(args.device))


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (numbers, booleans and null parsed as JSON)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DdnbError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def cmd_distill(args: argparse.Namespace) -> None:
    from ddnb.distill import LoopConfig, Preset, distill, preset
    from ddnb.store import Store

    options = parse_options(args.option)
    if args.method == "random":
        settings = Preset(0, None, bool(args.zca))
    else:
        settings = preset(args.method, args.profile, args.ipc)
        options = {**dataclasses.asdict(settings.options), **options}
    dataset = _load_data(args, zca=settings.zca if args.zca is None else args.zca)
    loop = LoopConfig(steps=args.steps or settings.steps, checkpoint_every=args.checkpoint_every)
    result = distill(args.method, dataset, ipc=args.ipc, seed=args.seed, loop=loop, init=args.init,
                     store=Store(args.store), **options)
    print(result.save(args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ddnb.distill import Distilled
    from ddnb.train import EvalConfig, run

    if args.seeds < 1:
        raise DdnbError("--seeds must be at least 1")
    distilled = Distilled.load(args.path)
    dataset = _load_data(args, zca=bool(distilled.config.get("data", {}).get("zca", False)))  # the set's own input space
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


def cmd_experts(args: argparse.Namespace) -> None:
    from ddnb.distill import preset
    from ddnb.distill.experts import expert_trajectories
    from ddnb.jobs import get_runner
    from ddnb.store import Store

    settings = preset("mtt", args.profile)
    config = dataclasses.replace(settings.options.expert_config(), **{
        key: value for key, value in (("net", args.net), ("epochs", args.epochs), ("snapshot_iterations", args.snapshot_iterations))
        if value is not None})
    count = settings.options.experts if args.count is None else args.count
    if count < 1 or config.epochs < 1:
        raise DdnbError("--count and --epochs must be at least 1")
    runner = get_runner(args.ray)  # before the data: a missing Ray or cluster fails fast
    dataset = _load_data(args, zca=settings.zca if args.zca is None else args.zca)
    trajectories = expert_trajectories(dataset, config, count, Store(args.store), runner=runner)
    print(f"{len(trajectories)} experts in {Store(args.store).root / 'expert'}")


def cmd_import(args: argparse.Namespace) -> None:
    from ddnb.distill.imports import import_set

    dataset = _load_data(args, zca=args.zca)
    distilled = import_set(args.file, dataset.transform, dataset.classes, args.experiment)
    if distilled.images.shape[1:] != dataset.train.images.shape[1:]:
        raise DdnbError(f"{args.file} holds images {tuple(distilled.images.shape[1:])}, not {args.data}'s {dataset.image_shape}")
    distilled.config["data"] = dataset.source
    print(distilled.save(args.out))


def cost_summary(rows: list[dict], since: str) -> str:
    """Where a build's time went: the wall seconds of the artifacts made since ``since`` (UTC, as the store's
    ``created``), by kind, costliest first; ``rows`` from ``Store.costs``. Empty when nothing was made."""
    from ddnb.store import total_costs

    totals = total_costs([row for row in rows if row["created"] >= since], lambda row: row["kind"])
    if not totals:
        return ""
    lines = ["made by this command (wall time; a piece made inside another counts in both):"]
    lines += [f"  {kind:<14} {total['count']:>5} made in {total['wall_s'] / 60:7.1f} min" for kind, total in
              sorted(totals.items(), key=lambda item: -item[1]["wall_s"])]
    return "\n".join(lines)


def cmd_book(args: argparse.Namespace) -> None:
    from ddnb.book import BOOK_METHODS, build_book
    from ddnb.profiles import get_profile
    from ddnb.store import Store

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    methods = BOOK_METHODS if args.methods is None else args.methods
    index = build_book(get_profile(args.profile, args.data), Path(args.root), args.device, args.store, args.ray, methods,
                       args.extra_sets)
    print(index)
    summary = cost_summary(Store(args.store).costs(), started)
    if summary:
        print(summary, file=sys.stderr)


def store_table(rows: list[dict], root: Path) -> str:
    """``Store.listing`` rows summed by kind, as a text table (sizes in MB, making time in minutes)."""
    if not rows:
        return f"{root}: empty"
    lines = [f"{root}:", f"  {'kind':<20} {'artifacts':>9} {'MB':>9} {'made in (min)':>14} {'stale':>6}"]
    for kind in sorted({row["kind"] for row in rows}):
        of_kind = [row for row in rows if row["kind"] == kind]
        lines.append(f"  {kind:<20} {len(of_kind):>9} {sum(row['bytes'] for row in of_kind) / 1e6:>9.1f} "
                     f"{sum(row['wall_s'] for row in of_kind) / 60:>14.1f} {sum(row['stale'] for row in of_kind):>6}")
    return "\n".join(lines)


def cmd_store(args: argparse.Namespace) -> None:
    from ddnb.store import Store

    store = Store(args.store)
    if args.store_command == "list":
        print(store_table(store.listing(), store.root))
        return
    if args.store_command == "prune":
        removed = store.prune()
        print(f"removed {len(removed)} stale artifacts from {store.root}")
        return
    refused = []
    for path in args.files:  # one refused file does not stop the others
        try:
            print(f"{path} -> {store.add(path)}")
        except DdnbError as error:
            print(f"ddnb: not added: {error}", file=sys.stderr)
            refused.append(path)
    if refused:
        raise DdnbError(f"{len(refused)} of {len(args.files)} files not added (see above)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddnb`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handlers = {"distill": cmd_distill, "evaluate": cmd_evaluate, "experts": cmd_experts, "import": cmd_import, "book": cmd_book,
                "store": cmd_store}
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
