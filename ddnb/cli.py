"""``ddnb`` command line: parses flags into the library's config dataclasses and calls it.

Bad input exits with status 2 and one line ``ddnb: error: REASON`` (no traceback) that names the argument and
what it accepts: argparse's own errors too (``_Parser``), values checked where they are owned (the config
dataclasses, ``Store``, the data sources) and named by the argument they came from (``_argument``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NoReturn

from ddnb import __version__
from ddnb.errors import DdnbError, WriteError, first_line

LARGEST = 2**31 - 1  # a larger count or seed would overflow inside PyTorch, or run for years


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``ddnb: error:`` line (``DdnbError``), like every other bad input,
    instead of its usage text and a line of its own."""

    def error(self, message: str) -> NoReturn:
        raise DdnbError(f"{message} (see {self.prog} --help)")


def whole_number(minimum: int, maximum: int = LARGEST) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a whole number from {minimum} to {maximum}, got {text!r}")
        return value

    return parse


@contextlib.contextmanager
def _argument(name: str) -> Iterator[None]:
    """Put ``argument NAME:`` before a ``DdnbError`` raised inside: the value given to ``name`` is what is wrong.
    A failed write (``WriteError``) is about the place written to, and passes as it is."""
    try:
        yield
    except WriteError:
        raise
    except DdnbError as error:
        raise DdnbError(f"argument {name}: {error}") from None


