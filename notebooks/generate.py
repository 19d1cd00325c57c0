"""Writes the book's load-and-draw notebooks: the one place their parameters cell and opening live.

    python notebooks/generate.py           # rewrite notebooks/*.ipynb
    python notebooks/generate.py --check   # exit 1 if a notebook differs from what this script writes

Edit the cells here, never in the .ipynb files (tests/test_book.py checks that they agree).
"""
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PARAMS = '''profile = "smoke"  # smoke, quick, cifar10-cpu or paper
data = None  # None: the profile's data set; or shapes, cifar10, imagefolder:PATH
ipc = None  # None: the profile's images per class
methods = ["random", "bptt", "dm", "gm", "mtt"]
seed = 0  # seed of every distillation
device = "auto"  # auto, cpu or cuda
store = None  # artifact folder (None: $DDNB_STORE or ~/.cache/ddnb)
extra_sets = []  # your own distilled sets (ddnb distill / ddnb import outputs), analysed beside the four methods'''

def opening(page):
    return f'''import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from myst_nb import glue

from ddnb import paper, viz
from ddnb.sections import findings, open_page

page = open_page("{page}", profile, data, ipc, methods, seed, device, store, extra_sets)  # results made by `ddnb run`
display(Markdown(page.inputs.header()))'''

def cid(text):
    return hashlib.sha1(text.encode()).hexdigest()[:8]

def md(text):
    return {"cell_type": "markdown", "id": cid("md" + text), "metadata": {}, "source": text}

def code(text, tags=("hide-input",)):
    return {"cell_type": "code", "execution_count": None, "id": cid("code" + text), "metadata": {"tags": list(tags)}, "outputs": [], "source": text}

def notebook(title_md, page, cells):
    body = [md(title_md), code(PARAMS, ("parameters", "hide-cell")), code(opening(page))] + cells
    return {"cells": body, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}

FINDINGS_HEADING = '''## What this page finds

The paper's findings of this section, each as one measured effect beside the paper's value, with a verdict by the rule of the findings page (the effect's sign and its interval of ± 2 standard errors).'''

findings_page = notebook('''# Findings: the paper's claims, measured

Each row is one finding of the paper's sections 3 to 5, turned into a number whose sign is the claim: for example, the accuracy of a distilled set with real images added minus without them, which the paper finds negative. Beside the paper's value (often read from its plots) is ours on this book's profile, with ± 2 standard errors over seeds, networks or images, and a verdict. The section pages show how each number was made.''', "findings", [
    md('''## The rule'''),
    code('''display(Markdown(page.rule))
verdicts = [row.verdict for row in page.rows]
for verdict in ("holds", "partly", "does not hold"):
    glue(f"count_{verdict.replace(' ', '_')}", verdicts.count(verdict), display=False)
glue("count_rows", len(verdicts), display=False)'''),
    md('''Of the {glue:text}`count_rows` findings measured here, {glue:text}`count_holds` hold, {glue:text}`count_partly` hold partly and {glue:text}`count_does_not_hold` do not.

## Section 3 — distilled data is not a substitute for real data'''),
    code('''display(Markdown(viz.findings_table(page.rows, section=3)))'''),
    md('''## Section 4 — distilled data captures early training dynamics'''),
    code('''display(Markdown(viz.findings_table(page.rows, section=4)))'''),
    md('''## Section 5 — single distilled images carry semantics'''),
    code('''display(Markdown(viz.findings_table(page.rows, section=5)))'''),
])

distillation = notebook('''# Making the distilled sets

Every later section analyses the sets made here: one per distiller (BPTT, distribution matching, gradient matching, trajectory matching) and a random real subset of the same size as the baseline, each with the settings of this page's profile. `ddnb run` makes each set once and keeps it in the store; this page only loads and draws.''', "distillation", [
    md('''## How well each set trains a network

One network per seed is trained on each set with the paper's protocol for distilled data (full batch, SGD lr 0.01, momentum 0.9, 300 steps) and tested on the real test split. Every analysis of this book works in the plain normalised input space, as the paper's do. A set made on ZCA-whitened images is re-encoded into that space from its pixels and also scored in the space it was made in (the column *in its own space*, when there is such a set): that is the method's own score.'''),
    code('''display(Markdown(viz.accuracy_table(page.evaluations, page.own_space)))
for name, result in page.evaluations.items():
    glue(f"accuracy_{name}", float(result.accuracies.mean()), display=False)'''),
    md('''On this run the random real subset reaches {glue:text}`accuracy_random:.3f` and distribution matching {glue:text}`accuracy_dm:.3f`; the table above lists every set.

## The images

Each row is a class; images are shown as pixels clipped to [0, 1] (distilled images leave that range: see the pixel distributions in section 3).'''),
    code('''for name, distilled in page.inputs.sets.items():
    viz.image_grid(distilled.pixels().cpu(), distilled.labels.cpu(), page.inputs.dataset.classes, paper.METHOD_NAMES.get(name, name))
    plt.show()'''),
])

