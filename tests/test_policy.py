"""Due dates and the late policy, free-text answers graded by hand, and the Canvas export."""
from __future__ import annotations

import csv
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from autograder.__main__ import main
from autograder.config import ROOT, ConfigError, LatePolicy, load_course
from autograder.gradebook import Gradebook, csv_row
from autograder.policy import (
    FLAG_ANSWERED, FLAG_CHANGED, PolicyError, assess_late, export_canvas, export_manual, format_timestamp, lateness,
    read_manual_points,
)

COURSE = load_course()
NB = COURSE.notebook("day06_scaled_dot_product_attention")
MANUAL = next(i for i in NB.items if i.manual)
POSSIBLE = sum(i.points for i in NB.items if not i.extra_credit)
"""The notebook's points possible: what a late penalty is a fraction of."""
POLICY = LatePolicy(grace_minutes=15, penalty_per_day=0.1, max_penalty=0.5, zero_after_days=7)
DUE = datetime(2026, 1, 16, 23, 59, tzinfo=timezone(timedelta(hours=1)))


def course_file(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((ROOT / "course.yml").read_text())
    mutate(data)
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def with_due(tmp_path: Path, due="2026-01-16T23:59:00+01:00"):
    def mutate(data):
        for week in data["weeks"]:
            if week["id"] == NB.week:
                week["due"] = due
    return load_course(course_file(tmp_path, mutate))


@pytest.mark.parametrize("after, penalty", [
    (timedelta(minutes=-5), 0.0),            # on time
    (timedelta(minutes=14), 0.0),            # within the grace period
    (timedelta(minutes=16), 0.1),            # one started day past the grace period
    (timedelta(days=1, minutes=15), 0.1),    # exactly one day past the grace period
    (timedelta(days=2, hours=3), 0.3),
    (timedelta(days=6, hours=1), 0.5),       # capped by max_penalty
    (timedelta(days=7, minutes=16), 1.0),    # past the cut-off: no points
])
def test_lateness_follows_the_policy(after, penalty):
    """Is the fraction taken off what the policy says, from grace period to cut-off?"""
    result = lateness(DUE + after, DUE, POLICY)
    assert result.penalty == pytest.approx(penalty)
    assert result.minutes_late == pytest.approx(max(0.0, after.total_seconds() / 60))


def test_no_due_date_or_no_time_is_never_late():
    """Is a week without a due date, or a submission without a time, taken as on time (and the latter said so)?"""
    assert lateness(DUE + timedelta(days=30), None, POLICY).penalty == 0
    undated = lateness(None, DUE, POLICY)
    assert undated.penalty == 0 and "no submission time" in undated.note


def test_due_dates_and_policy_are_validated(tmp_path):
    """Are due dates read with their offset, and are a missing offset, a bare date and a bad fraction rejected by name?"""
    assert next(w for w in with_due(tmp_path).weeks if w.id == NB.week).due == DUE
    assert next(w for w in with_due(tmp_path, DUE).weeks if w.id == NB.week).due == DUE  # a YAML timestamp
    with pytest.raises(ConfigError, match=rf"course\.weeks\[0\]\.due has no UTC offset"):
        with_due(tmp_path, "2026-01-16T23:59:00")
    with pytest.raises(ConfigError, match="has no time of day"):
        with_due(tmp_path, datetime(2026, 1, 16).date())
    with pytest.raises(ConfigError, match="should be a date, a time and a UTC offset"):
        with_due(tmp_path, "next friday")
    with pytest.raises(ConfigError, match=r"late\.max_penalty is a fraction"):
        load_course(course_file(tmp_path, lambda d: d["late"].update(max_penalty=50)))
    with pytest.raises(ConfigError, match="did you mean 'grace_minutes'"):
        load_course(course_file(tmp_path, lambda d: d["late"].update(grace_minute=5)))
    defaults = load_course(course_file(tmp_path, lambda d: d.pop("late")))
    assert defaults.late == LatePolicy() and lateness(DUE + timedelta(days=3), DUE, defaults.late).penalty == 0


def result(student_points: dict[str, float], answer: str) -> dict:
    """A graded submission of the Days 6-7 notebook as the grader stores it."""
    items = [{"id": i.id, "score": student_points.get(i.id, 0.0), "max_score": i.points, "manual": i.manual,
              "mistake": None, "cases": [], "message": ""} for i in NB.items]
    return {"student_id": "", "notebook_id": NB.id, "title": NB.title, "status": "graded", "message": "",
            "seconds": 1.0, "items": items, "cell_problems": [], "manual": {MANUAL.id: answer}}


@pytest.fixture
def graded(tmp_path):
    """A gradebook with three students (one late, one undated) and their SUBMITTED folder."""
    book = Gradebook(tmp_path / "gradebook.db")
    full = {i.id: i.points for i in NB.auto_items}
    book.record("ada", NB.id, "d1", result(full, "Without the mask the model copies the next token <b>."))
    book.record("ben", NB.id, "d2", result({}, "YOUR ANSWER HERE"))
    book.record("cyd", NB.id, "d3", result(full, "Padding keys carry no information."))
    submitted = tmp_path / "submitted"
    for student, when in (("ada", DUE - timedelta(hours=1)), ("cyd", DUE + timedelta(days=2, hours=1))):
        folder = submitted / student / NB.week
        folder.mkdir(parents=True)
        (folder / "timestamp.txt").write_text(format_timestamp(when))
    (submitted / "ben" / NB.week).mkdir(parents=True)
    yield book, submitted, tmp_path
    book.close()


def rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def test_late_penalty_reaches_the_gradebook(graded):
    """Does a late submission lose its fraction of the notebook's points possible in gradebook.csv, and only it?"""
    book, submitted, tmp = graded
    no_due = load_course(course_file(tmp, lambda d: [w.pop("due", None) for w in d["weeks"]]))
    assert assess_late(no_due, book, submitted) == []  # no due dates: nothing is assessed
    book.export_csv(tmp / "gradebook.csv", COURSE.item_ids, set())
    assert "late_penalty" not in next(iter(rows(tmp / "gradebook.csv").values()))
    course = with_due(tmp)
    lines = assess_late(course, book, submitted)
    assert any(l.startswith("cyd") and "3 day(s) late" in l for l in lines)
    assert any(l.startswith("ben") and "no submission time" in l for l in lines)
    book.export_csv(tmp / "gradebook.csv", course.item_ids, set())
    table = rows(tmp / "gradebook.csv")
    auto = sum(i.points for i in NB.auto_items)
    assert list(table["ada"])[-2:] == ["late_penalty", "total"]
    assert float(table["ada"]["late_penalty"]) == 0 and float(table["ada"]["total"]) == auto
    assert auto < POSSIBLE  # the free-text item is not graded yet: earned and possible differ
    assert float(table["cyd"]["late_penalty"]) == pytest.approx(0.3 * POSSIBLE)
    assert float(table["cyd"]["total"]) == pytest.approx(auto - 0.3 * POSSIBLE)
    assert float(table["cyd"][NB.auto_items[0].id]) == NB.auto_items[0].points  # items keep their own scores


def test_manual_answers_export_and_points_merge(graded):
    """Are answers exported (CSV and escaped HTML), and do the points entered show in gradebook.csv and survive regrading?"""
    book, submitted, tmp = graded
    csv_path, html_path, n = export_manual(COURSE, book, tmp)
    assert n == 3
    exported = rows(csv_path)
    assert exported["ben"]["points"] == "0" and exported["ben"]["comment"] == "no answer"  # nothing written
    assert exported["ada"]["points"] == "" and "copies the next token" in exported["ada"]["answer"]
    page = html_path.read_text()
    assert "&lt;b&gt;" in page and "<b>." not in page
    assert "padding mask hide padding" in page  # the question, from the student notebook
    filled = tmp / "filled.csv"
    with open(csv_path, newline="") as f, open(filled, "w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["student_id"] == "ada":
                row.update(points="1.5", comment="clear")
            writer.writerow(row)
    book.set_manual_scores(read_manual_points(COURSE, book, filled))
    book.export_csv(tmp / "gradebook.csv", COURSE.item_ids, set())
    table = rows(tmp / "gradebook.csv")
    assert float(table["ada"][MANUAL.id]) == 1.5
    assert float(table["ada"]["total"]) == sum(i.points for i in NB.auto_items) + 1.5
    book.record("ada", NB.id, "d1-again", result({}, "regraded"))
    assert book.scores()["ada"][MANUAL.id] == 1.5
    again = rows(export_manual(COURSE, book, tmp)[0])
    assert again["ada"]["points"] == "1.5" and again["ada"]["comment"] == "clear"


def test_bad_points_file_names_every_problem_and_enters_nothing(graded):
    """Are points above the maximum, unknown students or items, non-numbers and duplicates all reported, with nothing entered?"""
    book, _, tmp = graded
    bad = tmp / "bad.csv"
    bad.write_text("student_id,item_id,points,comment\n"
                   f"ada,{MANUAL.id},{MANUAL.points + 1},\n"
                   f"zoe,{MANUAL.id},1,\n"
                   f"ada,{NB.auto_items[0].id},1,\n"
                   f"ben,{MANUAL.id},lots,\n"
                   f"cyd,{MANUAL.id},1,\n"
                   f"cyd,{MANUAL.id},2,\n")
    with pytest.raises(PolicyError) as err:
        read_manual_points(COURSE, book, bad)
    message = str(err.value)
    for expected in ("line 2: points", "outside 0..", "line 3: student 'zoe'", "line 4:", "not a free-text item",
                     "line 5: points 'lots' is not a number", "line 7: a second row"):
        assert expected in message
    assert book.manual_scores() == {}
    (tmp / "nocolumn.csv").write_text("student,item\nada,x\n")
    with pytest.raises(PolicyError, match="missing column"):
        read_manual_points(COURSE, book, tmp / "nocolumn.csv")


def test_canvas_export_has_canvas_columns_and_net_points(graded):
    """Is canvas.csv in Canvas's import format, one column per notebook, net of late penalties, matched to the roster?"""
    book, submitted, tmp = graded
    assess_late(with_due(tmp), book, submitted)
    roster = tmp / "roster.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section,Days 6-7: scaled dot-product attention and masks (77)\n"
                      "    Points Possible,,,,,10\n"
                      "\"Lovelace, Ada\",1001,S1,ada,A,\n\"Hacker, Cyd\",1003,S3,cyd,B,\n")
    problems = export_canvas(COURSE, book, tmp / "canvas.csv", roster)
    with open(tmp / "canvas.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{NB.title} (77)"]
    assert table[1][0] == "Points Possible" and float(table[1][5]) == sum(i.points for i in NB.items)
    by_login = {r[3]: r for r in table[2:]}
    auto = sum(i.points for i in NB.auto_items)
    assert by_login["ada"][:3] == ["Lovelace, Ada", "1001", "S1"] and float(by_login["ada"][5]) == auto
    assert float(by_login["cyd"][5]) == pytest.approx(auto - 0.3 * POSSIBLE)
    assert problems == ["ben: not in the Canvas roster roster.csv (by ID, SIS User ID or SIS Login ID); left out"]
    export_canvas(COURSE, book, tmp / "plain.csv")
    with open(tmp / "plain.csv", newline="") as f:
        plain = list(csv.reader(f))
    assert plain[0][5] == NB.title and {r[3] for r in plain[2:]} == {"ada", "ben", "cyd"}


def test_finalize_on_the_graded_demo_class(graded_demo, demo_class, tmp_path, capsys):
    """On the graded demo class, does `finalize` apply a past due date to the dated submissions and write both CSVs?"""
    _, out = graded_demo
    copy = tmp_path / "out"
    copy.mkdir()
    shutil.copy(out / "gradebook.db", copy / "gradebook.db")
    submitted = tmp_path / "submitted"
    shutil.copytree(demo_class, submitted)
    late = DUE + timedelta(days=1, hours=1)  # past the 15-minute grace period by a day and 45 minutes: 2 days
    (submitted / "ada_complete" / NB.week / "timestamp.txt").write_text(format_timestamp(late))
    assert COURSE.weeks[0].id == NB.week
    course = course_file(tmp_path, lambda d: d["weeks"][0].update(due=DUE.isoformat()))
    assert main(["--course", str(course), "manual", str(copy)]) == 0
    assert main(["--course", str(course), "finalize", str(submitted), "--out", str(copy),
                 "--points", str(copy / "manual" / "answers.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"late: ada_complete {NB.id}: 2 day(s) late: 20% off" in printed
    assert "late: ben_untouched" in printed and "no submission time" in printed
    table = rows(copy / "gradebook.csv")
    before = rows(out / "gradebook.csv")
    # timestamp.txt dates the whole week (nbgrader's assignment): each of its notebooks loses 20% of its points possible
    week_possible = sum(i.points for nb in COURSE.notebooks if nb.week == NB.week
                        for i in nb.items if not i.extra_credit)
    assert float(table["ada_complete"]["late_penalty"]) == pytest.approx(0.2 * week_possible)
    assert float(table["ada_complete"]["total"]) == pytest.approx(
        float(before["ada_complete"]["total"]) - 0.2 * week_possible)
    assert float(table["ben_untouched"]["late_penalty"]) == 0
    assert (copy / "canvas.csv").exists()
    assert main(["--course", str(course), "finalize", str(submitted), "--out", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("answer", [
    '=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(A1:A9)", "\t=1+1", "\r=1+1",
])
def test_formula_answers_are_exported_as_text(tmp_path, answer):
    """Is a free-text answer beginning with = + - @, tab or carriage return exported with a leading quote (OWASP)?"""
    book = Gradebook(tmp_path / "gradebook.db")
    book.record("ada", NB.id, "d1", result({}, answer))
    csv_path, _, _ = export_manual(COURSE, book, tmp_path)
    book.close()
    assert rows(csv_path)["ada"]["answer"] == "'" + answer


def test_canvas_export_neutralises_roster_text(graded):
    """Is a roster name that looks like a formula written to canvas.csv as text, and the points as numbers?"""
    book, _, tmp = graded
    roster = tmp / "roster.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1001,S1,ada,-A\n")
    export_canvas(COURSE, book, tmp / "canvas.csv", roster)
    with open(tmp / "canvas.csv", newline="") as f:
        ada = next(r for r in csv.reader(f) if r[3] == "ada")
    assert ada[0] == "'=HYPERLINK(\"http://x\",\"y\")" and ada[4] == "'-A" and float(ada[5]) > 0


def test_csv_cells_keep_numbers_and_plain_text():
    """Are the grader's own numbers ("-1.5", -2.5) and text not starting with = + - @ tab CR left as they are?"""
    kept = [-1.5, "-1.5", "+2", "-1e-3", "-.5", 3, None, "", "ada", "a=b", " =1", "'=1"]
    assert csv_row(kept) == kept
    assert csv_row(["-1.5x", "--1", "-1+1", "=1", "+", "-"]) == ["'-1.5x", "'--1", "'-1+1", "'=1", "'+", "'-"]


def test_late_penalty_is_a_fraction_of_the_points_possible_and_never_below_zero(tmp_path):
    """Is a late penalty a fraction of the notebook's points possible (not of the score), capped at the score earned?

    Three students three days late (30% off): a full score loses 30% of the points possible;
    half a score loses the same points (not 30% of what it earned); 1 point cannot lose more than 1.
    Extra credit is not part of the points possible, and the cut-off (a penalty of 1) takes it too.
    """
    book = Gradebook(tmp_path / "gradebook.db")
    first, second = NB.auto_items[0], NB.auto_items[1]
    book.record("full", NB.id, "d1", result({i.id: i.points for i in NB.auto_items}, "an answer"))
    book.record("half", NB.id, "d2", result({first.id: POSSIBLE / 2}, "an answer"))
    book.record("low", NB.id, "d3", result({first.id: 1.0}, "an answer"))
    book.record("gone", NB.id, "d4", result({i.id: i.points for i in NB.auto_items}, "an answer"))
    book.set_late([(s, NB.id, None, 4000.0, 0.3, "3 day(s) late") for s in ("full", "half", "low")]
                  + [("gone", NB.id, None, 20000.0, 1.0, "more than 7 days late")])
    penalties = book.late_penalties()
    assert penalties["full"][NB.id] == pytest.approx(0.3 * POSSIBLE)
    assert penalties["half"][NB.id] == pytest.approx(0.3 * POSSIBLE) != pytest.approx(0.3 * POSSIBLE / 2)
    assert penalties["low"][NB.id] == pytest.approx(1.0)
    book.export_csv(tmp_path / "gradebook.csv", COURSE.item_ids, set())
    table = rows(tmp_path / "gradebook.csv")
    assert float(table["half"]["total"]) == pytest.approx(POSSIBLE / 2 - 0.3 * POSSIBLE)
    assert float(table["low"]["total"]) == 0 and float(table["gone"]["total"]) == 0
    # an item counted as extra credit is left out of the points possible
    assert book.late_penalties({second.id})["full"][NB.id] == pytest.approx(0.3 * (POSSIBLE - second.points))
    assert book.late_penalties({second.id})["gone"][NB.id] == pytest.approx(sum(i.points for i in NB.auto_items))
    book.close()


def _fill(path: Path, **points_by_student) -> None:
    """Edit answers.csv as an instructor would: points (and a comment) typed into some rows."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, table = reader.fieldnames, list(reader)
    for row in table:
        if row["student_id"] in points_by_student:
            row.update(points_by_student[row["student_id"]])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)


def test_manual_reexport_after_a_regrade_refreshes_untouched_rows_and_flags_changed_answers(graded):
    """After a regrade, does `manual` drop its own "0, no answer" where an answer now exists, keep what the
    instructor entered, and flag the answers that are new or changed (in the CSV and the HTML)?"""
    book, _, tmp = graded
    book.record("dan", NB.id, "d4", result({}, ""))
    csv_path, html_path, _ = export_manual(COURSE, book, tmp)
    first = rows(csv_path)
    assert (first["ben"]["points"], first["ben"]["comment"]) == ("0", "no answer")
    assert all(r["flag"] == "" for r in first.values())
    _fill(csv_path, ada={"points": "1.5", "comment": "clear"},
          dan={"comment": "no answer; asked by mail"})  # dan's 0 is now the instructor's own
    # regrade: ben and dan answer now, ada rewrites hers, cyd resubmits the same text
    book.record("ben", NB.id, "d2-new", result({}, "Padding positions must get no attention weight."))
    book.record("dan", NB.id, "d4-new", result({}, "Masks hide the padding keys."))
    book.record("ada", NB.id, "d1-new", result({}, "The mask stops attention to padding."))
    book.record("cyd", NB.id, "d3-new", result({}, "Padding keys carry no information."))
    again = rows(export_manual(COURSE, book, tmp)[0])
    assert (again["ben"]["points"], again["ben"]["comment"], again["ben"]["flag"]) == ("", "", FLAG_ANSWERED)
    assert "Padding positions" in again["ben"]["answer"]
    assert (again["ada"]["points"], again["ada"]["comment"], again["ada"]["flag"]) == ("1.5", "clear", FLAG_CHANGED)
    assert (again["dan"]["points"], again["dan"]["flag"]) == ("0", FLAG_CHANGED)  # touched: kept, and flagged
    assert (again["cyd"]["points"], again["cyd"]["flag"]) == ("", "")  # unchanged answer: no flag
    page = html_path.read_text()
    assert FLAG_ANSWERED in page and FLAG_CHANGED in page
    # a flag stays until the instructor clears it; a cleared flag stays cleared
    _fill(csv_path, ada={"flag": ""})
    third = rows(export_manual(COURSE, book, tmp)[0])
    assert third["ben"]["flag"] == FLAG_ANSWERED and third["ada"]["flag"] == ""


def test_manual_no_answer_entered_by_finalize_is_refreshed_too(graded):
    """When "0, no answer" reached the gradebook (finalize --points) and answers.csv is gone, is it refreshed after the student answers?"""
    book, _, tmp = graded
    csv_path = export_manual(COURSE, book, tmp)[0]
    book.set_manual_scores(read_manual_points(COURSE, book, csv_path))
    assert book.manual_scores()[("ben", MANUAL.id)] == (0.0, "no answer")
    csv_path.unlink()
    book.record("ben", NB.id, "d2-new", result({}, "Padding positions must get no attention weight."))
    ben = rows(export_manual(COURSE, book, tmp)[0])["ben"]
    assert (ben["points"], ben["flag"]) == ("", FLAG_ANSWERED)
    # entering that file clears the stale 0 (an empty points cell clears what was entered)
    book.set_manual_scores(read_manual_points(COURSE, book, csv_path))
    assert ("ben", MANUAL.id) not in book.manual_scores()
