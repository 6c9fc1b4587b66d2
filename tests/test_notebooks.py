"""The notebooks run top to bottom in a real Jupyter kernel running this project's interpreter: the solutions
with every check passing, and the student's stub notebooks (weeks/) all the way through, as "Run All" would.

The `executed` fixture runs all twelve, each in a kernel of its own, and prints how long each took; each
test reads its notebook's result."""
from __future__ import annotations

import json
import re
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

from autograder.config import ROOT, load_course
from autograder.demo import FAILED as DEMO_FAILED
from autograder.demo import SKIPPED as DEMO_SKIPPED

NOTEBOOKS = load_course().notebooks
KERNEL = "attention-course-test"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, monkeypatch_module):
    """A kernelspec that starts this interpreter (the project's venv), never a machine's python3."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "course venv (tests)", "language": "python",
    }))
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    monkeypatch_module.setenv("MPLBACKEND", "Agg")
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


RUNS = [(folder, nb) for folder in ("solutions", "weeks") for nb in NOTEBOOKS]
"""Every (folder, notebook) to run."""


@pytest.fixture(scope="module")
def executed(kernel_env, tmp_path_factory):
    """{(folder, notebook id): (the error that stopped it or None, the executed notebook, seconds)}, one run after
    another, each in a kernel of its own, with a first cell that prints the kernel's interpreter. (Two at a time
    took as long on two cores: torch's threads in both kernels then compete.)"""
    root = tmp_path_factory.mktemp("executed")
    results = {}
    for folder, nb in RUNS:
        work = root / folder / nb.id
        work.mkdir(parents=True)
        notebook = nbformat.read(ROOT / folder / nb.path, as_version=4)
        notebook.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
        started, error = time.monotonic(), None
        try:
            NotebookClient(notebook, kernel_name=KERNEL, timeout=300, allow_errors=False,
                           resources={"metadata": {"path": str(work)}}).execute()  # raises at the first failing cell
        except Exception as exc:  # noqa: BLE001 - reported by the notebook's own test
            error = f"{type(exc).__name__}: {exc}"
        results[folder, nb.id] = (error, notebook, time.monotonic() - started)
        print(f"{folder}/{nb.path} top to bottom: {results[folder, nb.id][2]:.1f} s")
    return results


def run_of(executed, folder: str, nb) -> nbformat.NotebookNode:
    """The executed notebook, after checking that its run reached the end in this project's interpreter."""
    error, notebook, _ = executed[folder, nb.id]
    assert error is None, f"{folder}/{nb.path} stopped: {error[-4000:]}"
    probe = notebook.cells.pop(0)
    assert probe.outputs[0]["text"].strip() == sys.executable
    return notebook


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_solution_notebook_runs_in_a_kernel(executed, nb):
    """Does every cell of the solution notebook, demos and checks included, run without error?"""
    notebook = run_of(executed, "solutions", nb)
    passes = [o.get("text", "") + json.dumps(o.get("data", {})) for c in notebook.cells for o in c.get("outputs", [])]
    assert any("PASS" in p for p in passes), "no check() reported PASS"
    # `with demo():` shows a demo's error and goes on, so the kernel's status alone would miss it.
    assert not [o for c in notebook.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not any(DEMO_FAILED in p or DEMO_SKIPPED in p for p in passes)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_run_all_completes_on_the_stub_notebook(executed, nb):
    """Does "Run All" on the untouched student notebook (weeks/, every exercise still its stub) reach the last
    cell in the course's kernel, showing every check's card, each demo that calls a stub skipped with a note
    naming that stub (or the skipped demo's missing result), and no error?"""
    notebook = run_of(executed, "weeks", nb)
    outputs = {i: [o.get("text", "") + json.dumps(o.get("data", {})) for o in cell.get("outputs", [])]
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    errors = [(i, o["ename"]) for i, cell in enumerate(notebook.cells) for o in cell.get("outputs", [])
              if o["output_type"] == "error"]
    assert not errors, f"weeks/{nb.path}: cells that show an error: {errors}"
    items = {item.id for item in nb.auto_items}
    cards = [i for i, shown in outputs.items() if any(f"FAIL {item}:" in t for t in shown for item in items)]
    checks = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.source.startswith("check(")]
    assert cards == checks, f"weeks/{nb.path}: a check cell without its card"
    skips = [t for shown in outputs.values() for t in shown if DEMO_SKIPPED in t]
    guarded = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and "with demo():" in cell.source]
    assert guarded and len(skips) == len(guarded), f"weeks/{nb.path}: {len(guarded)} guarded demos, {len(skips)} notes"
    for text in skips:
        waits_for = re.search(r"(\w+)(\.\w+)? is still a stub|waits for (\w+)", text)
        assert waits_for and (waits_for[1] or waits_for[3]) in items, text
    assert not any(DEMO_FAILED in t for shown in outputs.values() for t in shown)