substitution = notebook('''# Section 3 — distilled data is not a substitute for real data

Distilled sets train a network almost as well as the full data, under the protocol they were made for. Outside it they behave unlike real images: adding real images can make them worse, and their pixels and features sit in other places than real ones.''', "substitution", [
    md(FINDINGS_HEADING),
    code('''display(Markdown(viz.findings_table(findings.substitution_rows(page))))'''),
    md('''## Mixing real images into distilled sets

Each set gets k random real training images per class on top of its own, and one network per seed is trained on the union with the paper's protocol (the real images are drawn anew for every seed). Shaded: ± one standard deviation over seeds; dashed: the paper's curve (CIFAR-10, one run). Look at the first step: in the paper every distilled set loses accuracy when a few real images are added, while the random subset gains.'''),
    code('''ks = page.inputs.profile.analysis.mixing_ks
reference = {n: [v for k, v in zip(paper.MIXING_KS, values) if k in ks] for n, values in paper.MIXING.items()}
viz.curves(ks, {name: (r.mean.tolist(), r.std.tolist()) for name, r in page.mixing.items()}, "real images added per class (k)",
           "test accuracy", reference={n: v for n, v in reference.items() if len(v) == len(ks)}, logx=True)
plt.show()
for name, result in page.mixing.items():
    glue(f"mixing_{name}_first", float(result.mean[0]), display=False)
    glue(f"mixing_{name}_second", float(result.mean[1]), display=False)
glue("mixing_second_k", ks[1], display=False)'''),
    md('''With {glue:text}`mixing_second_k` real images per class added, the random subset goes from {glue:text}`mixing_random_first:.3f` to {glue:text}`mixing_random_second:.3f`, while DM goes from {glue:text}`mixing_dm_first:.3f` to {glue:text}`mixing_dm_second:.3f`.

## Networks trained on real data, tested on distilled images

Each network is trained on the real training data and scores every distilled set: does real training recognise the distilled images as their class? The last group is the networks' accuracy on the real test split.'''),
    code('''by_set = {name: {net: page.scores[net][name] for net in page.scores} for name in [*page.inputs.sets, "real test"]}
viz.grouped_bars(by_set, "accuracy on the set")
plt.show()'''),
    md('''## Pixel values

Distribution of un-normalised pixel values (all channels) of each set and of real test images; distilled images leave the [0, 1] range real images live in.'''),
    code('''viz.histograms(page.histograms)
plt.show()'''),
    md('''## Where the distilled images sit among real features

Penultimate features of test images (dots, coloured by class) and of each distilled set (markers) under the last of the real-trained networks (named in the title), mapped jointly to 2-D by the profile's projection (UMAP, as the paper, or the top two principal components; named in the title).'''),
    code('''set_labels = {name: s.labels for name, s in page.inputs.sets.items()}
viz.feature_scatter(page.points, page.test_labels, set_labels, title=f"penultimate features of {page.map_net} ({page.map_method})")
plt.show()'''),
])

dynamics = notebook('''# Section 4 — distilled data captures early training dynamics

Networks trained on distilled data predict like networks stopped early in real training, more than like networks of the same accuracy trained to the end on a little real data; real training recognises distilled images early; and the loss curvature on distilled data collapses after early training.''', "dynamics", [
    md(FINDINGS_HEADING),
    code('''display(Markdown(viz.findings_table(findings.dynamics_rows(page))))'''),
    md('''## The pools

Subset networks are trained to the end on random per-class subsets of the real data; early networks are trained on all of it, with their test predictions kept along the way.'''),
    code('''viz.pools(page.subsets, page.early, page.evaluations)
plt.show()'''),
    md('''## Agreement

Fraction of test images on which a distilled-trained network predicts the same class as (a) subset networks of matching accuracy and (b) each early network at the recorded iteration whose accuracy is nearest. Matches are chosen by the code from the stored curves. Bars: mean ± std over pairs; dots: paper. In the paper the orange bar (early-matched) is the taller one for every method.'''),
    code('''viz.agreement_bars(page.agreements)
plt.show()
for name, result in page.agreements.items():
    glue(f"agreement_{name}_subset", float(result.subset.mean()), display=False)
    glue(f"agreement_{name}_early", float(result.early.mean()), display=False)'''),
    md('''For DM, agreement with accuracy-matched subset networks is {glue:text}`agreement_dm_subset:.3f` and with early-stopped networks {glue:text}`agreement_dm_early:.3f`.

## Recognition during real training

Accuracy on each distilled set of the kept early networks at every recorded iteration of their real training (shaded: ± one standard deviation over networks, when more than one is kept).'''),
    code('''series = {name: (r.mean(0).tolist(), r.std(0).tolist() if len(r) > 1 else None) for name, r in page.recognition.items()}
series["real test"] = (page.early.accuracies.mean(0).tolist(), None)
viz.curves(page.early.iterations.tolist(), series, "iteration of real training", "accuracy")
plt.show()'''),
    md('''## Curvature along real training

Hessian trace of the training loss on each distilled set and on real training images, before each measured iteration of real training of one network. Hutchinson's estimator with the same Rademacher probes at every iteration (common random numbers), shaded ± one standard error.'''),
    code('''curves = {name: (c.traces.tolist(), c.stderrs.tolist()) for name, c in page.curves.items()}
viz.curves(next(iter(page.curves.values())).iterations.tolist(), curves, "iteration of real training", "Hessian trace")
plt.show()'''),
])

