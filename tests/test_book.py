import dataclasses
import functools
import http.server
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import yaml

from ddnb.book import build_book, execute_notebooks, execution_key, notebook_parameters
from ddnb.cli import main
from ddnb.data.dataset import InputTransform
from ddnb.distill.result import Distilled
from ddnb.errors import DdnbError
from ddnb.explorer import FRAME_CLASS
from ddnb.profiles import PROFILES, get_profile
from ddnb.sections import open_inputs, open_page
from tests.forbid import FORBID, forbid_compute, restore, snapshot

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("distillation", "substitution", "dynamics", "semantics")
VERDICTS = ("holds", "partly", "does not hold")


@pytest.fixture(scope="module")
def complete_store(store, random_book, random_book_runs, tmp_path_factory) -> Path:
    """Every result of the smoke book, made by ``ddnb run`` in the session's store (whose smoke sets the preset
    tests may have made already, and where the random set's book is added first), exported and added into an empty
    store: the store the book is built from (nothing it needs may be computed again)."""
    for path in sorted(random_book.root.glob("*/*.safetensors")):
        store.add(path)
    made, kept, fresh = store.root, *(tmp_path_factory.mktemp(name) for name in ("kept", "fresh"))
    assert main(["run", "--profile", "smoke", "--device", "cpu", "--store", str(made)]) == 0
    assert main(["store", "export", str(kept), "--profile", "smoke", "--store", str(made)]) == 0
    assert main(["store", "add", *map(str, sorted(kept.glob("*.safetensors"))), "--store", str(fresh)]) == 0
    return fresh


def _forbidding_kernels(root: Path) -> Path:
    """An IPython directory whose startup file runs ``FORBID`` (``tests.forbid``) in every kernel started with
    ``IPYTHONDIR`` pointing at it, before any cell: a computation in a cell raises."""
    startup = root / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-forbid.py").write_text(FORBID)
    return root


@pytest.fixture(scope="module")
def smoke_book(complete_store, tmp_path_factory) -> Path:
    """The smoke book built with ``--no-compute`` from the complete store, with computing anything made to raise in
    this process and in every notebook kernel; returns the HTML index."""
    saved = snapshot()
    forbid_compute()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("IPYTHONDIR", str(_forbidding_kernels(tmp_path_factory.mktemp("ipython"))))
            assert main(["book", "--profile", "smoke", "--no-compute", "--device", "cpu", "--store", str(complete_store)]) == 0
    finally:
        restore(saved)
    return ROOT / "_build" / "html" / "index.html"


