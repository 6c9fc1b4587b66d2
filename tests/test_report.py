"""Feedback pages, the class report and the notebook's check card, read as files (the browser tests render them)."""
from __future__ import annotations

import base64
import copy
import csv
import json
import re
import sqlite3

import pytest

from autograder import classreport, pictures, report
from autograder.compare import CaseResult
from conftest import gradebook_rows

D06 = "day06_scaled_dot_product_attention"
IMG = re.compile(r"<img src='([^']*)'")
FIGURE = re.compile(r"<figure class='picture' data-case='([^']*)' data-output='([^']*)'>")


def details(out) -> dict[str, list[dict]]:
    """Every student's stored results, from the gradebook."""
    db = sqlite3.connect(out / "gradebook.db")
    rows: dict[str, list[dict]] = {}
    for student, detail in db.execute("SELECT student_id, detail FROM submissions ORDER BY student_id, notebook_id"):
        rows.setdefault(student, []).append(json.loads(detail))
    db.close()
    return rows


def png_size(uri: str) -> tuple[int, int]:
    """Width and height of a PNG data URI; fails unless it is one."""
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    data = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def page(out, student: str) -> str:
    return (out / "feedback" / f"{student}.html").read_text()


def test_feedback_pages_are_self_contained(graded_demo):
    """Does every feedback page load nothing from elsewhere: no script, no stylesheet link, no remote URL?"""
    _, out = graded_demo
    pages = sorted((out / "feedback").glob("*.html"))
    assert len(pages) == len(gradebook_rows(out))
    for path in pages:
        text = path.read_text()
        assert text.startswith("<!doctype html>")
        assert "<script" not in text.lower() and "<link" not in text.lower(), path.name
        assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//|file:)", text, re.I), path.name
        for uri in IMG.findall(text):
            w, h = png_size(uri)
            assert w > 50 and h > 30, (path.name, w, h)


def test_mistake_page_explains_and_shows_the_attention_weights(graded_demo):
    """Does a student who forgot the scaling get the named mistake, the fix, the numbers, and heat maps of
    their attention weights beside the expected ones on a public case?"""
    _, out = graded_demo
    text = page(out, "cleo_no_scaling")
    assert "Likely mistake:</b> the scores are not scaled" in text and "How to fix it:</b> divide" in text
    assert "largest difference" in text and "values differ" in text
    figures = FIGURE.findall(text)
    assert ("weights" in {o for _, o in figures}), figures
    public = {c["case"] for nb in details(out)["cleo_no_scaling"] for i in nb["items"] for c in i["cases"]
              if c["public"]}
    assert {case for case, _ in figures} <= public
    assert len(IMG.findall(text)) == len(figures) <= report.MAX_PICTURES * 5


def test_mask_mistake_shows_the_mask(graded_demo):
    """Does a wrong causal mask come with a picture of the student's mask beside the right one?"""
    _, out = graded_demo
    text = page(out, "gus_mask_shifted")
    drawn = FIGURE.findall(text)
    assert ("size-7-device", "mask") in drawn, drawn  # the largest failing public case is the one drawn
    assert "hides the diagonal" in text and "True where False was expected" in text


def test_no_picture_or_sample_of_a_hidden_case(graded_demo):
    """Are hidden cases never drawn, on any page, and do they never carry samples in the gradebook?"""
    _, out = graded_demo
    for student, notebooks in details(out).items():
        hidden = set()
        for nb in notebooks:
            for item in nb["items"]:
                for case in item["cases"]:
                    if not case["public"]:
                        assert not case["samples"], (student, item["id"], case["case"])
                        hidden.add(case["case"])
        drawn = {case for case, _ in FIGURE.findall(page(out, student))}
        public = {c["case"] for nb in notebooks for i in nb["items"] for c in i["cases"] if c["public"]}
        assert drawn <= public, (student, drawn - public)


def test_samples_of_a_hidden_case_are_never_drawn(graded_demo, course):
    """If a stored result ever carried samples for a hidden case, would the page still leave them out?"""
    _, out = graded_demo
    results = copy.deepcopy(details(out)["cleo_no_scaling"])
    item = next(i for nb in results for i in nb["items"] if i["id"] == "scaled_dot_product_attention")
    public = next(c for c in item["cases"] if c["public"] and c["samples"])
    for case in item["cases"]:
        if case["public"]:
            case["passed"], case["samples"] = True, {}
        else:
            case["samples"] = copy.deepcopy(public["samples"])
    text = report.feedback_html(course, "cleo_no_scaling", results)
    assert IMG.findall(text) == [] and FIGURE.findall(text) == []
    assert report.picture_case(item) is None