semantics = notebook(r'''# Section 5 — single distilled images carry semantics

The influence of distilled image $i$ on test image $j$ is how much the test image's loss rises when the network is trained without that distilled image (same initialisation, same protocol):

$$\mathcal{I}(i, j) = \ell_j(\theta_{\setminus i}) - \ell_j(\theta),$$

where $\theta$ are the weights trained on all distilled images and $\theta_{\setminus i}$ those trained without image $i$. The test images a distilled image helps most often share visual attributes beyond their class.''', "semantics", [
    md(FINDINGS_HEADING),
    code('''display(Markdown(viz.findings_table(findings.semantics_rows(page))))'''),
    md('''## The test images each distilled image helps most

For a few distilled images of each set: the image (left) and the 9 test images whose loss rises most without it.'''),
    code('''for figure in viz.influence_grids(page.matrices, page.inputs.sets, page.test_pixels):
    plt.show()'''),
    md('''## Explore the distilled images

Choose a set and a class, then step through its images with the slider or the play button. Beside each image: the 9 test images its removal hurts most (highest influence), where this profile computed its influence (see the header box for the profile).'''),
    code('''from ddnb.explorer import explorer

shown = {paper.METHOD_NAMES.get(name, name): name for name in page.matrices}
explorer({label: (page.inputs.sets[name].pixels().cpu(), page.inputs.sets[name].labels.cpu()) for label, name in shown.items()},
         page.inputs.dataset.classes, {label: page.matrices[name] for label, name in shown.items()}, page.test_pixels)'''),
    md('''## Attributes enriched among the most-influenced test images

For every (distilled image, attribute) pair: among the test images of the distilled image's class, the share of its top-ranked ones with the attribute, against the attribute's share in the class (enrichment), with a one-sided hypergeometric p-value and a Benjamini-Hochberg q-value over all pairs of the set.'''),
    code('''print(f"attributes: {page.attribute_source}")
viz.attribute_examples(page.test_pixels, page.attributes, title="test images with each attribute (first 10)")
plt.show()
for name, entries in page.enrichments.items():
    display(Markdown(viz.enrichment_table(name, entries, page.matrices[name].rows, page.inputs.sets[name].labels, page.inputs.dataset.classes)))
name, entry = min(((n, e[0]) for n, e in page.enrichments.items() if e), key=lambda pair: pair[1].p_value)
glue("best_enrichment_set", paper.METHOD_NAMES.get(name, name), display=False)
glue("best_enrichment_attribute", entry.attribute, display=False)
glue("best_enrichment_p", entry.p_value, display=False)
glue("best_enrichment_q", entry.q_value, display=False)'''),
    md('''The strongest pair in this run is in the {glue:text}`best_enrichment_set` set, attribute {glue:text}`best_enrichment_attribute`, with p = {glue:text}`best_enrichment_p:.2g` (q = {glue:text}`best_enrichment_q:.2g` over all pairs of that set).

## How well cheaper estimates agree with leave-one-out

Influence functions (inverse Hessian-vector products by conjugate gradient, at several dampings) and gradient dot products (TracIn-like) at the network trained on all images, against the leave-one-out matrix of the first set: per-test-image Pearson and Spearman correlation and the overlap of the 10 most-influenced test images. After training the network is not at a minimum and its Hessian has negative eigenvalues; below their size a damping makes conjugate gradients diverge, and the table shows a dash with the reason under it instead of a score.'''),
    code('''display(Markdown(viz.estimate_table(page.estimated_set, page.estimates)))'''),
])

NOTEBOOKS = {"findings": findings_page, "distillation": distillation, "substitution": substitution, "dynamics": dynamics,
             "semantics": semantics}


def main(check: bool) -> int:
    """Write (or with ``check`` compare) every notebook; returns the exit status."""
    stale = []
    for name, content in NOTEBOOKS.items():
        path, text = HERE / f"{name}.ipynb", json.dumps(content, indent=1, ensure_ascii=False) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"{', '.join(stale)} differ from notebooks/generate.py; run python notebooks/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
