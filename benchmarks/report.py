"""Rewrite the tables of benchmarks/README.md (from results/*.json) and the status table of README.md (from the
cifar10-cpu book's export, sets/cifar10-cpu/findings.json), so that no number in them is typed by hand.

    python benchmarks/report.py            # rewrite them
    python benchmarks/report.py --check    # exit 1 naming the tables that differ (tests/test_benchmarks_report.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
from pathlib import Path

from ddnb.paper import ACCURACY_PAPER300, METHOD_NAMES
from ddnb.store import total_costs

HERE = Path(__file__).parent


def _load(name: str) -> dict | None:
    path = HERE / "results" / name
    return json.loads(path.read_text()) if path.exists() else None


def foundation_table() -> str:
    rows = ["| data | check | ours | paper or target | seconds | device |", "|---|---|---|---|---|---|"]
    for name in ("foundation-cifar10.json", "foundation-shapes.json"):
        report = _load(name)
        if report is None:
            continue
        if "random_paper300" in report:
            r = report["random_paper300"]
            accs = ", ".join(f"{a:.3f}" for a in r["accs"])
            rows.append(f"| {report['data']} | {r['ipc']} random real / class, paper300, {len(r['accs'])} seeds "
                        f"| {r['mean']:.3f} ± {r['std']:.3f} ({accs}) | {r['paper']} | {r['seconds']:.0f} | {report['device']} |")
        if "real_one_epoch" in report:
            r = report["real_one_epoch"]
            rows.append(f"| {report['data']} | ConvNet, 1 epoch of `real` ({r['iterations']} iterations) | {r['accuracy']:.3f} "
                        f"| {r['paper']} | {r['seconds']:.0f} ({r['seconds_per_iteration']:.2f}/it) | {report['device']} |")
    return "\n".join(rows)


def speed_table() -> str:
    rows = ["| device | method | s/step | GFLOP/step | GFLOP/s | fraction of training throughput | peak memory (MB; GPU: allocated, CPU: process RSS) |",
            "|---|---|---|---|---|---|---|"]
    for name in ("distill-speed-cpu.json", "distill-speed-cuda.json"):
        report = _load(name)
        if report is None:
            continue
        reference = report["training_step"]
        rows.append(f"| {report['device']} | plain training step (batch 256) | {reference['seconds']:.4g} | "
                    f"{reference['flops'] / 1e9:.1f} | {reference['flops_per_second'] / 1e9:.1f} | 1.00 | |")
        for method, r in report["methods"].items():
            rows.append(f"| {report['device']} | {method} | {r['seconds']:.4g} | {r['flops'] / 1e9:.1f} | "
                        f"{r['flops_per_second'] / 1e9:.1f} | {r['fraction_of_training_throughput']:.2f} | "
                        f"{r['peak_memory_bytes'] / 2**20:.0f} |")
    return "\n".join(rows)


def influence_table() -> str:
    rows = ["| device | net | kernels | steps timed | batched s/model-step | one-by-one s/model-step | speed-up | ceiling (one net, chunk x batch) "
            "| GFLOP/s one by one | 101 x 300 (batched / one-by-one, extrapolated) | threads |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("influence-speed-cpu.json", "influence-kernels-cpu.json", "influence-speed-cuda.json"):
        report = _load(name)
        for net, r in (report or {}).get("nets", {}).items():
            sequential, ceiling = r["sequential"], r.get("batch_ceiling")
            bound = f"{ceiling['ceiling']:.2f}" if ceiling else "-"
            gflops = f"{ceiling['gflops_at_n']:.0f}" if ceiling else "-"
            by_kernels = r.get("batched_by_kernels") or {"eager": r["batched"] | {"speedup": r["speedup"]}}
            for kernels, batched in by_kernels.items():
                rows.append(f"| {report['device']} | {net} | {kernels} | {r['steps']} | {batched['seconds_per_model_step']:.3g} | "
                            f"{sequential['seconds_per_model_step']:.3g} | {batched['speedup']:.2f} | {bound} | {gflops} | "
                            f"{batched['extrapolated_101x300_seconds'] / 60:.0f} / {sequential['extrapolated_101x300_seconds'] / 60:.0f} min | "
                            f"{report['threads']} |")
    return "\n".join(rows)


def kernels_table() -> str:
    """``ddnb.train.train`` with each kernels setting (``kernels_speed.py``)."""
    rows = ["| device | net | workload | kernels | first run (s, compiling included) | s/step | speed-up | max parameter difference |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("kernels-speed-cpu.json", "kernels-speed-cuda.json"):
        report = _load(name)
        for workload, settings in (report or {}).get("workloads", {}).items():
            for setting, r in settings.items():
                rows.append(f"| {report['device']} | {report['net']} | {workload} | {setting} | {r['first_run_seconds']:.1f} | "
                            f"{r['seconds_per_step']:.3g} | {r['speedup']:.2f}x | {r['max_parameter_difference']:.1e} |")
    return "\n".join(rows)


def stacked_table() -> str:
    rows = ["| device | net | workload | networks | iterations | one-by-one s/net | stacked s/net | speed-up | max parameter difference |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in ("stacked-speed-cpu.json", "stacked-speed-cuda.json"):
        report = _load(name)
        for r in (report or {}).get("results", []):
            rows.append(f"| {report['device']} | {r['net']} | {r['workload']} | {r['networks']} | {r['iterations']} | "
                        f"{r['sequential_s_per_net']:.2f} | {r['stacked_s_per_net']:.2f} | {r['speedup']:.2f} | {r['max_param_difference']:.1e} |")
    return "\n".join(rows)


def memory_table() -> str:
    rows = ["| method | malloc | s/step | kernel CPU s | minor page faults | peak RSS (GB) | speed-up |", "|---|---|---|---|---|---|---|"]
    report = _load("memory-reuse-cpu.json") or {}
    for method, variants in report.items():
        for variant, r in variants.items():
            if variant == "speed_up":
                continue
            speed_up = f"{variants['speed_up']:.2f}x" if variant == "freed memory kept" else ""
            rows.append(f"| {method} | {variant} | {r['seconds_per_step']:.2f} | {r['system_seconds']:.1f} | "
                        f"{r['minor_page_faults']:,} | {r['peak_resident_bytes'] / 1e9:.2f} | {speed_up} |")
    return "\n".join(rows)


def cifar10_table() -> str:
    rows = ["| method | steps | paper300 accuracy, 3 seeds | gain over random (target) | random in the set's ZCA space "
            "| distillation wall time (budget 60 min each) | s/step at start / median |", "|---|---|---|---|---|---|---|"]
    for path in sorted((HERE / "results").glob("cifar10-cpu-*.json")):
        report = json.loads(path.read_text())
        for r in report["sets"]:
            e, seconds = r["evaluation"], r.get("distill_seconds")
            experts = "" if r.get("experts_seconds") is None else f" + experts {r['experts_seconds'] / 60:.0f} min"
            wall = "" if seconds is None else f"{seconds / 60:.0f} min{experts} ({'within' if r['meets_time_budget'] else 'over'})"
            rates = "" if r.get("seconds_per_step_first_20") is None else f"{r['seconds_per_step_first_20']:.2f} / {r['seconds_per_step_median']:.2f}"
            same = r.get("random_same_space")
            same = "" if same is None else f"{same['mean']:.3f} ± {same['std']:.3f} (gain {e['mean'] - same['mean']:+.3f})"
            rows.append(f"| {r['method']} | {r['steps']} | {e['mean']:.3f} ± {e['std']:.3f} | {r['gain_over_random']:+.3f} "
                        f"(+{r['target_gain']}, {'met' if r['meets_accuracy_target'] else 'not met'}) | {same} | {wall} | {rates} |")
    return "\n".join(rows)


def bptt_search_table(name: str) -> str:
    """One row per setting of a ``bptt_search.py`` screen, the start and (where scored) random real images first."""
    report = _load(name) or {"configs": {}}
    rows = ["| setting | inner loop (lr) | window / unroll | image lr | steps | s/step | accuracy |", "|---|---|---|---|---|---|---|"]
    for label, key in (("the starting real images", "init_accuracy"), ("random real images", "random_accuracy")):
        if key in report:
            rows.append(f"| {label} | | | | | | {report[key]:.3f} |")
    for setting, r in report["configs"].items():
        options = r["options"]
        inner = f"{options.get('inner_optimizer', 'adam')} ({options.get('inner_lr', 0.001):g})"
        if options.get("augment", True):
            inner += ", flip + rotate"
        rows.append(f"| {setting} | {inner} | {options['window']} / {options['unroll']} | {options['lr_images']:g} | "
                    f"{r['steps']} | {r['s_per_step']:.2f} | {r['acc']:.3f} |")
    return "\n".join(rows)


def search_table() -> str:
    """One row per candidate of every finished ``ddnb search`` at cifar10-cpu; the candidate that is now the profile's
    preset is marked (the ``chosen`` of a record is the preset when the search ran)."""
    from ddnb.distill import candidates, preset

    rows = ["| method | candidate | steps | validation accuracy (paper300, seeds 0-2) | minutes | the preset now |",
            "|---|---|---|---|---|---|"]
    for path in sorted((HERE / "results").glob("search-cifar10-cpu-*.json")):
        record = json.loads(path.read_text())
        current = preset(record["method"], record["profile"])
        for row in record["candidates"]:
            is_preset = candidates(record["method"], record["profile"]).get(row["name"]) == current
            rows.append(f"| {record['method']} | {row['name']} | {row['steps']} | {row['mean']:.3f} ± {row['std']:.3f} | "
                        f"{row['minutes']:.1f} | {'yes' if is_preset else ''} |")
    return "\n".join(rows)


def curvature_table() -> str:
    rows = ["| device | set | comparison | probes | naive | ours | speed-up |", "|---|---|---|---|---|---|---|"]
    for name in ("curvature-speed-cpu.json", "curvature-speed-cuda.json"):
        report = _load(name)
        if report is None:
            continue
        device, small = report["device"], report.get("distilled_like_100")
        if small is None:  # a run stopped before its second part
            continue
        speed = small["speed"]
        rows.append(f"| {device} | distilled-like, {speed['images']} images | the same probes, the same estimate "
                    f"({speed['ours']['estimate']:.1f} ± {speed['ours']['stderr']:.1f}) | {speed['probes']} | "
                    f"{speed['naive']['seconds']:.1f} s | {speed['ours']['seconds']:.1f} s | {speed['speedup']:.2f}x |")
        rule = small.get("paper_rule")
        if rule is not None:
            stopped = "stopped" if rule["stopped_by_tolerance"] else "did not stop"
            rows.append(f"| {device} | distilled-like, {rule['images']} images | the paper's rule (tol {rule['tol']:g}) {stopped} "
                        f"after {rule['probes_used']} probes, {100 * rule['vs_reference']['relative_error']:+.1f} % off a "
                        f"{rule['reference']['probes']}-probe reference | {rule['probes_used']} | {rule['naive']['seconds']:.1f} s | "
                        f"{rule['ours']['seconds']:.1f} s | {rule['speedup']:.2f}x |")
        real = next((value for key, value in report.items() if key.startswith("real_subsample_")), None)
        if real is None:
            continue
        comparison, full = real["comparison"], real["full"]
        for how in ("sample", "formula"):
            r = comparison[f"by_{how}_std"]
            seconds, interval = r["seconds_to_target"], r.get("speedup_sampled_vs_naive_95")
            interval = "" if interval is None else f" (95 %: {interval[0]:.0f}-{interval[1]:.0f}x)"
            spread = f"the spread of {full['probes']} probes" if how == "sample" else "2(‖H‖²_F − Σ H_ii²)"
            rows.append(f"| {device} | real, {full['images']} images | time to a {100 * comparison['target_rel_stderr']:.0f} % "
                        f"standard error, one probe's spread from {spread}; ours samples a batch of "
                        f"{real['sampled']['sample_size']} per {real['sampled']['probes_per_batch']} probes (ours on all the "
                        f"data: {seconds['ours_full']:,.0f} s) | {r['full_probes_needed']:.0f} full-data | "
                        f"{seconds['naive_full']:,.0f} s | {seconds['sampled']:,.0f} s | {r['speedup_sampled_vs_naive']:.0f}x{interval} |")
    return "\n".join(rows)


def hvp_table() -> str:
    ways = ("graph_reuse", "autograd_is_grads_batched", "func_vmap_vjp_of_grad", "func_vmap_jvp_of_grad")
    rows = ["| device | batch | vectors | " + " | ".join(ways) + " | fastest |", "|---|---|---|" + "---|" * (len(ways) + 1)]
    for name in ("curvature-speed-cpu.json", "curvature-speed-cuda.json"):
        report = _load(name)
        if report is not None:
            hvp = report["hvp_per_product"]
            cells = []
            for way in ways:
                r = hvp[way]
                cell = f"{r['seconds_per_product']:.3f} s" if "seconds_per_product" in r else "fails: " + r["error"].split(chr(10))[0][:80]
                if r.get("variant") not in (None, "is_grads_batched"):
                    cell += f" ({r['variant']}; plain is_grads_batched fails)"
                cells.append(cell)
            rows.append(f"| {report['device']} | {hvp['batch']} | {hvp['vectors']} | " + " | ".join(cells) + f" | {hvp['fastest']} |")
    return "\n".join(rows)


def step_profile_table() -> str:
    """One row per instance-norm candidate of step_profile.py: ms per step, speed-up, equivalence to today's module."""
    rows = ["| device | candidate | ms/step (median) | speed-up vs today's fp32 | logits max diff (same precision / vs fp32) "
            "| gradients max diff (same precision / vs fp32) |", "|---|---|---|---|---|---|"]
    for name in ("step-profile-cpu.json", "step-profile-cuda.json"):
        report = _load(name)
        for label, r in (report or {}).get("candidates", {}).items():
            same, fp32 = r["vs_today_same_precision"], r["vs_fp32"]
            rows.append(f"| {report['device']} | {label} | {r['ms']:.3f} | {r.get('speedup_vs_fp32_today', float('nan')):.2f}x | "
                        f"{same['logits_max_abs']:.1e} / {fp32['logits_max_abs']:.1e} | {same['grads_max_abs']:.1e} / {fp32['grads_max_abs']:.1e} |")
        for label, why in (report or {}).get("failed", {}).items():
            if not label.endswith("(traceback)"):
                rows.append(f"| {report['device']} | {label} | failed: {why.splitlines()[0][:100]} | | | |")
        for label, why in (report or {}).get("skipped", {}).items():
            rows.append(f"| {report['device']} | {label} | skipped: {why} | | | |")
    return "\n".join(rows)