def _add_common(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    from ddnb.kernels import KERNELS

    if data_required:
        parser.add_argument("--data", required=True, help="shapes, cifar10 or imagefolder:PATH (folder or .tar)")
    else:  # the book: the profile's data unless told otherwise
        parser.add_argument("--data", default=os.environ.get("DDNB_DATA"),
                            help="shapes, cifar10 or imagefolder:PATH (default $DDNB_DATA, else the profile's data)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--kernels", default=None, choices=KERNELS,
                        help="how training steps launch their kernels: eager (as written), compile (torch.compile; about "
                             "1.3x faster on a CPU) or graphs (compiled and replayed as CUDA graphs); the same results "
                             "to float rounding (default $DDNB_KERNELS, else eager)")
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
    from ddnb.precision import PRECISIONS
    from ddnb.train import PROTOCOLS

    parser = _Parser(prog="ddnb", description="Dataset distillation, analysed: the executable edition of "
                                     "'What is Dataset Distillation Learning?' (ICML 2024).")
    parser.add_argument("--version", action="version", version=f"ddnb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    distill = commands.add_parser("distill", help="make a distilled set (or the random real baseline)")
    distill.add_argument("--method", required=True, choices=METHODS)
    distill.add_argument("--ipc", type=whole_number(1), default=10, help="images per class")
    distill.add_argument("--seed", type=whole_number(0), default=0)
    distill.add_argument("--profile", default="paper", choices=list(PROFILES),
                         help="the method's settings: reduced presets, or paper (the published CIFAR-10 settings)")
    distill.add_argument("--steps", type=whole_number(1), default=None, help="distillation steps (default: the profile's; ignored by random)")
    distill.add_argument("--init", default="real", choices=["real", "noise"], help="start from real images or noise")
    distill.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="override a method option, e.g. --option real_per_class=64 (repeatable)")
    distill.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None,
                         help="ZCA-whiten the data first (default: the profile's; MTT and BPTT use it on CIFAR-10)")
    distill.add_argument("--checkpoint-every", type=whole_number(0), default=50, help="steps between resumable checkpoints (0: none)")
    distill.add_argument("--precision", default="fp32", choices=PRECISIONS,
                         help="fp32, tf32 (CUDA matrix units) or bf16 autocast for every step (ddnb.precision)")
    distill.add_argument("--out", required=True, help="where to write the set (.safetensors + .json)")
    _add_common(distill)

    evaluate = commands.add_parser("evaluate", help="train fresh networks on a distilled set and report test accuracy")
    evaluate.add_argument("path", help="a distilled set written by `ddnb distill` or `ddnb import`")
    evaluate.add_argument("--protocol", default="paper300", choices=sorted(PROTOCOLS))
    evaluate.add_argument("--net", default=None, choices=NET_NAMES, help="default: the profile's, else convnet")
    evaluate.add_argument("--seeds", type=whole_number(1), default=3, help="number of networks (seeds 0..N-1)")
    evaluate.add_argument("--profile", default=None, choices=list(PROFILES),
                          help="evaluate as this profile's book does: its data (unless --data) and network")
    evaluate.add_argument("--json", action="store_true", help='print {"mean", "std", "accs"} as JSON')
    evaluate.add_argument("--precision", default="fp32", choices=PRECISIONS,
                          help="fp32, tf32 (CUDA matrix units) or bf16 autocast for the trainings (ddnb.precision)")
    _add_common(evaluate, data_required=False)

    experts = commands.add_parser("experts", help="train expert trajectories for trajectory matching (resumable)")
    experts.add_argument("--profile", default="paper", choices=list(PROFILES),
                         help="take the experts that MTT's settings for this profile use (the flags below override)")
    experts.add_argument("--count", type=whole_number(1), default=None, help="number of experts")
    experts.add_argument("--epochs", type=whole_number(1), default=None, help="epochs per expert")
    experts.add_argument("--snapshot-iterations", type=whole_number(1), default=None, help="iterations between snapshots (default: the profile's)")
    experts.add_argument("--net", default=None, choices=NET_NAMES)
    experts.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None, help="ZCA-whiten the data (default: the profile's)")
    add_ray_argument(experts)
    _add_common(experts)

    imported = commands.add_parser("import", help="turn a distilled set released by another project into a ddnb artifact")
    imported.add_argument("file", help="{'data','label'} .pt, res_*.pt, or images_best.pt (labels_best.pt beside it)")
    imported.add_argument("--out", required=True, help="where to write the set (.safetensors + .json)")
    imported.add_argument("--experiment", type=whole_number(0), default=0, help="which experiment of a res_*.pt list")
    imported.add_argument("--zca", action="store_true", help="the set is ZCA-whitened (MTT with --zca)")
    _add_common(imported)

    searched = commands.add_parser("search", help="distil each candidate setting of a method for a profile and score it on "
                                                   "held-out training images (never the test split)")
    searched.add_argument("--method", required=True, choices=[m for m in METHODS if m != "random"])
    searched.add_argument("--profile", default="cifar10-cpu", choices=list(PROFILES))
    searched.add_argument("--validation", type=whole_number(1), default=None, metavar="N",
                          help="training images per class held out to score on (default: the profile's)")
    searched.add_argument("--out", default=None, help="also write the table as JSON here")
    add_ray_argument(searched)
    _add_common(searched, data_required=False)

    run = commands.add_parser("run", help="make every missing result of a profile's book (sets, pools, models, analyses)")
    book = commands.add_parser("book", help="`ddnb run`, then execute the notebooks and build the HTML book")
    for command in (run, book):
        command.add_argument("--profile", default="quick", choices=list(PROFILES))
        command.add_argument("--methods", nargs="*", default=None, choices=METHODS, metavar="METHOD",
                             help=f"whose sets are made and analysed (default all: {' '.join(METHODS)})")
        command.add_argument("--set", action="append", default=[], dest="extra_sets", metavar="[NAME=]PATH",
                             help="your own distilled set (from ddnb distill or ddnb import, or a released .pt file), "
                                  "analysed beside the methods in every section under NAME (default: its file name); "
                                  "a NAME that is a method replaces that method's set, e.g. bptt=DD_data/0.pt (repeatable)")
        add_ray_argument(command)
        _add_common(command, data_required=False)
    run.add_argument("--only", nargs="+", default=None, metavar="PAGE",
                     help="only these pages' results: findings (all of the next three), distillation, substitution, dynamics, semantics")
    book.add_argument("--root", default=".", help="the checkout holding _config.yml and _toc.yml")
    book.add_argument("--no-compute", action="store_true",
                      help="build from the store alone: exit 2 naming the results that are missing")

    store = commands.add_parser("store", help="work with the artifact store")
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    added = store_commands.add_parser("add", help="put artifact files made elsewhere (e.g. distilled sets kept in a repository) "
                                                  "into the store under their own key, so that they are not made again")
    added.add_argument("files", nargs="+", metavar="FILE", help="ddnb artifacts (.safetensors with their .json sidecar)")
    added.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")
    listed = store_commands.add_parser("list", help="what the store holds, by kind: artifacts, size, the time they took "
                                                    "to make, and how many are corrupt (made again when asked for) or stale (made by an older ddnb)")
    listed.add_argument("--costs", action="store_true", help="minutes of wall and CPU time by kind of job, costliest first")
    exported = store_commands.add_parser("export", help="copy every result a profile's book loads, with sidecars, into a folder "
                                                        "(for `ddnb store add` elsewhere; not the model pools and networks "
                                                        "they were made from, unless --partial)")
    exported.add_argument("folder", help="where to copy them (created)")
    exported.add_argument("--profile", default="quick", choices=list(PROFILES))
    exported.add_argument("--data", default=os.environ.get("DDNB_DATA"), help="the data set (default $DDNB_DATA, else the profile's)")
    exported.add_argument("--partial", action="store_true",
                          help="copy the results made so far when some are missing, and the networks, pools and checkpoints "
                               "the missing ones resume from (a book that grows across sessions)")
    exported.add_argument("--methods", nargs="*", default=None, choices=METHODS, metavar="METHOD",
                          help=f"whose sets (default all: {' '.join(METHODS)})")
    pruned = store_commands.add_parser("prune", help="delete the stale artifacts (made by an older version of their kind) "
                                                     "and the corrupt ones: they would be made again, never used")
    for command in (listed, pruned, exported):
        command.add_argument("--store", default=None, help="artifact and cache folder (default $DDNB_STORE or ~/.cache/ddnb)")
    return parser


