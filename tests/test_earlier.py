"""`from autograder.earlier import ...`: earlier notebooks' code in a later one, without copy-paste.

In a student repository made by `release`, the import line gives the student's own pieces (read
from their earlier notebooks), says clearly when one is a stub or a notebook is missing, and gives
the published references when the student chooses them. Under grading it gives the course's
references, and a notebook graded with the import line scores what it scored with pasted code.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
import yaml

import students as demo
from autograder import earlier, notebook
from autograder.config import ROOT, load_course
from autograder.release import ReleaseError, publishable, release
from conftest import gradebook_rows

COURSE = load_course()
D06, D08, D10, D13 = ("day06_scaled_dot_product_attention", "day08_multi_head_attention", "day10_transformer",
                      "day13_training")
KERNEL = "attention-course"
"""The kernel `make` installs into .venv (never a system python3 kernelspec)."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LATER = datetime(2100, 1, 1, tzinfo=timezone.utc)
"""A time after every due date, to publish references whatever course.yml says."""


def import_line(nb_id: str) -> str:
    """The one `from autograder.earlier import ...` statement of a source notebook's import cell."""
    source = nbformat.read(ROOT / "solutions" / COURSE.notebook(nb_id).path, as_version=4)
    cells = [c.source for c in source.cells if c.cell_type == "code" and "from autograder.earlier import" in c.source]
    assert len(cells) == 1, f"{nb_id}: {len(cells)} cells import from autograder.earlier"
    return next(line for line in cells[0].splitlines() if line.startswith("from autograder.earlier import"))


def test_week2_notebooks_import_earlier_code_in_one_line():
    """Does each week-2 notebook bring its earlier pieces with one import line (and say how in its prose), with
    no cell left to paste earlier code into, in solutions/ and in the built weeks/?"""
    for nb_id in (D08, D10, D13):
        nb = COURSE.notebook(nb_id)
        names = earlier.imported_names([import_line(nb_id)])
        assert names, nb_id
        order = [n.id for n in COURSE.notebooks]
        for name in names:
            owner, _ = COURSE.item(name)
            assert order.index(owner.id) < order.index(nb_id), (nb_id, name)
        for folder in ("solutions", "weeks"):
            cells = nbformat.read(ROOT / folder / nb.path, as_version=4).cells
            gids = [c.metadata.get("nbgrader", {}).get("grade_id", "") for c in cells]
            assert not [g for g in gids if g.startswith("reuse_")], f"{folder}/{nb.path} still has paste cells"
            text = "\n".join(c.source for c in cells)
            assert "Paste your" not in text and "paste your own" not in text.lower(), f"{folder}/{nb.path}"
            assert 'earlier.use("reference")' in text, f"{folder}/{nb.path} does not say how to use the references"


def test_references_reach_a_sandbox_only_from_earlier_notebooks():
    """Does the grader give a notebook's import the references of earlier notebooks only (the day's own items
    never), and the student's own `check` none at all?"""
    from autograder import grade

    for nb_id, wanted in ((D08, {D06}), (D10, {D06, D08}), (D13, {D06, D08, D10})):
        nb = COURSE.notebook(nb_id)
        names = earlier.imported_names([import_line(nb_id)]) + [nb.auto_items[0].id, "layer_norm", "no_such_item"]
        given = earlier.needed(COURSE, nb, names)
        assert set(given) == wanted, (nb_id, set(given))
        own_items = {item.id for item in nb.auto_items}
        assert not own_items & {name for pieces in given.values() for name in pieces["names"]}
    nb = COURSE.notebook(D10)
    sub = grade.Submission("s", nb, ROOT / "weeks" / nb.path, nb=notebook.read(ROOT / "weeks" / nb.path))
    run = grade.Run(COURSE, {nb.id: {i.id: {"cases": []} for i in nb.auto_items}}, {}, None, "")
    grade.plan_job(sub, run)
    assert "earlier" not in sub.job, "the student's own check must read the student's own notebooks"
    grade.plan_job(sub, grade.Run(COURSE, run.keys, {}, None, "", references=ROOT))
    assert set(sub.job["earlier"]) == {D06, D08}


# --- a student repository made by `release`, and a fresh kernel in it --------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The student repository, as `release` writes it."""
    out = tmp_path_factory.mktemp("earlier") / "student-repo"
    release(COURSE, out, log=lambda *a: None)
    return out