def test_stub_and_hostile_pages_say_what_to_do(graded_demo):
    """Does an untouched notebook get told to replace the stub (and, for a quiz, that it has no answer yet), and a
    killed item the reason it stopped?"""
    _, out = graded_demo
    assert "still the stub" in page(out, "ben_untouched")
    assert "No answer yet: the answer cell still holds its placeholder (None)" in page(out, "ben_untouched")
    assert "ended itself" in page(out, "hal_hostile")


def test_an_unanswered_quiz_counts_as_not_attempted(graded_demo):
    """In the class report, is an answer left as the released placeholder (None) counted as not attempted, like
    a function left as its stub, rather than as wrong values?"""
    from autograder.classreport import cause_of
    from autograder.gradebook import Gradebook

    _, out = graded_demo
    book = Gradebook(out / "gradebook.db")
    try:
        items = {it["id"]: it for nb in book.results("ben_untouched") for it in nb["items"]}
    finally:
        book.close()
    answers = ("quiz_rnn_long_range", "hand_attention", "quiz_sqrt_dk", "quiz_architecture_for_task", "diagram_labels")
    assert {i: cause_of(items[i]) for i in answers} == dict.fromkeys(answers, "stub")
    assert cause_of(items["causal_mask"]) == "stub"


def test_failed_cells_are_numbered_as_jupyter_shows_them(graded_demo, demo_class):
    """Does the feedback page name each cell that failed by its code cell number (Jupyter's In [n] after Run All,
    markdown cells not counted), the cell that really raised that error?"""
    import nbformat

    from autograder.gradebook import Gradebook

    _, out = graded_demo
    book = Gradebook(out / "gradebook.db")
    try:
        result = next(r for r in book.results("hal_hostile") if r["cell_problems"])
    finally:
        book.close()
    path = next(demo_class.glob(f"hal_hostile/*/{result['notebook_id']}.ipynb"))
    cells = nbformat.read(path, as_version=4).cells
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    text = page(out, "hal_hostile")
    for problem in result["cell_problems"]:
        assert problem["number"] == code.index(problem["index"]) + 1 != problem["index"] + 1
        assert f"code cell {problem['number']}: <code>" in text
    raised = {p["error"].split(":")[0]: cells[p["index"]].source for p in result["cell_problems"]}
    assert "sys.exit(0)" in raised["SystemExit"]  # the +exit cell of demo/classes: the number names that cell


def test_unchanged_pages_are_not_redrawn(graded_demo, course, tmp_path):
    """Does writing the outputs again leave unchanged pages alone, and rewrite a page whose results changed?"""
    import shutil

    from autograder.gradebook import Gradebook

    _, out = graded_demo
    copy_out = tmp_path / "out"
    shutil.copytree(out, copy_out)
    book = Gradebook(copy_out / "gradebook.db")
    before = {p.name: p.stat().st_mtime_ns for p in (copy_out / "feedback").glob("*.html")}
    report.write_outputs(course, book, copy_out)
    after = {p.name: p.stat().st_mtime_ns for p in (copy_out / "feedback").glob("*.html")}
    assert before == after
    results = book.results("ada_complete")[0]
    results["items"][0]["score"] = 0.0
    book.record("ada_complete", results["notebook_id"], "changed", results)
    report.write_outputs(course, book, copy_out)
    book.close()
    assert (copy_out / "feedback" / "ada_complete.html").stat().st_mtime_ns != before["ada_complete.html"]
    assert (copy_out / "feedback" / "cleo_no_scaling.html").stat().st_mtime_ns == before["cleo_no_scaling.html"]


def test_class_report_counts_mistakes_and_failures(graded_demo):
    """Does report.html name the diagnosed mistakes with their counts and students, rank failing items,
    plot the distributions, and give the grading time?"""
    summary, out = graded_demo
    text = (out / "report.html").read_text()
    for section in ("totals", "distributions", "mistakes", "failing", "timing"):
        assert f"<section id='{section}'>" in text
    assert "<script" not in text.lower()
    assert "the scores are not scaled" in text and "href='feedback/cleo_no_scaling.html'" in text
    assert "This run: <b>" in text and "submission(s) graded" in text
    uris = IMG.findall(text)
    assert len(uris) >= 3 and all(png_size(u)[0] > 200 for u in uris)
    assert f"for {summary['graded']} submission(s) graded" in text