def _store(args: argparse.Namespace):
    """The store of ``--store`` (default ``$DDNB_STORE``), checked to be a folder."""
    from ddnb.store import Store

    with _argument("--store"):
        return Store(args.store)


def _load_data(args: argparse.Namespace, data=None, **config: object):
    """The data set of ``--data`` (or the config ``data``, e.g. a profile's) with ``config`` fields replaced."""
    from ddnb.data import DataConfig, load_dataset
    from ddnb.train import resolve_device

    store = _store(args)
    with _argument("--device"):
        device = resolve_device(args.device)
    with _argument("--data"):
        return load_dataset(dataclasses.replace(data or DataConfig(args.data), **config), store, device)


def _check_output(path: str) -> None:
    from ddnb.store import check_writable

    with _argument("--out"):
        check_writable(path)


def _check_fits(distilled, dataset, path: str) -> None:
    """Refuse a set whose images or classes are not those of ``dataset``: it would train on one data set and be
    tested on another."""
    if tuple(distilled.images.shape[1:]) != tuple(dataset.image_shape):
        raise DdnbError(f"argument --data: {path} holds images {tuple(distilled.images.shape[1:])}, not the "
                        f"{tuple(dataset.image_shape)} of {dataset.name}; give the data set it was made on")
    classes = distilled.meta.get("classes", dataset.classes)
    if classes != dataset.classes:
        raise DdnbError(f"argument --data: {path} was made on classes {_few(classes)}, not {dataset.name}'s "
                        f"{_few(dataset.classes)}; give the data set it was made on")


