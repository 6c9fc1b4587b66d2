"""Broken input: every malformed submission gets a clear message and costs nobody else anything."""
from __future__ import annotations

import copy
import json
import random

import nbformat
import pytest

from autograder import notebook
from autograder.config import ROOT, load_course
from autograder.grade import grade_all
from conftest import gradebook_rows, results_of
import students as demo_students

D06 = "day06_scaled_dot_product_attention"
RELEASE = ROOT / "weeks" / "week1" / f"{D06}.ipynb"


@pytest.mark.parametrize("content,phrase", [
    (b"", "the file is empty"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"cells": [', "not valid notebook JSON (line 1"),
    (b'{"hello": 1}', "not a Jupyter notebook"),
    (b'{"nbformat": 4, "cells": [{"cell_type": "code", "source": 7}]}', "source is not text"),
])
def test_unreadable_notebooks_are_explained(tmp_path, content, phrase):
    """Does each kind of unreadable file get a message naming the file and the problem?"""
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(notebook.NotebookError) as err:
        notebook.read(path)
    assert phrase in str(err.value) and str(path) in str(err.value)


def test_huge_notebook_is_refused(tmp_path, monkeypatch):
    """Is a notebook over the size limit refused with advice to clear outputs, before it is parsed?"""
    monkeypatch.setattr(notebook, "MAX_NOTEBOOK_BYTES", 1000)
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [], "x": "y" * 2000}))
    with pytest.raises(notebook.NotebookError, match="Clear Output"):
        notebook.read(path)


DEEP = json.loads("[" * 200 + "]" * 200)


@pytest.mark.parametrize("content", [
    "[" * 100_000,
    json.dumps({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "metadata": {"x": DEEP}}]}),
    "[" + "{}," * 600_000 + "{}]",
])
def test_too_deep_or_too_large_json_is_explained(tmp_path, content):
    """Is JSON nested very deeply, or made of very many tiny elements, refused with a NotebookError?"""
    path = tmp_path / "nb.ipynb"
    path.write_text(content)
    with pytest.raises(notebook.NotebookError, match="not a notebook Jupyter writes") as err:
        notebook.read(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("grade_id", [["checkpoint_sdpa"], {"id": "checkpoint_sdpa"}, 7, None])
def test_grade_id_of_another_type_is_ignored(tmp_path, grade_id):
    """Is a grade_id that is a list, a dict or a number read as no grade_id, by every accessor?"""
    data = json.loads(RELEASE.read_text())
    for cell in data["cells"]:
        if cell.get("id") in ("checkpoint_sdpa", "test_causal_mask", "causal_mask"):
            cell["metadata"]["nbgrader"]["grade_id"] = grade_id
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(data))
    nb, release = notebook.read(path), notebook.read(RELEASE)
    assert notebook.manual_answers(nb, {"checkpoint_sdpa"}) == {}
    assert notebook.manual_answers(release, {"checkpoint_sdpa"}) != {}
    run = [c.cell_id for c in notebook.cells_to_run(nb, release)]
    assert run == [c.cell_id for c in notebook.cells_to_run(release, release)] and "test_causal_mask" not in run


@pytest.mark.parametrize("mutate,readable", [
    (lambda cells: cells[5].update(metadata=["a"]), True),
    (lambda cells: cells[5].update(metadata={"nbgrader": [1], "tags": {"demo": 1}}), True),
    (lambda cells: cells[5]["metadata"].update(tags=["demo", {}, 3]), True),
    (lambda cells: cells[5].update(id=["x"]), True),
    (lambda cells: cells[5].update(id={"a": 1}, cell_type=7), True),
    (lambda cells: cells[5].update(source=["def f():\n", 3]), False),
    (lambda cells: cells.append(["not", "a", "cell"]), False),
    (lambda cells: cells.append("cell"), False),
])
def test_cells_of_wrong_types_are_ignored_or_explained(tmp_path, mutate, readable):
    """Do metadata, tags, ids and sources of the wrong type read as absent, or give a NotebookError?"""
    data = json.loads(RELEASE.read_text())
    mutate(data["cells"])
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(data))
    if not readable:
        with pytest.raises(notebook.NotebookError, match="save"):
            notebook.read(path)
        return
    nb = notebook.read(path)
    assert all(isinstance(c["id"], str) and isinstance(c["metadata"], dict) for c in nb.cells)
    assert notebook.cells_to_run(nb, notebook.read(RELEASE)) and notebook.manual_answers(nb, {"checkpoint_sdpa"})


