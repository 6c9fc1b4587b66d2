"""Batch grading, end to end, on real notebooks in real sandboxes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from autograder import grade
from autograder.config import ROOT, load_course
from conftest import copy_class, gradebook_rows, results_of

D06 = "day06_scaled_dot_product_attention"
POINTS = {item.id: item.points for item in load_course().notebook(D06).items}
"""Day 6's items and their points, from course.yml."""


def test_pipeline_order():
    """Does every pipeline step come after the steps that give what it needs?"""
    given = {"path"}
    for step in grade.PIPELINE:
        missing = set(step.needs) - given
        assert not missing, f"{step.__name__} needs {missing} before it runs"
        given |= set(step.gives)


def test_reference_scores_full_marks(course, graded_demo):
    """Does the complete student (the reference solutions) get every auto-graded point of every notebook?"""
    _, out = graded_demo
    row = gradebook_rows(out)["ada_complete"]
    for nb in course.notebooks:
        for item in nb.auto_items:
            assert float(row[item.id]) == item.points, f"{item.id}: {row[item.id]}"


def test_stubs_score_zero_without_crashing(course, graded_demo):
    """Does an untouched release notebook get 0 everywhere, graded (not crashed), with a clear reason?"""
    _, out = graded_demo
    row = gradebook_rows(out)["ben_untouched"]
    assert float(row["total"]) == 0
    tests = results_of(out, "ben_untouched")
    assert all(t["score"] == 0 for t in tests.values())
    assert "NotImplementedError" in tests["causal_mask: size-4"]["output"]


@pytest.mark.parametrize("student,item,mistake", [
    ("cleo_no_scaling", "scaled_dot_product_attention", "the scores are not scaled"),
    ("dev_inverted_mask", "scaled_dot_product_attention", "the mask is inverted"),
    ("eli_query_softmax", "scaled_dot_product_attention", "the softmax runs over the query axis"),
    ("fay_minus_1e9", "scaled_dot_product_attention", "filled with -1e9"),
    ("gus_mask_shifted", "causal_mask", "hides the diagonal"),
    ("gus_mask_shifted", "padding_mask", "padding queries instead of padding keys"),
])
def test_realistic_mistakes_lose_points_and_are_named(course, graded_demo, student, item, mistake):
    """Does a student with one typical mistake lose points on that item only, with the mistake named?"""
    _, out = graded_demo
    row = gradebook_rows(out)[student]
    _, it = course.item(item)
    assert float(row[item]) < it.points
    tests = results_of(out, student)
    outputs = [t["output"] for name, t in tests.items() if name.startswith(item + ":") and t["status"] == "failed"]
    assert any(mistake in o for o in outputs), outputs[:2]
    wrong = {"gus_mask_shifted": {"causal_mask", "padding_mask"}}.get(student, {item})
    for other in course.notebook(D06).auto_items:
        if other.id not in wrong:
            assert float(row[other.id]) == other.points, other.id


def test_hostile_submission_is_contained(graded_demo):
    """Do a Tensor subclass, os._exit, an endless loop, sys.exit, patched allclose and a fake score get nothing,
    while the honest items of the same notebook are still graded?"""
    _, out = graded_demo
    row = gradebook_rows(out)["hal_hostile"]
    tests = results_of(out, "hal_hostile")
    assert float(row["scaled_dot_product_attention"]) == 0
    assert "subclass of torch.Tensor" in tests["scaled_dot_product_attention: 2d-float64"]["output"]
    assert float(row["causal_mask"]) == 0 and "ended itself" in tests["causal_mask"]["output"]
    assert float(row["attention_flops"]) == 0 and "CPU time" in tests["attention_flops"]["output"]
    assert float(row["padding_mask"]) == POINTS["padding_mask"] and float(row["quiz_sqrt_dk"]) == POINTS["quiz_sqrt_dk"]
    text = (out / "results" / "hal_hostile.json").read_text()
    assert "100/100" not in text
    detail = json.loads(subprocess.run(
        ["sqlite3", str(out / "gradebook.db"), "select detail from submissions where student_id='hal_hostile'"],
        capture_output=True, text=True).stdout or "{}") if shutil.which("sqlite3") else None
    if detail:
        errors = " ".join(c["error"] for c in detail["cell_problems"])
        assert "SystemExit" in errors and "ended itself" in errors