def _kernel_name(name: str) -> str:
    """A CUDA kernel's name without namespaces and template arguments; for a generic elementwise or reduction
    kernel, the functor it runs in brackets."""
    short = name.removeprefix("void ")
    for prefix in ("at::native::", "(anonymous namespace)::", "cudnn::engines_precompiled::"):
        short = short.replace(prefix, "")
    base = re.split(r"[<(]", short, maxsplit=1)[0]
    if base.endswith(("elementwise_kernel", "reduce_kernel")):
        functor = re.search(r"(GroupNorm\w*|CUDAFunctor_\w+|threshold\w*|direct_copy\w*|\w+_functor|\w+Functor\w*)", short)
        base += f" [{functor.group(1)}]" if functor else ""
    return base[:70]


def step_kernels_table() -> str:
    """The kernels that take most of a ConvNet-128 step's device time, per precision (step_profile.py)."""
    rows = ["| device | precision | step ms | kernel (share of the step's kernel time, ms per step) |", "|---|---|---|---|"]
    for name in ("step-profile-cpu.json", "step-profile-cuda.json"):
        report = _load(name)
        for precision, r in (report or {}).get("profile", {}).items():
            top = r.get("top_kernels", r.get("top_ops", []))[:6]
            kernels = "; ".join(f"`{_kernel_name(k['name'])}` {k['share']:.0%} ({k['ms_per_step']:.3f})" for k in top)
            rows.append(f"| {report['device']} | {precision} | {r['step_ms']:.3f} | {kernels} |")
    return "\n".join(rows)