def test_report_csv_agrees_with_the_gradebook(graded_demo):
    """Do report.csv's per-item means and failure counts match gradebook.csv, and mistakes.csv the pages?"""
    _, out = graded_demo
    rows = gradebook_rows(out)
    with open(out / "report.csv", newline="") as f:
        report_rows = list(csv.DictReader(f))
    assert report_rows and set(report_rows[0]) == set(classreport.REPORT_COLUMNS)
    items = [r for r in report_rows if r["kind"] == "item"]
    assert any(r["item"] == "scaled_dot_product_attention" for r in items)
    graded_students = {s for s, nbs in details(out).items() if any(nb["notebook_id"] == D06 for nb in nbs)}
    for r in items:
        if r["notebook"] != D06:
            continue
        values = [float(rows[s][r["item"]]) for s in graded_students]
        assert int(r["students"]) == len(values)
        assert float(r["mean"]) == pytest.approx(sum(values) / len(values), abs=1e-3)
        assert int(r["failed"]) == sum(v < float(r["max_score"]) for v in values)
        causes = sum(int(r[f"failed_{c}"]) for c in classreport.CAUSES)
        assert causes == int(r["failed"]), r
    with open(out / "mistakes.csv", newline="") as f:
        mistakes = {(m["item"], m["mistake"]): m for m in csv.DictReader(f)}
    assert "cleo_no_scaling" in mistakes[("scaled_dot_product_attention", "no_scaling")]["students"]
    assert "gus_mask_shifted" in mistakes[("causal_mask", "diagonal_excluded")]["students"]


def test_pictures_of_each_kind_are_pngs():
    """Do a 1-D schedule, a 2-D heat map with NaN, a boolean mask and an encoding each give a PNG and a caption
    that says what the colours mean?"""
    import numpy as np

    steps = np.arange(1, 81)
    lr = np.minimum(steps ** -0.5, steps * 10 ** -1.5)
    got = (lr * 2).tolist()
    got[5] = float("nan")
    uri, caption = pictures.sample_picture("lr", got, lr.tolist())
    assert png_size(uri)[0] > 200 and "over the expected" in caption and "1 NaN" in caption
    weights = np.full((4, 5), 0.2)
    broken = weights.copy()
    broken[2] = np.nan
    uri, caption = pictures.sample_picture("weights", broken.tolist(), weights.tolist())
    assert png_size(uri)[0] > 300 and "5 in yours" in caption
    right = np.tril(np.ones((6, 6)))
    uri, caption = pictures.sample_picture("mask", np.tril(np.ones((6, 6)), -1).tolist(), right.tolist())
    assert png_size(uri)[0] > 300 and "True where False" in caption
    pe = np.sin(np.arange(40)[:, None] / 10000 ** (np.arange(32)[None] / 32))
    assert png_size(pictures.sample_picture("pe", (pe * 0.5).tolist(), pe.tolist())[0])[1] > 100
    assert pictures.sample_picture("x", [[1.0, 2.0]], [1.0, 2.0]) is None
    assert pictures.sample_picture("x", [[[1.0]]], [[[1.0]]]) is None


def test_check_card_text_and_html():
    """Is check()'s result clean plain text for a terminal and a compact, escaped HTML card for Jupyter?"""
    from autograder.check import CheckReport  # imported late: the submodule shadows autograder.check
    mistake = {"name": "no_scaling", "title": "the scores are not scaled", "hint": "divide by sqrt(d_k)"}
    failing = [CaseResult("f", f"case-{i}", True, "<b>note</b>", False, 0.0, 0.25,
                          ["output: 3 of 4 values differ; largest difference 0.5"], mistake) for i in range(5)]
    passing = CaseResult("f", "ok", True, "", True, 0.25, 0.25)
    card = CheckReport("f", [passing, *failing])
    text = card.text()
    assert text.startswith("FAIL f: 1/6 public cases passed")
    assert "<" not in text.replace("<b>note</b>", "") and "\x1b[" not in text
    assert "Likely mistake: the scores are not scaled." in text and repr(card) == text
    page_html = card._repr_html_()
    assert "FAIL" in page_html and "&lt;b&gt;note&lt;/b&gt;" in page_html and "<b>note</b>" not in page_html
    assert page_html.count("<details>") == 1 and "2 more failing cases" in page_html
    ok = CheckReport("f", [passing])._repr_html_()
    assert "PASS" in ok and "1 of 1 public cases passed" in ok and "#17702b" in ok
    stopped = CheckReport("f", [], "f is not defined")
    assert stopped.text() == "FAIL f: f is not defined" and "f is not defined" in stopped._repr_html_()


def test_results_json_keeps_the_gradescope_schema(graded_demo):
    """Does results.json still carry Gradescope's fields, one test per case, with no pictures in it?"""
    _, out = graded_demo
    data = json.loads((out / "results" / "cleo_no_scaling.json").read_text())
    assert {"score", "tests", "output", "visibility", "execution_time"} <= set(data)
    for t in data["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility"}
    assert "data:image" not in json.dumps(data)