def test_patched_comparisons_gain_nothing(graded_demo):
    """Does a wrong answer stay wrong when the notebook patches torch.allclose, numpy and the grader's own
    comparison functions and prints a fake score (all of which fool a grader running in the student's kernel)?"""
    _, out = graded_demo
    row = gradebook_rows(out)["ivan_patcher"]
    assert float(row["scaled_dot_product_attention"]) == 0
    assert float(row["causal_mask"]) == POINTS["causal_mask"] and float(row["padding_mask"]) == POINTS["padding_mask"]
    assert "Total score: 8/8" not in (out / "results" / "ivan_patcher.json").read_text()


def test_other_students_unaffected(fast_course, demo_class, graded_demo, tmp_path):
    """Is the complete student's result the same graded alone as beside the hostile one?
    (Grading the same class twice, once under load, is test_load's question.)"""
    _, out = graded_demo
    alone = copy_class(demo_class, tmp_path / "alone", ["ada_complete"])
    out2 = tmp_path / "out2"
    grade.grade_all(fast_course, alone, out2, workers=1, progress=None)
    a = json.loads((out / "results" / "ada_complete.json").read_text())
    b = json.loads((out2 / "results" / "ada_complete.json").read_text())
    a.pop("execution_time"), b.pop("execution_time")
    assert a == b


def test_unchanged_submissions_are_not_regraded(fast_course, demo_class, tmp_path):
    """Does a second run over the same submissions skip them all, and re-grade only the one that changed?"""
    cls = copy_class(demo_class, tmp_path / "cls", ["ada_complete", "cleo_no_scaling"], [D06, "day03_attention_mechanism"])
    out = tmp_path / "out"
    first = grade.grade_all(fast_course, cls, out, workers=1, progress=None)
    second = grade.grade_all(fast_course, cls, out, workers=1, progress=None)
    assert second["graded"] == 0 and second["unchanged"] == first["graded"]
    nb = next((cls / "cleo_no_scaling").glob("*/*.ipynb"))
    nb.write_text(nb.read_text().replace("scores = torch.matmul(query, key.transpose(-2, -1))",
                                         "scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)"))
    third = grade.grade_all(fast_course, cls, out, workers=1, progress=None)
    assert third["graded"] == 1
    assert float(gradebook_rows(out)["cleo_no_scaling"]["scaled_dot_product_attention"]) == \
        POINTS["scaled_dot_product_attention"]


def test_unreadable_submission_is_recorded_not_fatal(fast_course, demo_class, tmp_path):
    """Does a corrupt notebook get 0 with a message naming the file, while the rest of the class is graded?"""
    cls = copy_class(demo_class, tmp_path / "cls", ["ada_complete"], [D06])
    bad = cls / "zed_broken" / "week1" / f"{D06}.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"cells": [ oops')
    out = tmp_path / "out"
    grade.grade_all(fast_course, cls, out, workers=1, progress=None)
    rows = gradebook_rows(out)
    assert float(rows["zed_broken"]["total"]) == 0
    assert float(rows["ada_complete"]["scaled_dot_product_attention"]) == POINTS["scaled_dot_product_attention"]
    data = json.loads((out / "results" / "zed_broken.json").read_text())
    assert "not valid notebook JSON" in data["output"] and str(bad) in data["output"]


def test_bad_student_ids_and_unknown_notebooks_are_skipped_with_a_warning(fast_course, demo_class, tmp_path):
    """Are a student folder with an unsafe name and an unknown notebook reported, not graded?"""
    cls = copy_class(demo_class, tmp_path / "cls", ["ada_complete"], [D06])
    src = next((cls / "ada_complete").glob("*/*.ipynb"))
    (cls / "bad name;rm").mkdir()
    (cls / "ada_complete" / "week1" / "day06_scaled_dot_product_attentoin.ipynb").write_text(src.read_text())
    summary = grade.grade_all(fast_course, cls, tmp_path / "out", workers=1, progress=None)
    problems = "\n".join(summary["problems"])
    assert "bad name;rm" in problems and "did you mean" in problems
    assert list(gradebook_rows(tmp_path / "out")) == ["ada_complete"]


