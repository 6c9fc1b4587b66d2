"""The source notebooks: one canonical stored form, consistent with course.yml and the exercises."""
from __future__ import annotations

import nbformat
import pytest

from autograder import notebook, source
from autograder.config import ROOT, load_course
from autograder.exercise import exercises, hidden_module

NOTEBOOKS = load_course().notebooks


def test_sources_are_normalized(course):
    """Are all solutions/ notebooks stored without outputs and with canonical metadata?"""
    assert source.stale_sources(course) == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_every_item_has_its_cells(nb):
    """Does every auto item have a solution cell and a test_<id> cell, with course.yml's points?"""
    src = nbformat.read(ROOT / "solutions" / nb.path, as_version=4)
    meta = {notebook.nbgrader_meta(c).get("grade_id"): notebook.nbgrader_meta(c) for c in src.cells}
    for item in nb.items:
        assert item.id in meta, f"{nb.id}: no cell with grade_id {item.id}"
        if item.manual:
            assert meta[item.id]["grade"] and meta[item.id]["points"] == item.points
        else:
            assert meta[item.id]["solution"]
            assert meta[f"test_{item.id}"]["points"] == item.points


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_exercises_match_course(nb):
    """Is the list of items written once: do course.yml, exercises and hidden cases agree exactly?"""
    auto = [i.id for i in nb.auto_items]
    assert [ex.id for ex in exercises(nb.id).values()] == auto
    hidden = hidden_module(nb.id)
    assert sorted(hidden.HIDDEN_CASES) == sorted(auto)
    assert set(hidden.MISTAKES) <= set(auto)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_needs_come_earlier(course, nb):
    """Does every item graded with reference pieces only use pieces graded before it?"""
    order = course.item_ids
    for ex in exercises(nb.id).values():
        for need in ex.needs:
            assert order.index(need) < order.index(ex.id), f"{ex.id} needs {need}, which comes later"


def test_normalize_fills_points_from_course(course):
    """Does normalize take points from course.yml rather than from the draft?"""
    nb06 = course.notebook("day06_scaled_dot_product_attention")
    draft = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("check(causal_mask)", metadata={"nbgrader": {"grade_id": "test_causal_mask", "grade": True, "points": 99}}),
    ])
    out = source.normalize(draft, nb06)
    cell = out.cells[0]
    points = course.item("causal_mask")[1].points
    assert cell.id == "test_causal_mask" and cell.metadata.nbgrader["points"] == points and cell.metadata.nbgrader["locked"]


def test_normalize_rejects_unknown_grade_id(course):
    """Is a cell whose grade_id is not an item of the notebook rejected with the notebook named?"""
    nb06 = course.notebook("day06_scaled_dot_product_attention")
    draft = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": "casual_mask", "solution": True}}),
    ])
    with pytest.raises(source.SourceError, match="casual_mask"):
        source.normalize(draft, nb06)