def book_costs_table() -> str:
    """Minutes per piece of each book whose costs were recorded (book_costs.py), summed by kind and name."""
    rows = ["| book | piece | made | minutes (wall) | CPU minutes (all threads) |", "|---|---|---|---|---|"]
    for path in sorted((HERE / "results").glob("book-*-costs.json")):
        book = path.name.removeprefix("book-").removesuffix("-costs.json")
        totals = total_costs(_load(path.name)["artifacts"], lambda row: (row["kind"], row["name"]))
        for (kind, name), total in totals.items():
            rows.append(f"| {book} | {kind} {name} | {total['count']} | {total['wall_s'] / 60:.1f} | {total['cpu_s'] / 60:.1f} |")
    return "\n".join(rows)


def memory_bounds_table() -> str:
    """Each method with and without its memory bound (``distill_speed.py --memory``), one fresh process per variant."""
    settings = {"dm": "256 real/class, ConvNet, IPC 10", "gm": "256 real/class, outer 1, inner 5", "mtt": "20 unrolled steps, 100 images",
                "bptt": "window 20 of 20, real batch 500"}
    rows = ["| device | method | settings | variant | s/step | step memory (GB) | peak (GB; CPU: RSS, GPU: allocated) |",
            "|---|---|---|---|---|---|---|"]
    for name in ("memory-bounds-cpu.json", "memory-bounds-cuda.json"):
        report = _load(name) or {"memory": {}}
        for method, result in report["memory"].items():
            for variant in result["variants"]:
                options = ", ".join(f"{k}={v}" for k, v in variant["options"].items()) or "default (256 images a pass: 1 class)"
                rows.append(f"| {report['device']} | {method} | {settings.get(method, '') if report['device'] == 'cpu' else 'published settings'} | "
                            f"{options} | {variant['seconds']:.2f} | {variant['step_memory_bytes'] / 1e9:.2f} | {variant['peak_memory_bytes'] / 1e9:.2f} |")
            rows.append(f"| {report['device']} | {method} | | bound / no bound | {result['time_ratio']:.2f}x | {result['memory_ratio']:.2f}x | |")
    return "\n".join(rows)