def test_notebooks_only_load_and_draw(smoke_book, tmp_path):
    """The book's notebooks were executed in kernels where every computation raises (``smoke_book``), and they are
    short; a cell that computes fails in such a kernel (the guard itself works)."""
    import nbformat
    from nbclient import NotebookClient

    for path in (ROOT / "notebooks").glob("*.ipynb"):
        code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        assert sum(len(cell.source.splitlines()) for cell in code) <= 40, path.name
    computing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import ddnb.train\nddnb.train.train(None, None)")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(_forbidding_kernels(tmp_path / "ipython")))
        with pytest.raises(Exception, match="computed: train"):
            NotebookClient(computing, kernel_name="python3").execute()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_a_killed_run_resumes_and_ends_with_the_results_of_an_uninterrupted_one(complete_store, tmp_path):
    """`ddnb run` killed (SIGKILL) once its first result is stored: the next call loads that result, makes the
    rest, and every result equals the one the uninterrupted run of ``complete_store`` made."""
    store = tmp_path / "store"
    command = [sys.executable, "-m", "ddnb.cli", "run", "--profile", "smoke", "--only", "distillation", "--methods",
               "random", "--device", "cpu", "--store", str(store)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(store.glob("distilled/*.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    made = {line.split()[0]: line.split()[2] for line in resumed.stdout.splitlines()[1:-1]}
    assert made == {"distilled": "loaded", "evaluation": "made"}
    results = [path for path in store.rglob("*.safetensors") if path.parent.name not in ("dataset", "checkpoint")]
    assert {path.parent.name for path in results} == {"distilled", "evaluation"}
    for path in results:
        expected = _tensors(complete_store / path.relative_to(store))
        assert {name: torch.equal(value, expected[name]) for name, value in _tensors(path).items()} == dict.fromkeys(expected, True)


def test_the_papers_own_sets_stand_in_for_the_methods_under_their_names(complete_store, tmp_path):
    """Files of the structure the paper's repository downloads (``DD_data/0.pt`` to ``3.pt``: BPTT, DM, GM and MTT,
    each ``{"data", "label"}`` in normalised pixel space), here holding the smoke book's own sets: ddnb distils none
    of the four, names them after their methods, and every finding is the one measured on the sets it made."""
    made = open_inputs("smoke", device="cpu", store=str(complete_store))
    (tmp_path / "DD_data").mkdir()
    specs = []
    for number, name in enumerate(("bptt", "dm", "gm", "mtt")):
        path = tmp_path / "DD_data" / f"{number}.pt"
        torch.save({"data": made.analysis[name].cpu(), "label": made.sets[name].labels.cpu()}, path)
        specs.append(f"{name}={path}")
    paper = open_inputs("smoke", device="cpu", store=str(complete_store), extra_sets=specs)
    assert [job.key["method"] for job in paper.set_jobs] == ["random"] and list(paper.sets) == list(made.sets)
    assert all(torch.equal(paper.analysis[name], made.analysis[name]) for name in made.sets)
    ours, theirs = (open_page("findings", "smoke", device="cpu", store=str(complete_store), extra_sets=sets).rows
                    for sets in ((), specs))
    assert [(row.sets, row.effect) for row in theirs] == [(row.sets, row.effect) for row in ours]


def test_a_book_without_its_results_names_them(tmp_path, capsys):
    assert main(["book", "--profile", "smoke", "--no-compute", "--store", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not in the store" in error[0] and "ddnb run --profile smoke" in error[0]


def test_the_notebooks_are_what_their_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "notebooks" / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_findings_page_measures_every_finding_of_sections_3_to_5(complete_store):
    rows = open_page("findings", "smoke", device="cpu", store=str(complete_store)).rows
    claims = {section: {row.claim for row in rows if row.section == section} for section in (3, 4, 5)}
    # PAPER.md's rows: mixing, pixels, real-trained networks, feature map | agreement, recognition, curvature (two
    # rows) | influence, semantics; mixing and the per-set rows once per set
    assert [len(claims[section]) for section in (3, 4, 5)] == [5, 4, 2], claims
    assert len(rows) == (5 + 4 + 1 + 1) + (4 + 4 + 2 + 1) + (4 + 4)
    assert all(math.isfinite(row.effect) and row.verdict in VERDICTS for row in rows)
    assert all(row.reason for row in rows if row.verdict != "holds")  # a sentence wherever ours falls short


def test_smoke_book_executes_every_section_and_builds_with_warnings_as_errors(smoke_book, complete_store):
    index = smoke_book
    assert "book/intro.html" in index.read_text()  # the index redirects to the root page of the toc
    assert "What is Dataset Distillation Learning?" in (index.parent / "book" / "intro.html").read_text()
    for section in SECTIONS:
        page = (index.parent / "book" / f"{section}.html").read_text()
        assert "How this page was made" in page and "not CIFAR-10" in page, section  # the header box
        assert "<img" in page, section  # its figures
        assert "pasted-text" in page, section  # numbers in the prose are glued from the executed notebook
        assert "<p>|" not in page, section  # a displayed Markdown table left as a paragraph of text
        assert section == "distillation" or "What this page finds" in page, section  # its findings first
    findings = (index.parent / "book" / "findings.html").read_text()
    assert "How this page was made" in findings and "pasted-text" in findings and findings.count("<table") == 3
    assert "<table" in (index.parent / "book" / "distillation.html").read_text()  # its accuracy table, rendered
    assert "application/vnd.jupyter.widget-state+json" in (index.parent / "book" / "semantics.html").read_text()
    # unchanged notebooks, parameters and ddnb source: nothing is executed again
    executed = {path: path.stat().st_mtime_ns for path in (ROOT / "book").glob("*.ipynb")}
    assert len(executed) == len(SECTIONS) + 1  # and the findings
    execute_notebooks(ROOT, notebook_parameters(get_profile("smoke"), "cpu", str(complete_store)))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in executed.items())


def _browser_or_reason() -> tuple[str | None, str]:
    chromium = os.environ.get("DDNB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if importlib.util.find_spec("playwright") is None:
        return None, "Python playwright is not installed"
    return (chromium, "") if chromium else (None, "no chromium executable (apt install chromium)")


@pytest.fixture(scope="module")
def served_book(smoke_book):
    """The built HTML served on 127.0.0.1 (a free port); yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def log_error(self, format, *args):
            print("server:", format % args)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=smoke_book.parent))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_static_book_in_a_browser_loads_cleanly_offline_and_the_explorer_responds(smoke_book, served_book):
    chromium, reason = _browser_or_reason()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = ["index.html", "genindex.html", "search.html", f"{toc['root']}.html"] + [f"{c['file']}.html" for c in toc["chapters"]]
    assert {f"book/{section}.html" for section in SECTIONS} <= set(pages)
    problems, outside = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("response", lambda response: problems.append(f"HTTP {response.status} {response.url}") if response.status >= 400 else None)

        def leaves_localhost(request):
            url = urlparse(request.url)
            if url.scheme not in ("data", "blob") and url.hostname != "127.0.0.1":
                outside.append(request.url)

        page.on("request", leaves_localhost)
        for name in pages:
            page.goto(f"{served_book}/{name}", wait_until="networkidle")
            assert not problems, (name, problems)
        assert not outside, outside

        page.goto(f"{served_book}/book/semantics.html", wait_until="networkidle")
        assert page.locator("mjx-container").count() > 0  # the influence formula, typeset by the book's own MathJax
        image = page.locator(f".{FRAME_CLASS}:visible")
        image.first.wait_for(timeout=30_000)
        assert image.count() == 1  # one frame shows at a time
        shown = image.first.get_attribute("src")

        def wait_for_new_frame(previous: str) -> str:
            page.wait_for_function(f"src => {{ const shown = [...document.querySelectorAll('.{FRAME_CLASS}')]"
                                   ".filter(e => e.offsetParent !== null); return shown.length === 1 && shown[0].src !== src }",
                                   arg=previous, timeout=10_000)
            return page.locator(f".{FRAME_CLASS}:visible").first.get_attribute("src")

        page.locator(".widget-slider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")  # the slider moves to the class's second image
        second = wait_for_new_frame(shown)
        play = page.locator(".widget-play button").first  # play and pause share this button
        play.click()
        wait_for_new_frame(second)  # play steps on by itself
        play.click()
        page.wait_for_timeout(2_000)  # longer than the play interval: no step is still pending
        paused = page.locator(f".{FRAME_CLASS}:visible").first.get_attribute("src")
        page.locator(".widget-dropdown select").first.select_option(index=1)  # another class
        other_class = wait_for_new_frame(paused)
        page.locator(".widget-toggle-buttons button").nth(1).click()  # another set
        wait_for_new_frame(other_class)
        browser.close()
    assert not problems, problems
    assert not outside, outside


def _notebook(path: Path, *code: str) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("runs = None", metadata={"tags": ["parameters"]}),
                      *(nbformat.v4.new_code_cell(cell) for cell in code)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_notebooks_run_once_through_the_store_and_a_failure_leaves_the_notebook_to_read(tmp_path, capfd):
    (tmp_path / "notebooks").mkdir(), (tmp_path / "book").mkdir()
    runs = tmp_path / "runs.txt"
    _notebook(tmp_path / "notebooks" / "counts.ipynb", "open(runs, 'a').write('run\\n'); print('executed')")
    parameters = {"runs": str(runs), "device": "cpu", "store": str(tmp_path / "store")}
    (output,) = execute_notebooks(tmp_path, parameters)
    assert "executed" in output.read_text() and runs.read_text() == "run\n"
    assert "over TCP" not in capfd.readouterr().err  # the kernel talks over Unix sockets, not localhost TCP ports
    mtime = output.stat().st_mtime_ns
    assert execute_notebooks(tmp_path, parameters) == [output]  # unchanged: loaded from the store, file untouched
    assert runs.read_text() == "run\n" and output.stat().st_mtime_ns == mtime
    _notebook(tmp_path / "notebooks" / "fails.ipynb", "raise ValueError('no such image')")
    with pytest.raises(DdnbError, match="fails.ipynb failed: ValueError: no such image"):
        execute_notebooks(tmp_path, parameters)
    assert "no such image" in (tmp_path / "book" / "fails.ipynb").read_text()
    (tmp_path / "notebooks" / "fails.ipynb").unlink()
    # a kernel killed mid-way (as the kernel's out-of-memory killer does) keeps the cells it finished
    _notebook(tmp_path / "notebooks" / "dies.ipynb", "print('first cell done')", "import os; os._exit(9)")
    with pytest.raises(DdnbError, match="kernel running dies.ipynb died"):
        execute_notebooks(tmp_path, parameters)
    assert "first cell done" in (tmp_path / "book" / "dies.ipynb").read_text()


def test_own_sets_join_the_parameters_and_a_rewritten_set_runs_the_notebooks_again(tmp_path):
    images, labels = torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])
    mine = Distilled(images, labels, {"method": "mine", "ipc": 1}, InputTransform(torch.zeros(3), torch.ones(3)),
                     meta={"classes": ["a", "b"]})
    path = mine.save(tmp_path / "mine")
    parameters = notebook_parameters(get_profile("smoke"), "cpu", None, ["random"], [tmp_path / "mine"])
    assert parameters["methods"] == ["random"] and parameters["extra_sets"] == [f"mine={path.resolve()}"]
    notebook = ROOT / "notebooks" / "semantics.ipynb"
    key = execution_key(notebook, parameters)
    assert execution_key(notebook, parameters) == key
    dataclasses.replace(mine, images=images + 1).save(tmp_path / "mine")  # same path, other images
    assert execution_key(notebook, parameters) != key
    released = tmp_path / "0.pt"  # a set as the paper's authors released theirs
    torch.save({"data": images, "label": labels}, released)
    parameters = notebook_parameters(get_profile("smoke"), "cpu", None, ["random"], [f"bptt={released}"])
    assert parameters["extra_sets"] == [f"bptt={released.resolve()}"]
    key = execution_key(notebook, parameters)
    torch.save({"data": images + 1, "label": labels}, released)
    assert execution_key(notebook, parameters) != key
    (tmp_path / "other.safetensors").write_bytes(b"not a set")
    with pytest.raises(DdnbError, match="has no sidecar"):  # checked before any work, not inside a notebook
        notebook_parameters(get_profile("smoke"), "cpu", None, ["random"], [tmp_path / "other.safetensors"])
    with pytest.raises(DdnbError, match="unknown method"):
        notebook_parameters(get_profile("smoke"), "cpu", None, ["random", "kip"])


def test_book_outside_a_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(DdnbError, match="holds no book"):
        build_book(get_profile("smoke"), tmp_path)


def test_profiles_are_named_and_can_point_at_other_data():
    assert list(PROFILES) == ["smoke", "quick", "cifar10-cpu", "paper"]
    assert get_profile("cifar10-cpu", "imagefolder:/data/cifar").data.name == "imagefolder:/data/cifar"
    with pytest.raises(DdnbError, match="unknown profile"):
        get_profile("huge")