def _mutations(rng, doc):
    """A copy of a notebook's JSON with a few values replaced, removed or nested deeply, at random places."""
    values = [None, True, 0, -1, 2.5, "", "test_x", "demo", [], {}, ["demo"], [1, [2]], {"nbgrader": []},
              {"grade_id": ["checkpoint_sdpa"]}, {"grade": True, "grade_id": {"a": 1}}, json.loads("[" * 90 + "]" * 90)]
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 4)):
        places, todo = [], [((), doc)]
        while todo:
            where, v = todo.pop()
            places.append(where)
            items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
            todo.extend((where + (k,), x) for k, x in items)
        where, new = rng.choice(places), rng.choice(values)
        if not where:
            doc = new
            continue
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and rng.random() < 0.3:
            parent.pop(where[-1])
        elif isinstance(parent, dict) and rng.random() < 0.3:
            parent[rng.choice(["metadata", "nbgrader", "grade_id", "tags", "id", "source", "cells", "nbformat"])] = new
        else:
            parent[where[-1]] = new
    return doc


def test_random_mutations_read_or_give_notebook_error(tmp_path):
    """On a few hundred random mutations of a real notebook (values, bytes, truncations), does `read` give
    a notebook or a NotebookError naming the file, and does every accessor then work?"""
    rng = random.Random(12)
    text = RELEASE.read_text()
    base, release = json.loads(text), notebook.read(RELEASE)
    path = tmp_path / f"{D06}.ipynb"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        kind = rng.random()
        if kind < 0.6:
            path.write_text(json.dumps(_mutations(rng, base)))
        elif kind < 0.9:
            data = bytearray(text.encode())
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(len(data))
                junk = rng.choice([b"[", b"{", b'"', b"\\", b",", b"]", b"\xff", b"null"])
                data[i:i + rng.randint(0, 20)] = junk * rng.randint(1, 40)
            path.write_bytes(bytes(data))
        else:
            path.write_text(text[:rng.randrange(len(text))])
        try:
            nb = notebook.read(path)
        except notebook.NotebookError as exc:
            assert str(path) in str(exc)
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        for cell in nb.cells:
            notebook.is_test_cell(cell), notebook.is_demo_cell(cell), notebook.grade_id(cell)
        notebook.cells_to_run(nb, release), notebook.cells_to_run(release, nb), notebook.cells_to_run(nb, None)
        assert all(isinstance(v, str) for v in notebook.manual_answers(nb, {"checkpoint_sdpa"}).values())
    assert outcomes["read"] > 30 and outcomes["refused"] > 30


def test_old_format_is_upgraded(tmp_path):
    """Is a version-3 notebook upgraded and read, with its code intact?"""
    nb4 = nbformat.read(RELEASE, as_version=4)
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(nbformat.convert(copy.deepcopy(nb4), 3)))
    nb = notebook.read(path)
    assert nb["nbformat"] == 4
    assert [c["source"] for c in nb.cells if c["cell_type"] == "code"] == [c.source for c in nb4.cells if c.cell_type == "code"]


def test_duplicate_and_missing_cell_ids_are_repaired(tmp_path):
    """Do duplicate or missing cell ids fall back to positions instead of failing?"""
    data = json.loads(RELEASE.read_text())
    data["cells"][1]["id"] = data["cells"][0]["id"]
    del data["cells"][2]["id"]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(data))
    ids = [c["id"] for c in notebook.read(path).cells]
    assert len(ids) == len(set(ids))