def paper_cost_table() -> str:
    """The paper book's predicted GPU time, job by job (``paper_cost.py``)."""
    spec = importlib.util.spec_from_file_location("paper_cost", HERE / "paper_cost.py")  # the script beside this one
    paper_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper_cost)
    report = _load("paper-cost-h200.json")
    return paper_cost.table(report["rows"], report["device"]) if report else ""


BOOK_EXPORT = HERE / "sets" / "cifar10-cpu"  # `ddnb store export --profile cifar10-cpu` of the whole book


def _book_progress() -> dict | None:
    """The export's ``progress.json`` (``ddnb.sections.export``), or None before the first export."""
    path = BOOK_EXPORT / "progress.json"
    return json.loads(path.read_text()) if path.exists() else None


def book_progress(progress: dict | None) -> str:
    """How much of the ``cifar10-cpu`` book a partial export (``ddnb store export --partial``) holds, by kind,
    from its parsed ``progress.json`` (None before the first export)."""
    if progress is None:
        return "(no export yet)"
    missing = ", ".join(f"{kind} {count}" for kind, count in sorted(progress["missing"].items()))
    return (f"(the book is being made: {progress['results'] - sum(progress['missing'].values())} of {progress['results']} "
            f"results exported; still to make: {missing})")


def _book_summary() -> dict | None:
    """The complete export's ``findings.json`` (``ddnb.sections.summary``), or None while the book is unfinished."""
    path = BOOK_EXPORT / "findings.json"
    return json.loads(path.read_text()) if path.exists() else None