def write(repo: Path, nb_id: str, edits: dict[str, str] | None) -> Path:
    """The student's notebook `nb_id` in `repo`: as released and edited (demo-class edits), or deleted (None)."""
    path = repo / "weeks" / COURSE.notebook(nb_id).path
    if edits is None:
        path.unlink(missing_ok=True)
    else:
        nbformat.write(demo.make_notebook(COURSE.notebook(nb_id), edits), path)
    return path


@pytest.fixture(scope="module")
def kernel(repo):
    """run(code) -> (status, text): a fresh kernel of the course's kernelspec, started in the student's
    weeks/week2 folder with the release's autograder first on its path (as the release's `-e .` install does)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import start_new_kernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} kernel: run `make` (it installs the kernel into .venv)")
    assert spec.argv[0].startswith(sys.prefix), f"the {KERNEL} kernel runs {spec.argv[0]}, not .venv's Python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NBGRADER_EXECUTION")}
    env.update(PYTHONPATH=str(repo), MPLBACKEND="Agg")
    km, kc = start_new_kernel(kernel_name=KERNEL, cwd=str(repo / "weeks" / "week2"), env=env)

    def run(code: str) -> tuple[str, str]:
        parts = []

        def hook(msg):
            content = msg["content"]
            if msg["msg_type"] == "stream":
                parts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "execute_result"):
                parts.append(content["data"].get("text/plain", "") + "\n")
            elif msg["msg_type"] == "error":
                parts.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"]))

        reply = kc.execute_interactive(code, timeout=120, output_hook=hook, allow_stdin=False)
        return reply["content"]["status"], ANSI.sub("", "".join(parts))

    status, where = run("import autograder, sys; print(autograder.__file__); print(sys.executable)")
    assert status == "ok" and where.splitlines()[0] == str(repo / "autograder" / "__init__.py"), where
    assert where.splitlines()[1].startswith(sys.prefix), where
    yield run
    kc.stop_channels()
    km.shutdown_kernel(now=True)


PROBE = """
import torch
mha = MultiHeadAttention(8, 2).eval()
tokens = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
out, w = mha(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), padding_mask(tokens, 0))
print(MultiHeadAttention.__module__, padding_mask.__module__, tuple(out.shape), w[1, :, :, 1:].abs().max().item())
print(causal_mask(3).int().tolist(), tuple(padding_mask(tokens, 0).shape))
"""


def test_own_earlier_code_in_a_fresh_kernel(repo, kernel):
    """With the student's Days 6-7 and 8-9 notebooks completed, does Day 10's import line give their own pieces
    (which work together and pass their own check), run nothing else of those notebooks, and give the edited
    version after the student fixes an earlier notebook and runs the import again?"""
    solved = {"*": "solution", "+scratch": "print('THE DAY 6 SCRATCH CELL RAN')\nEARLIER_SCRATCH = 1\n"}
    write(repo, D06, solved)
    write(repo, D08, {"*": "solution"})
    status, text = kernel('from autograder import earlier; earlier.use("own")\n' + import_line(D10) + PROBE)
    assert status == "ok", text
    assert "day08_multi_head_attention day06_scaled_dot_product_attention (2, 3, 8) 0.0" in text, text
    assert "[[1, 0, 0], [1, 1, 0], [1, 1, 1]] (2, 1, 4)" in text, text
    assert "SCRATCH" not in text
    status, text = kernel("print('EARLIER_SCRATCH' in dir(), hasattr(padding_mask, '__globals__') and "
                          "'EARLIER_SCRATCH' in padding_mask.__globals__)")
    assert text.split() == ["False", "False"], text
    status, text = kernel("from autograder import check\ncheck(MultiHeadAttention)\ncheck(padding_mask)")
    assert "PASS MultiHeadAttention" in text and "PASS padding_mask" in text, text
    # A bug put into Day 6 and saved: the import gives the new version, without restarting the kernel.
    day6 = demo.solution_sources(COURSE.notebook(D06))
    write(repo, D06, dict(solved, padding_mask=day6["padding_mask"].replace("unsqueeze(1)", "unsqueeze(2)")))
    status, text = kernel(import_line(D10) + "\nprint(tuple(padding_mask(torch.tensor([[5, 0]]), 0).shape))")
    assert status == "ok" and "(1, 2, 1)" in text, text


def test_stub_or_missing_earlier_notebook_says_what_to_do(repo, kernel):
    """When an earlier piece still raises NotImplementedError, or the earlier notebook is missing, does the import
    line stop with a message naming the piece, the file and what to do (and no traceback of the checker)?"""
    released = (ROOT / "weeks" / COURSE.notebook(D06).path).read_text()
    stub = next(c["source"] for c in notebook.read(ROOT / "weeks" / COURSE.notebook(D06).path).cells
                if notebook.grade_id(c) == "padding_mask")
    assert "raise NotImplementedError" in stub and "def padding_mask" in released
    write(repo, D06, {"*": "solution", "padding_mask": stub})
    write(repo, D08, {"*": "solution"})
    status, text = kernel('from autograder import earlier; earlier.use("own")\n' + import_line(D10))
    assert status == "error", text
    assert ("EarlierError: padding_mask in weeks/week1/day06_scaled_dot_product_attention.ipynb is still a stub "
            "(it raises NotImplementedError): finish Days 6-7, or once your instructor publishes the references "
            "of week1 (after its due date), use them") in text, text
    assert "earlier.py" not in text and "Traceback" not in text, text
    # A stub deeper down: Day 10's MultiHeadAttention needs Day 6's attention, which is not written yet.
    write(repo, D06, {})
    status, text = kernel(import_line(D10))
    assert status == "error" and "scaled_dot_product_attention in weeks/week1/day06_scaled_dot_product_attention" \
        ".ipynb is still a stub" in text and "needed by your weeks/week2/day08_multi_head_attention.ipynb" in text, text
    write(repo, D06, {"*": "solution"})
    write(repo, D08, None)
    status, text = kernel(import_line(D10))
    assert status == "error" and ("MultiHeadAttention comes from weeks/week2/day08_multi_head_attention.ipynb "
                                  "(Days 8-9), which is not there: put your Days 8-9 notebook there") in text, text
    status, text = kernel("from autograder.earlier import padding_mak")
    assert status == "error" and "did you mean 'padding_mask'" in text, text


def test_published_references_can_be_chosen(repo, kernel):
    """After `release --publish-references week1`, can a student whose Day 6 padding_mask is a stub take the
    reference one (that piece alone, or every published piece), while unpublished weeks say they are not yet
    published, and do the references stay published when the instructor releases again?"""
    status, text = kernel('from autograder import earlier; earlier.use("reference")\n'
                          "from autograder.earlier import padding_mask")
    assert status == "error" and "whose references are not published yet" in text, text
    write(repo, D08, {})  # released again below: the notebooks in the repository are refreshed
    release(COURSE, repo, publish=["week1"], now=LATER, log=lambda *a: None)
    published = repo / "autograder" / "published" / f"{D06}.py"
    assert published.is_file() and "def padding_mask" in published.read_text()
    assert not (repo / "autograder" / "published" / f"{D08}.py").exists()
    assert "Published so far: the references of" in (readme := (repo / "README.md").read_text())
    assert f"Days 6-7 (`{D06}`)" in readme and D08 not in readme.split("Published so far")[1].split(".")[0]
    stub = next(c["source"] for c in notebook.read(ROOT / "weeks" / COURSE.notebook(D06).path).cells
                if notebook.grade_id(c) == "padding_mask")
    write(repo, D06, {"*": "solution", "padding_mask": stub})
    write(repo, D08, {"*": "solution"})
    status, text = kernel('earlier.use("own")\n' + import_line(D10))
    assert status == "error" and 'use the published references (from autograder import earlier; ' \
        'earlier.use("reference"), or earlier.use("reference", "padding_mask") for this piece only)' in text, text
    status, text = kernel('earlier.use("reference", "padding_mask")\n' + import_line(D10) + PROBE)
    assert status == "ok", text
    assert "day08_multi_head_attention reference.day06_scaled_dot_product_attention (2, 3, 8) 0.0" in text, text
    status, text = kernel('earlier.use("reference")\n' + import_line(D10))
    assert status == "error" and ("MultiHeadAttention comes from Days 8-9, whose references are not published "
                                  "yet") in text, text
    release(COURSE, repo, [D10], log=lambda *a: None)  # a later release keeps what was published
    assert published.is_file()


def test_publishing_waits_for_the_due_date(tmp_path):
    """Does publishing refuse before the week's due date (and grace), and warn while late work still scores?"""
    data = yaml.safe_load((ROOT / "course.yml").read_text())
    due = datetime(2026, 1, 16, 23, 59, tzinfo=timezone(timedelta(hours=1)))
    data["weeks"][0]["due"] = due.isoformat()
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    course = load_course(tmp_path / "course.yml")
    week1 = list(course.weeks[0].notebooks)
    with pytest.raises(ReleaseError, match=r"week1 is due 2026-01-16T23:59:00\+01:00.*publish its references after"):
        publishable(course, week1, now=due)
    just_after = due + timedelta(minutes=course.late.grace_minutes + 1)
    warnings = publishable(course, week1, now=just_after)
    assert len(warnings) == 1 and "late work for week1" in warnings[0] and "can read its references" in warnings[0]
    if course.late.zero_after_days:
        assert publishable(course, week1, now=LATER) == []
    with pytest.raises(ReleaseError, match="holds no release yet"):
        release(course, tmp_path / "empty", publish=["week1"], now=LATER, log=lambda *a: None)