def test_test_and_demo_cells_are_skipped_even_when_edited():
    """Are the release's test and demo cells skipped by id, even if a student strips their metadata?"""
    release = notebook.read(RELEASE)
    submitted = json.loads(json.dumps(release))
    for cell in submitted["cells"]:
        cell["metadata"] = {}
        if cell["id"] == "test_causal_mask":
            cell["source"] = "print('I passed')"
    run = notebook.cells_to_run(notebook.Notebook(submitted), release)
    sources = [c.source for c in run]
    assert not any("check(" in s or "I passed" in s for s in sources)
    assert not any("plt.show()" in s for s in sources)
    assert any("def scaled_dot_product_attention" in s for s in sources)


@pytest.fixture(scope="module")
def broken_class(fast_course, tmp_path_factory):
    """A class where most students broke their notebook in a different way, graded once."""
    cls = tmp_path_factory.mktemp("broken")
    demo_students.write_class(cls, {
        "ok_student": {D06: {"*": "solution"}},
        "renamed_function": {D06: {"*": "solution", "causal_mask": "def causal_masks(size, device=None):\n    return None\n"}},
        "deleted_tests": {D06: {"*": "solution"}},
        "edited_tests": {D06: {"*": "solution"}},
        "old_format": {D06: {"*": "solution"}},
        "duplicate_ids": {D06: {"*": "solution"}},
        "syntax_error": {D06: {"*": "solution", "padding_mask": "def padding_mask(tokens, pad_id)\n    return tokens\n"}},
    })
    path = lambda s: cls / s / "week1" / f"{D06}.ipynb"  # noqa: E731
    nb = json.loads(path("deleted_tests").read_text())
    nb["cells"] = [c for c in nb["cells"] if not c["id"].startswith("test_")]
    path("deleted_tests").write_text(json.dumps(nb))
    nb = json.loads(path("edited_tests").read_text())
    for c in nb["cells"]:
        if c["id"].startswith("test_"):
            c["source"] = "assert True  # all good"
    path("edited_tests").write_text(json.dumps(nb))
    nb4 = nbformat.read(path("old_format"), as_version=4)
    path("old_format").write_text(nbformat.writes(nbformat.convert(nb4, 3)))
    nb = json.loads(path("duplicate_ids").read_text())
    for c in nb["cells"]:
        c["id"] = "same"
    path("duplicate_ids").write_text(json.dumps(nb))
    for name, content in {"empty_file": b"", "not_utf8": b"\xff\xfe\xfa", "truncated": b'{"cells": [{"cell'}.items():
        p = path(name)
        p.parent.mkdir(parents=True)
        p.write_bytes(content)
    out = tmp_path_factory.mktemp("broken-out")
    grade_all(fast_course, cls, out, workers=2, progress=None)
    return out


POINTS06 = {item.id: item.points for item in load_course().notebook(D06).auto_items}
"""Day 6's auto-graded items and their points (course.yml): what a working notebook earns."""


@pytest.mark.parametrize("student,total", [
    *((student, sum(POINTS06.values())) for student in
      ("ok_student", "deleted_tests", "edited_tests", "old_format", "duplicate_ids")),
    ("renamed_function", sum(POINTS06.values()) - POINTS06["causal_mask"]),
    ("syntax_error", sum(POINTS06.values()) - POINTS06["padding_mask"]),
    ("empty_file", 0), ("not_utf8", 0), ("truncated", 0),
])
def test_broken_submissions_score_what_they_deserve(broken_class, student, total):
    """Does each broken submission get exactly the points its working parts earn?"""
    assert float(gradebook_rows(broken_class)[student]["total"]) == total


def test_broken_submissions_are_explained(broken_class):
    """Do the messages say what is wrong and what to do?"""
    renamed = results_of(broken_class, "renamed_function")["causal_mask"]["output"]
    assert "causal_mask is not defined" in renamed and "keep the name" in renamed
    syntax = results_of(broken_class, "syntax_error")["padding_mask"]["output"]
    assert "SyntaxError" in syntax
    empty = json.loads((broken_class / "results" / "empty_file.json").read_text())
    assert "the file is empty" in empty["output"]