def _sets_table(sets: dict[str, dict]) -> str:
    """Each set's accuracy (``ddnb.sections.set_accuracies``) beside the paper's."""
    rows = ["| set | paper300 accuracy in the analysis space (mean ± std over seeds) | the paper |", "|---|---|---|"]
    for name, result in sets.items():
        reference = ACCURACY_PAPER300.get(name)
        rows.append(f"| {METHOD_NAMES.get(name, name)} | {result['mean']:.3f} ± {result['std']:.3f} ({len(result['accuracies'])} seeds) | "
                    f"{'' if reference is None else f'{reference:.3f}'} |")
    return "\n".join(rows)


def status_table() -> str:
    """The ``cifar10-cpu`` book's headline numbers, from its export's ``findings.json`` (``ddnb.sections.summary``):
    each set's accuracy beside the paper's, and how many findings hold; while the book is unfinished, how far it
    is and, once every set is evaluated, their accuracies (``progress.json``)."""
    summary = _book_summary()
    if summary is None:
        progress = _book_progress()
        sets = (progress or {}).get("sets")
        return book_progress(progress) + ("" if sets is None else "\n\n" + _sets_table(sets))
    verdicts = [row["verdict"] for row in summary["findings"]]
    counts = ", ".join(f"{verdicts.count(verdict)} {verdict}" for verdict in dict.fromkeys(verdicts))
    return _sets_table(summary["sets"]) + f"\n\nFindings of sections 3-5 ({len(verdicts)}): {counts}."