READINGS_HEADING = "## Readings and resources"
LINK = re.compile(r"\[(?P<title>[^\]]+)\]\((?P<url>[^)\s]+)\)")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_notebook_ends_with_readings_and_resources(nb):
    """Does every notebook of course.yml end with a "Readings and resources" markdown cell whose readings are
    links with titles (https or http addresses), in the solution and in the student release alike? A notebook
    without it fails; none is skipped."""
    for folder in ("solutions", "weeks"):
        cells = nbformat.read(ROOT / folder / nb.path, as_version=4).cells
        last = cells[-1]
        where = f"{folder}/{nb.path}"
        assert last.cell_type == "markdown" and last.source.lstrip().startswith(READINGS_HEADING), (
            f"{where} does not end with a markdown cell headed {READINGS_HEADING!r}")
        links = LINK.findall(last.source)
        assert links, f"{where}: its readings cell has no links"
        for title, url in links:
            assert title.strip() and re.match(r"https?://[^/]+\.[a-z]+/?", url), (where, title, url)


CHECKPOINT_QUESTION = "**Checkpoint (graded by hand).**"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_checkpoints_are_answer_cells_after_their_question(nb):
    """Is every hand-graded item of course.yml (manual: true) a markdown answer cell with its points, right after
    the markdown question that says it is graded by hand, in course order, in the solution (with a model answer)
    and in the student release (nbgrader's stub) alike?"""
    manual = [item for item in nb.items if item.manual]
    for folder in ("solutions", "weeks"):
        cells = nbformat.read(ROOT / folder / nb.path, as_version=4).cells
        ids = [cell.get("id") for cell in cells]
        where = f"{folder}/{nb.path}"
        positions = []
        for item in manual:
            assert item.id in ids, f"{where}: no cell for the checkpoint {item.id} of course.yml"
            at = ids.index(item.id)
            answer, question = cells[at], cells[at - 1]
            meta = answer.metadata.get("nbgrader", {})
            assert answer.cell_type == "markdown" and meta.get("grade") and meta.get("solution"), (where, item.id)
            assert meta.get("points") == item.points, (where, item.id)
            assert question.cell_type == "markdown" and CHECKPOINT_QUESTION in question.source, (where, item.id)
            if folder == "weeks":
                assert answer.source.strip() == "YOUR ANSWER HERE", (where, item.id)
            else:
                assert len(answer.source.split()) >= 40, f"{where}: {item.id} has no model answer"
            positions.append(at)
        assert positions == sorted(positions), f"{where}: checkpoints out of course.yml's order"


def test_the_modules_checkpoints_are_in_the_course():
    """Are the checkpoints the learning module asks for in week 2 hand-graded items: what different heads might
    learn (Day 8), the purpose of each component and the diagram drawn from memory (Day 10), the warm-up
    (Day 13), and the capstone's reflection?"""
    items = {item.id: item for nb in NOTEBOOKS for item in nb.items}
    for checkpoint in ("checkpoint_heads", "checkpoint_transformer", "checkpoint_warmup", "checkpoint_capstone"):
        assert checkpoint in items and items[checkpoint].manual, checkpoint
    assert "diagram_labels" in items and not items["diagram_labels"].manual