def _few(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _check_ipc(args: argparse.Namespace, dataset) -> None:
    """Real images per class cannot exceed the smallest class (noise can be any number)."""
    smallest = int(dataset.train.labels.bincount(minlength=dataset.num_classes).min())
    if (args.method == "random" or args.init == "real") and args.ipc > smallest:
        raise DdnbError(f"argument --ipc: must be at most {smallest} for {dataset.name} (its smallest class has "
                        f"{smallest} training images), got {args.ipc}")


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (numbers, booleans and null parsed as JSON)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DdnbError(f"takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            try:
                options[key] = float(value)  # nan, inf: parsed, so that the options refuse them by name
            except ValueError:
                options[key] = value
    return options


def cmd_distill(args: argparse.Namespace) -> None:
    from ddnb.distill import LoopConfig, Preset, distill, method_options, preset

    store = _store(args)
    with _argument("--option"):  # every value is checked before the data loads
        options = parse_options(args.option)
        if args.method == "random":
            settings = Preset(0, None, bool(args.zca))
            if options:
                raise DdnbError(f"random takes no options, got {', '.join(options)}")
        else:
            settings = preset(args.method, args.profile, args.ipc)
            options = {**dataclasses.asdict(settings.options), **options}
            method_options(args.method, options)
    _check_output(args.out)
    loop = LoopConfig(steps=settings.steps if args.steps is None else args.steps, checkpoint_every=args.checkpoint_every,
                      precision=args.precision)
    dataset = _load_data(args, zca=settings.zca if args.zca is None else args.zca)
    _check_ipc(args, dataset)
    result = distill(args.method, dataset, ipc=args.ipc, seed=args.seed, loop=loop, init=args.init, store=store, **options)
    print(result.save(args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ddnb.analysis.substitution import evaluate_set
    from ddnb.distill import Distilled
    from ddnb.profiles import get_profile
    from ddnb.train import EvalConfig

    if args.profile is None and args.data is None:
        raise DdnbError("--data is required without --profile (shapes, cifar10 or imagefolder:PATH)")
    profile = get_profile(args.profile, args.data) if args.profile else None
    distilled = Distilled.load(args.path)
    zca = bool(distilled.config.get("data", {}).get("zca", False))  # the set's own input space
    dataset = _load_data(args, profile.data if profile else None, zca=zca)
    _check_fits(distilled, dataset, args.path)
    net = args.net or (profile.evaluation.net if profile else "convnet")
    config = EvalConfig(args.protocol, net, tuple(range(args.seeds)), precision=args.precision)
    accuracies = evaluate_set(distilled.images, distilled.labels, dataset, config).accuracies  # the book's evaluator
    mean, std = float(accuracies.mean()), float(accuracies.std()) if args.seeds > 1 else 0.0
    if args.json:
        print(json.dumps({"mean": mean, "std": std, "accs": accuracies.tolist()}))
    else:
        print(f"{args.protocol} test accuracy over {args.seeds} seeds: {mean:.4f} ± {std:.4f}")


def cmd_experts(args: argparse.Namespace) -> None:
    from ddnb.distill import preset
    from ddnb.distill.experts import expert_trajectories
    from ddnb.jobs import get_runner

    store = _store(args)
    settings = preset("mtt", args.profile)
    config = dataclasses.replace(settings.options.expert_config(), **{
        key: value for key, value in (("net", args.net), ("epochs", args.epochs), ("snapshot_iterations", args.snapshot_iterations))
        if value is not None})
    count = settings.options.experts if args.count is None else args.count
    with _argument("--ray"):
        runner = get_runner(args.ray)  # before the data: a missing Ray or cluster fails fast
    dataset = _load_data(args, zca=settings.zca if args.zca is None else args.zca)
    trajectories = expert_trajectories(dataset, config, count, store, runner=runner)
    print(f"{len(trajectories)} experts in {store.root / 'expert'}")


def cmd_import(args: argparse.Namespace) -> None:
    from ddnb.distill.imports import import_set

    _check_output(args.out)
    dataset = _load_data(args, zca=args.zca)
    distilled = import_set(args.file, dataset.transform, dataset.classes, args.experiment)
    _check_fits(distilled, dataset, args.file)
    distilled.config["data"] = dataset.source
    print(distilled.save(args.out))


def cost_summary(rows: list[dict], since: str) -> str:
    """Where a build's time went: ``cost_table`` of the artifacts made since ``since`` (UTC, as the store's
    ``created``); empty when nothing was made."""
    made = [row for row in rows if row["created"] >= since]
    if not made:
        return ""
    return "made by this command (a piece made inside another counts in both):\n" + cost_table(made)


def _check_data_name(args: argparse.Namespace) -> None:
    """A wrong ``--data`` name or path fails now, not after the sets are made."""
    from ddnb.data import DataConfig

    if args.data is not None:
        with _argument("--data"):
            DataConfig(args.data).source()


def cmd_run(args: argparse.Namespace) -> None:
    from ddnb.jobs import get_runner
    from ddnb.sections import BOOK_METHODS, report_table, run_profile

    store = _store(args)
    _check_data_name(args)
    methods = BOOK_METHODS if args.methods is None else args.methods
    with _argument("--ray"):
        runner = get_runner(args.ray)
    with _argument("--only"):
        reports = run_profile(args.profile, args.data, None, methods, 0, args.device, store, args.extra_sets, runner, args.only)
    print(report_table(reports))


def cmd_search(args: argparse.Namespace) -> None:
    from ddnb.jobs import get_runner
    from ddnb.data import load_dataset
    from ddnb.search import search, search_table, validation_data
    from ddnb.train import resolve_device

    store = _store(args)
    _check_data_name(args)
    if args.out is not None:
        _check_output(args.out)
    with _argument("--device"):
        device = resolve_device(args.device)
    with _argument("--validation"):
        config = validation_data(args.profile, args.data, args.validation)
    _load_data(args, dataclasses.replace(config, validation_per_class=None))  # a bad --data fails as such
    with _argument("--validation"):  # then holding out more images than a class has
        load_dataset(config, store, device)
    with _argument("--ray"):
        runner = get_runner(args.ray)
    results = search(args.method, args.profile, args.data, args.validation, store=store, device=device, runner=runner)
    print(search_table(results))
    if args.out is not None:
        Path(args.out).write_text(json.dumps({"method": args.method, "profile": args.profile, "data": args.data,
                                              "validation_per_class": config.validation_per_class,
                                              "candidates": [result.as_row() for result in results]}, indent=1) + "\n")


def cmd_book(args: argparse.Namespace) -> None:
    from ddnb.book import BOOK_METHODS, build_book
    from ddnb.profiles import get_profile

    store = _store(args)
    _check_data_name(args)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    methods = BOOK_METHODS if args.methods is None else args.methods
    index = build_book(get_profile(args.profile, args.data), Path(args.root), args.device, args.store, args.ray, methods,
                       args.extra_sets, compute=not args.no_compute)
    print(index)
    summary = cost_summary(store.costs(), started)
    if summary:
        print(summary, file=sys.stderr)


def store_table(rows: list[dict], root: Path) -> str:
    """``Store.listing`` rows summed by kind, as a text table (sizes in MB, making time in minutes)."""
    if not rows:
        return f"{root}: empty"
    lines = [f"{root}:", f"  {'kind':<20} {'artifacts':>9} {'MB':>9} {'made in (min)':>14} {'corrupt':>8} {'stale':>6}"]
    for kind in sorted({row["kind"] for row in rows}):
        of_kind = [row for row in rows if row["kind"] == kind]
        lines.append(f"  {kind:<20} {len(of_kind):>9} {sum(row['bytes'] for row in of_kind) / 1e6:>9.1f} "
                     f"{sum(row['wall_s'] for row in of_kind) / 60:>14.1f} {sum(row['corrupt'] for row in of_kind):>8} "
                     f"{sum(row['stale'] for row in of_kind):>6}")
    return "\n".join(lines)


def cost_table(rows: list[dict]) -> str:
    """``Store.costs`` rows summed by kind of job, costliest first (minutes of wall and CPU time)."""
    from ddnb.store import total_costs

    totals = sorted(total_costs(rows, lambda row: row["kind"]).items(), key=lambda item: -item[1]["wall_s"])
    lines = [f"  {'kind':<20} {'made':>6} {'wall (min)':>11} {'CPU (min)':>10}"]
    lines += [f"  {kind:<20} {total['count']:>6} {total['wall_s'] / 60:>11.1f} {total['cpu_s'] / 60:>10.1f}" for kind, total in totals]
    return "\n".join(lines)


def cmd_store(args: argparse.Namespace) -> None:
    store = _store(args)
    if args.store_command == "list":
        print(cost_table(store.costs()) if args.costs else store_table(store.listing(), store.root))
        return
    if args.store_command == "export":
        from ddnb.sections import BOOK_METHODS, KEEP_INPUT_MAX_MB, export, open_inputs

        methods = BOOK_METHODS if args.methods is None else args.methods
        done = export(open_inputs(args.profile, args.data, None, methods, store=store), args.folder, args.partial)
        print(f"{len(done.results)} results of profile {args.profile} copied to {args.folder}"
              + (f"; {len(done.missing)} not made yet ({', '.join(sorted({job.kind for job in done.missing}))}), so no findings.json"
                 if done.missing else ""))
        if done.inputs or done.too_large:
            print(f"{len(done.inputs)} inputs they resume from copied beside them"
                  + (f"; not copied, over {KEEP_INPUT_MAX_MB} MB (made again from the start): "
                     + ", ".join(str(path) for path in done.too_large) if done.too_large else ""))
        return
    if args.store_command == "prune":
        removed = store.prune()
        print(f"removed {len(removed)} stale or corrupt artifacts from {store.root}")
        return
    refused = []
    for path in args.files:  # one refused file does not stop the others
        try:
            print(f"{path} -> {store.add(path)}")
        except DdnbError as error:
            if len(args.files) == 1:
                raise  # the one line
            print(f"ddnb: not added: {error}", file=sys.stderr)
            refused.append(path)
    if refused:
        raise DdnbError(f"{len(refused)} of {len(args.files)} files not added (see above)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddnb`` console script; returns the exit status."""
    from ddnb.kernels import current_kernels, kernels

    handlers = {"distill": cmd_distill, "evaluate": cmd_evaluate, "experts": cmd_experts, "import": cmd_import, "book": cmd_book,
                "run": cmd_run, "search": cmd_search, "store": cmd_store}
    try:
        args = build_parser().parse_args(argv)
        with kernels(getattr(args, "kernels", None) or current_kernels()):
            handlers[args.command](args)
    except DdnbError as error:
        print(f"ddnb: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file system fault no check foresaw (permissions, a full disk): one line too
        where = f"{error.filename}: " if error.filename else ""
        print(f"ddnb: error: {where}{error.strerror or first_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddnb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