def findings_table() -> str:
    """Every finding of the ``cifar10-cpu`` book's export, as its findings page shows it: the paper's value, ours
    ± its standard error, the verdict and, where ours does not hold, the measured reason."""
    summary = _book_summary()
    if summary is None:
        return book_progress(_book_progress())
    rows = [f"Rule: {summary['rule']}", "", "| section | finding | sets | the paper | ours (± standard error) | verdict |",
            "|---|---|---|---|---|---|"]
    for row in summary["findings"]:
        stderr = "" if math.isnan(row["stderr"]) else f" ± {row['stderr']:.3g}"  # NaN: unknown, not shown as an error
        verdict = row["verdict"] + (f": {row['reason']}" if row["reason"] else "")
        rows.append(f"| {row['section']} | {row['claim']} ({row['measure']}) | {row['sets']} | {row['paper']} | "
                    f"{row['effect']:.3g}{stderr} | {verdict} |")
    return "\n".join(rows)


def tables() -> dict[str, str]:
    """Every generated table of benchmarks/README.md by its marker, from the recorded results."""
    return {"foundation": foundation_table(), "speed": speed_table(), "influence": influence_table(), "kernels": kernels_table(), "stacked": stacked_table(),
            "cifar10": cifar10_table(), "memory": memory_table(), "book-costs": book_costs_table(), "curvature": curvature_table(), "hvp": hvp_table(),
            "step-profile": step_profile_table(), "step-kernels": step_kernels_table(),
            "bptt-search-cpu": bptt_search_table("bptt-search-cpu.json"), "bptt-search-smoke": bptt_search_table("bptt-search-smoke.json"),
            "search-cifar10-cpu": search_table(), "memory-bounds": memory_bounds_table(), "paper-cost": paper_cost_table(),
            "status-cifar10-cpu": status_table(), "findings-cifar10-cpu": findings_table()}


def render(text: str) -> tuple[str, list[str]]:
    """``text`` with every ``<!-- marker -->...<!-- /marker -->`` block rewritten from the results, and the markers
    whose block changed."""
    changed = []
    for marker, table in tables().items():
        block = f"<!-- {marker} -->\n{table}\n<!-- /{marker} -->"
        pattern = re.compile(rf"<!-- {marker} -->.*?<!-- /{marker} -->", flags=re.S)
        if pattern.search(text) and pattern.search(text).group(0) != block:
            changed.append(marker)
        text = pattern.sub(lambda _: block, text)
    return text, changed


READMES = (HERE / "README.md", HERE.parent / "README.md")  # the recorded numbers; the project's status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 naming the tables that differ from the results")
    args = parser.parse_args()
    for readme in READMES:
        text, changed = render(readme.read_text())
        if args.check and changed:
            raise SystemExit(f"{readme.relative_to(HERE.parent)} tables differ from the results: {', '.join(changed)} (run benchmarks/report.py)")
        if not args.check:
            readme.write_text(text)


if __name__ == "__main__":
    main()