# --- grading ----------------------------------------------------------------------------------------------------


def pasted(nb: nbformat.NotebookNode, nb_id: str) -> nbformat.NotebookNode:
    """A student's notebook `nb_id`, with the earlier pieces pasted in place of the import line (as before)."""
    names = earlier.imported_names([import_line(nb_id)])
    owners = {COURSE.item(name)[0].id for name in names}
    if D08 in owners:  # its MultiHeadAttention calls these, which had to be pasted too
        names = ["scaled_dot_product_attention", "split_heads", "merge_heads"] + names
    code = "\n\n".join(demo.solution_sources(COURSE.item(name)[0])[name] for name in dict.fromkeys(names))
    for cell in nb.cells:
        if cell.cell_type == "code" and "from autograder.earlier import" in cell.source:
            cell.source = code
    return nb


def test_grading_with_the_import_line_scores_as_with_pasted_code(fast_course, tmp_path):
    """Is a Days 10-12 notebook that imports its earlier pieces graded exactly as the same notebook with those
    pieces pasted in (complete, and with one layer wrong), the import (after a choice of `earlier.use`, too)
    resolving to the course's references in the sandbox, where the student's earlier notebooks are not?"""
    from autograder.grade import grade_all
    from autograder.gradebook import Gradebook

    nb = COURSE.notebook(D10)
    enc = demo.solution_sources(nb)["EncoderLayer"]
    unmasked = enc.replace("self.self_attn(x, x, x, src_mask)", "self.self_attn(x, x, x)")
    assert unmasked != enc
    students = {"complete": {"*": "solution"}, "unmasked": {"*": "solution", "EncoderLayer": unmasked}}
    submitted = tmp_path / "submitted"
    for student, edits in students.items():
        for form in ("imported", "pasted"):
            made = demo.make_notebook(nb, edits)
            if student == "unmasked" and form == "imported":  # a choice of references is harmless under grading
                cell = next(c for c in made.cells if c.cell_type == "code" and "autograder.earlier" in c.source)
                cell.source = 'from autograder import earlier; earlier.use("reference", "padding_mask")\n' + cell.source
            path = submitted / f"{student}_{form}" / nb.path
            path.parent.mkdir(parents=True)
            nbformat.write(made if form == "imported" else pasted(made, D10), path)
    grade_all(fast_course, submitted, tmp_path / "out", workers=2, progress=None, pages=False)
    rows = gradebook_rows(tmp_path / "out")
    for student in students:
        imported, pasted_row = rows[f"{student}_imported"], rows[f"{student}_pasted"]
        assert {i.id: imported[i.id] for i in nb.auto_items} == {i.id: pasted_row[i.id] for i in nb.auto_items}
    assert all(float(rows["complete_imported"][i.id]) == i.points for i in nb.auto_items)
    book = Gradebook(tmp_path / "out" / "gradebook.db")
    for student in rows:
        [result] = book.results(student)
        assert result["cell_problems"] == [], (student, result["cell_problems"])  # the import line ran
    book.close()
    assert [i.id for i in nb.auto_items if float(rows["unmasked_imported"][i.id]) < i.points] == ["EncoderLayer"]