def test_instructor_mistakes_exit_nonzero(tmp_path):
    """Does the grade command fail clearly (exit 2, no traceback) when the submissions folder is wrong?"""
    cmd = [sys.executable, "-m", "autograder", "grade", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "no such folder" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty").mkdir()
    res = subprocess.run(cmd[:4] + [str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "no submissions found" in res.stderr


def test_outputs_follow_gradescope_schema(graded_demo):
    """Does every results.json carry Gradescope's fields, with test names '<item>' or '<item>: <case>'?"""
    _, out = graded_demo
    for path in (out / "results").glob("*.json"):
        data = json.loads(path.read_text())
        assert isinstance(data["score"], (int, float)) and isinstance(data["tests"], list)
        for t in data["tests"]:
            assert set(t) >= {"name", "score", "max_score", "status", "output", "visibility"}
            assert t["status"] in ("passed", "failed") and 0 <= t["score"] <= t["max_score"] + 1e-9
        assert abs(sum(t["score"] for t in data["tests"]) - data["score"]) < 1e-3
    assert (out / "feedback" / "hal_hostile.html").read_text().startswith("<!doctype html>")


def test_no_pages_then_report(fast_course, demo_class, tmp_path):
    """Does `grade --no-pages` write only the gradebook and results.json, and `report` draw the pages later?"""
    cls = copy_class(demo_class, tmp_path / "cls", ["cleo_no_scaling"])
    out = tmp_path / "out"
    grade.grade_all(fast_course, cls, out, workers=1, progress=None, pages=False)
    assert (out / "gradebook.csv").exists() and (out / "results" / "cleo_no_scaling.json").exists()
    assert not (out / "feedback").exists() and not (out / "report.html").exists()
    res = subprocess.run([sys.executable, "-m", "autograder", "--course", str(fast_course.source), "report", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "the scores are not scaled" in (out / "feedback" / "cleo_no_scaling.html").read_text()
    assert (out / "report.html").exists()


def test_changed_points_are_regraded(demo_class, tmp_path):
    """After an instructor changes an item's points in course.yml, does `grade` regrade and show the new points
    (instead of "0 graded, all unchanged" with the old ones)?"""
    import yaml

    from autograder.config import load_course
    from conftest import fast_course_file

    path = fast_course_file(tmp_path)
    cls = copy_class(demo_class, tmp_path / "cls", ["ada_complete"], [D06, "day03_attention_mechanism"])
    out = tmp_path / "out"
    grade.grade_all(load_course(path), cls, out, workers=1, progress=None, pages=False)
    assert float(gradebook_rows(out)["ada_complete"]["causal_mask"]) == POINTS["causal_mask"]
    data = yaml.safe_load(path.read_text())
    for week in data["weeks"]:
        for nb in week["notebooks"]:
            for item in nb["items"]:
                if item["id"] == "causal_mask":
                    item["points"] = 3
    path.write_text(yaml.safe_dump(data))
    again = grade.grade_all(load_course(path), cls, out, workers=1, progress=None, pages=False)
    assert again["graded"] >= 1
    assert float(gradebook_rows(out)["ada_complete"]["causal_mask"]) == 3


def test_stale_weeks_refuse_to_grade(tmp_path, demo_class):
    """When weeks/ is older than solutions/, does `grade` refuse with exit 2 and say to run build?"""
    course = tmp_path / "course"
    for part in ("autograder", "solutions", "weeks"):
        shutil.copytree(ROOT / part, course / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "course.yml", course / "course.yml")
    release = course / "weeks" / "week1" / f"{D06}.ipynb"
    release.write_text(release.read_text().replace("Scaled", "Scaled (old)", 1))
    cls = copy_class(demo_class, tmp_path / "cls", ["ada_complete"])
    res = subprocess.run([sys.executable, "-m", "autograder", "grade", str(cls), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=course, env={**__import__("os").environ, "PYTHONPATH": str(course)})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "cannot grade" in res.stderr and "autograder build" in res.stderr and "Traceback" not in res.stderr
