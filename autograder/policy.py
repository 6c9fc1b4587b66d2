"""After grading: late work, points entered by hand, and the gradebook in Canvas's import format.

- Late work. `assess_late` reads each graded submission's time (nbgrader's
  `SUBMITTED/<student>/<week>/timestamp.txt`, which `python -m autograder
  import` writes from the LMS's metadata) and compares it with its week's
  `due` in course.yml, under the course's `late` policy (grace period,
  penalty per started day, largest penalty, cut-off). The fraction taken off
  is stored per submission in the gradebook; it is a fraction of the
  notebook's points possible (as Canvas deducts), never of the points earned,
  and never takes a notebook below 0 (`Gradebook.late_penalties`).
- Manual grading. `export_manual` writes every free-text answer to
  OUT/manual/answers.csv (one row per student and question, with empty
  `points` and `comment` columns for the grader) and answers.html (the same,
  grouped by question, for reading). `read_manual_points` validates the filled
  CSV and the points merge into the gradebook.
- Canvas. `export_canvas` writes OUT/canvas.csv: Canvas's gradebook import
  format, one assignment column per notebook (net of late penalties).

`finalize` does all three in order; `python -m autograder manual` and
`python -m autograder finalize` are the commands.
"""
from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .config import ROOT, Course, LatePolicy, Notebook, _did_you_mean
from .gradebook import Gradebook, _fmt, csv_cell, csv_row

TIMESTAMP_FILE = "timestamp.txt"
DASHED_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[-_T ](\d\d)[-:](\d\d)[-:](\d\d)$")
UNANSWERED = {"", "YOUR ANSWER HERE"}
"""What a free-text cell holds when the student wrote nothing (nbgrader's placeholder)."""
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


class PolicyError(ValueError):
    """Something the instructor handed in cannot be used (a bad points file, a bad timestamp); says what to fix."""


# ---------------------------------------------------------------- late work

def parse_timestamp(text: str) -> datetime:
    """A submission time as nbgrader reads it (`2026-01-16 23:05:00.000000 UTC`, ISO 8601, ...), in UTC.

    A time without a zone is taken as UTC, as nbgrader does. The all-dashes form of
    zip_collect file names (`2026-01-16-09-30-00`) is read exactly: nbgrader 0.9.6 hands it
    to dateutil, which reads `-30-00` as a time zone or drops it.
    """
    from nbgrader.utils import parse_utc

    dashed = DASHED_TIME.match(text.strip())
    if dashed:
        try:
            return datetime(*map(int, dashed.groups()), tzinfo=timezone.utc)
        except ValueError:
            raise PolicyError(f"not a date and time: {text.strip()!r}") from None
    try:
        return parse_utc(text.strip()).replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise PolicyError(f"not a date and time: {text.strip()!r}") from None


def format_timestamp(when: datetime) -> str:
    """The form nbgrader writes to timestamp.txt, in UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


@dataclass(frozen=True)
class Lateness:
    minutes_late: float
    """How long after the due date (0 when on time)."""
    penalty: float
    """Fraction of the notebook's points possible taken off (0 to 1; 1 takes every point)."""
    note: str


def lateness(when: datetime | None, due: datetime | None, policy: LatePolicy) -> Lateness:
    """Apply the late policy to one submission time."""
    if due is None:
        return Lateness(0.0, 0.0, "no due date")
    if when is None:
        return Lateness(0.0, 0.0, "no submission time; counted as on time")
    late_by = when - due
    minutes = max(0.0, late_by.total_seconds() / 60)
    grace = timedelta(minutes=policy.grace_minutes)
    if late_by <= timedelta(0):
        return Lateness(0.0, 0.0, "on time")
    if late_by <= grace:
        return Lateness(minutes, 0.0, f"{minutes:.0f} min late, within the grace period")
    past = late_by - grace
    days = math.ceil(past / timedelta(days=1))
    if policy.zero_after_days and past > timedelta(days=policy.zero_after_days):
        return Lateness(minutes, 1.0, f"more than {policy.zero_after_days:g} days late: no points")
    penalty = min(policy.max_penalty, days * policy.penalty_per_day)
    return Lateness(minutes, penalty, f"{days} day(s) late: {penalty:.0%} off")


def week_of(course: Course, nb: Notebook):
    return next(w for w in course.weeks if w.id == nb.week)


def submission_time(submitted: Path, student: str, nb: Notebook) -> datetime | None:
    """The time in SUBMITTED/<student>/<week>/timestamp.txt, if there is one."""
    path = Path(submitted) / student / nb.week / TIMESTAMP_FILE
    if not path.exists():
        return None
    try:
        return parse_timestamp(path.read_text(encoding="utf-8", errors="replace"))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def assess_late(course: Course, book: Gradebook, submitted: Path) -> list[str]:
    """Record the lateness of every graded submission; returns one line per late or undated submission."""
    rows, lines = [], []
    notebooks = {nb.id: nb for nb in course.notebooks}
    for student in book.students():
        for result in book.results(student):
            nb = notebooks.get(result["notebook_id"])
            if nb is None:
                continue
            due = week_of(course, nb).due
            if due is None:
                continue  # no deadline: nothing to assess (and no late_penalty column for it)
            when = submission_time(submitted, student, nb)
            late = lateness(when, due, course.late)
            rows.append((student, nb.id, when.isoformat() if when else None, late.minutes_late, late.penalty, late.note))
            if late.minutes_late > 0 or when is None:
                lines.append(f"{student} {nb.id}: {late.note}")
    book.set_late(rows)
    return lines


# ---------------------------------------------------------------- manual grading

MANUAL_COLUMNS = ["student_id", "notebook_id", "item_id", "max_points", "points", "comment", "flag", "answer"]
NO_ANSWER = ("0", "no answer")
"""Points and comment the export gives an unanswered cell (until the instructor changes them)."""
FLAG_ANSWERED = "answered since the last export: grade it"
FLAG_CHANGED = "answer changed since the points were entered: check them"


def question_text(nb: Notebook, item_id: str, root: Path = ROOT) -> str:
    """The markdown cell just above a free-text answer cell in the student notebook (its question)."""
    import nbformat

    path = root / "weeks" / nb.path
    if not path.exists():
        return ""
    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == item_id:
            previous = cells[index - 1] if index else None
            return previous.source if previous is not None and previous.cell_type == "markdown" else ""
    return ""


def manual_rows(course: Course, book: Gradebook, previous: Path | None = None) -> list[dict]:
    """One row per (student, manual item) graded, keeping points and comments already entered.

    Points come from the previous answers.csv, else from the gradebook (entered by
    `finalize --points`). An unanswered cell gets NO_ANSWER, which stays the export's own
    until the instructor edits it: once the student has answered (a regrade of a new
    submission), such a row is emptied again for grading and flagged. Points entered
    for an answer that has changed since the previous export are kept and flagged.
    A flag stays until the instructor clears it in answers.csv.
    """
    kept: dict[tuple[str, str], dict] = {}
    if previous is not None and previous.exists():
        with open(previous, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                kept[(row.get("student_id", ""), row.get("item_id", ""))] = row
    entered = book.manual_scores()
    rows = []
    for student in book.students():
        for result in book.results(student):
            nb = course.notebook(result["notebook_id"])
            for item in nb.items:
                if not item.manual:
                    continue
                answer = result.get("manual", {}).get(item.id, "")
                answered = answer.strip() not in UNANSWERED
                row = {"student_id": student, "notebook_id": nb.id, "item_id": item.id,
                       "max_points": _fmt(item.points), "points": "", "comment": "", "flag": "", "answer": answer}
                if (student, item.id) in entered:
                    points, comment = entered[(student, item.id)]
                    row.update(points=_fmt(points), comment=comment)
                old = kept.get((student, item.id))
                if old and (old.get("points") or "").strip():
                    row.update(points=old["points"].strip(), comment=old.get("comment", ""))
                if old:
                    row["flag"] = (old.get("flag") or "").strip()
                old_cell = None if old is None else (old.get("answer") or "")  # as written: csv_cell(answer)
                if answered and _is_no_answer(row) and (old_cell is None or old_cell.lstrip("'").strip() in UNANSWERED):
                    # the export's own "0, no answer", left as it was: the answer exists now
                    row.update(points="", comment="", flag=FLAG_ANSWERED)
                elif not answered and not row["points"]:
                    row.update(points=NO_ANSWER[0], comment=NO_ANSWER[1])
                elif row["points"] and old_cell is not None and old_cell != csv_cell(answer):
                    row["flag"] = FLAG_CHANGED
                rows.append(row)
    return rows


def _is_no_answer(row: dict) -> bool:
    points = row["points"].strip()
    try:
        zero = float(points) == 0
    except ValueError:
        zero = False
    return zero and row["comment"].strip() == NO_ANSWER[1]


def export_manual(course: Course, book: Gradebook, out: Path, root: Path = ROOT) -> tuple[Path, Path, int]:
    """Write OUT/manual/answers.csv and answers.html; returns their paths and the number of answers."""
    folder = Path(out) / "manual"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = folder / "answers.csv", folder / "answers.html"
    rows = manual_rows(course, book, csv_path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANUAL_COLUMNS)
    writer.writeheader()
    writer.writerows({column: csv_cell(value) for column, value in row.items()} for row in rows)
    _write(csv_path, buffer.getvalue())
    _write(html_path, answers_html(course, rows, root))
    return csv_path, html_path, len(rows)


def answers_html(course: Course, rows: list[dict], root: Path = ROOT) -> str:
    """Every free-text answer, grouped by question, for reading while grading."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>Free-text answers: {e(course.name)}</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:.4em;vertical-align:top;"
             "text-align:left}.answer{white-space:pre-wrap}.question{background:#f6f6f6;padding:.6em;"
             "white-space:pre-wrap}.none{color:#b3261e}.flag{color:#8a4b00;background:#fff4e5;margin-top:.3em;"
             "padding:.1em .4em;font-size:90%}",
             "</style></head><body>", f"<h1>Free-text answers</h1><p>{e(course.name)}. Enter points in "
             "<code>answers.csv</code> (column <code>points</code>), then run <code>python -m autograder "
             "finalize SUBMITTED --out OUT --points OUT/manual/answers.csv</code>.</p>"]
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], []).append(row)
    for item_id, item_rows in by_item.items():
        nb, item = course.item(item_id)
        parts.append(f"<h2 id='{e(item_id)}'>{e(item_id)} <small>({e(nb.title)}, {item.points:g} points)</small></h2>")
        question = question_text(nb, item_id, root)
        if question:
            parts.append(f"<div class='question'>{e(question)}</div>")
        parts.append("<table><tr><th>student</th><th>answer</th><th>points</th><th>comment</th></tr>")
        for row in item_rows:
            answer = row["answer"].strip()
            shown = (f"<span class='answer'>{e(answer)}</span>" if answer not in UNANSWERED
                     else "<span class='none'>(no answer)</span>")
            flag = f"<div class='flag'>{e(row['flag'])}</div>" if row.get("flag") else ""
            parts.append(f"<tr><td>{e(row['student_id'])}</td><td>{shown}{flag}</td><td>{e(row['points'])}</td>"
                         f"<td>{e(row['comment'])}</td></tr>")
        parts.append("</table>")
    if not rows:
        parts.append("<p>No free-text answers have been graded yet.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def read_manual_points(course: Course, book: Gradebook, path: Path) -> list[tuple[str, str, float | None, str]]:
    """The points entered in an answers.csv, checked; PolicyError lists every problem (nothing is half-read)."""
    path = Path(path)
    if not path.exists():
        raise PolicyError(f"{path}: no such file; write it with python -m autograder manual OUT")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"student_id", "item_id", "points"} - set(reader.fieldnames or [])
        if missing:
            raise PolicyError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                              f"expected the columns of answers.csv ({', '.join(MANUAL_COLUMNS)})")
        rows = list(reader)
    manual = {i.id: i for nb in course.notebooks for i in nb.items if i.manual}
    students = set(book.students())
    out, problems, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        student, item_id = (row.get("student_id") or "").strip(), (row.get("item_id") or "").strip()
        points_text, comment = (row.get("points") or "").strip(), (row.get("comment") or "").strip()
        where = f"{path.name} line {line}"
        if item_id not in manual:
            problems.append(f"{where}: {item_id!r} is not a free-text item of course.yml"
                            f"{_did_you_mean(item_id, manual)}")
            continue
        if student not in students:
            problems.append(f"{where}: student {student!r} has no graded submission"
                            f"{_did_you_mean(student, students)}")
            continue
        if (student, item_id) in seen:
            problems.append(f"{where}: a second row for {student} / {item_id}")
            continue
        seen.add((student, item_id))
        if not points_text:
            out.append((student, item_id, None, comment))
            continue
        try:
            points = float(points_text.replace(",", "."))
        except ValueError:
            problems.append(f"{where}: points {points_text!r} is not a number")
            continue
        if not 0 <= points <= manual[item_id].points or math.isnan(points):
            problems.append(f"{where}: points {points_text} is outside 0..{manual[item_id].points:g} for {item_id}")
            continue
        out.append((student, item_id, points, comment))
    if problems:
        raise PolicyError(f"{path}: {len(problems)} problem(s), no points entered:\n  " + "\n  ".join(problems))
    return out


# ---------------------------------------------------------------- Canvas

def read_roster(path: Path) -> tuple[list[str], list[dict]]:
    """A gradebook export from Canvas (Grades > Export): its header and its student rows."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        missing = [c for c in ("Student", "ID") if c not in header]
        if missing:
            raise PolicyError(f"{path}: not a Canvas gradebook export (no column {', '.join(missing)})")
        rows = [r for r in reader if (r.get("ID") or "").strip() and
                (r.get("Student") or "").strip() not in ("Points Possible", "Student, Test")]
    return header, rows


def canvas_id_map(roster_rows: list[dict]) -> dict[str, dict]:
    """Every identifier a roster row can be found by (ID, SIS User ID, SIS Login ID) -> the row."""
    out = {}
    for row in roster_rows:
        for column in ("ID", "SIS User ID", "SIS Login ID"):
            value = (row.get(column) or "").strip()
            if value:
                out[value] = row
    return out


def canvas_column(nb: Notebook, roster_header: list[str]) -> str:
    """The roster's column for this notebook (named by its title or id, with Canvas's `(id)`), else its title."""
    for column in roster_header:
        name = re.sub(r"\s*\(\d+\)$", "", column).strip()
        if name in (nb.title, nb.id):
            return column
    return nb.title


def export_canvas(course: Course, book: Gradebook, path: Path, roster: Path | None = None) -> list[str]:
    """Write Canvas's gradebook import CSV; returns problems (students not in the roster)."""
    header, roster_rows = read_roster(roster) if roster else ([], [])
    ids = canvas_id_map(roster_rows)
    extra = {i.id for nb in course.notebooks for i in nb.items if i.extra_credit}
    earned, penalties = book.notebook_scores(), book.late_penalties(extra)
    graded = {r["notebook_id"] for s in book.students() for r in book.results(s)}
    notebooks = [nb for nb in course.notebooks if nb.id in graded]
    columns = [canvas_column(nb, header) for nb in notebooks]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_row(CANVAS_FIXED + columns))
    possible = [_fmt(sum(i.points for i in nb.items if not i.extra_credit)) for nb in notebooks]
    writer.writerow(csv_row(["Points Possible", "", "", "", ""] + possible))
    problems = []
    for student in book.students():
        if roster:
            row = ids.get(student)
            if row is None:
                problems.append(f"{student}: not in the Canvas roster {roster.name} (by ID, SIS User ID or SIS Login ID); left out")
                continue
            fixed = [(row.get(c) or "").strip() for c in CANVAS_FIXED]
        elif student.isdigit():
            fixed = [student, student, "", "", ""]  # a Canvas user id, as imported without a roster
        else:
            fixed = [student, "", "", student, ""]
        scores = []
        for nb in notebooks:
            if nb.id not in earned.get(student, {}):
                scores.append("")
                continue
            points = earned[student][nb.id] - penalties.get(student, {}).get(nb.id, 0.0)
            scores.append(_fmt(round(points, 4)))
        writer.writerow(csv_row(fixed + scores))
    _write(Path(path), buffer.getvalue())
    return problems


# ---------------------------------------------------------------- all together

def finalize(course: Course, submitted: Path, out: Path, points: Path | None = None,
             roster: Path | None = None) -> dict:
    """Late penalties, manual points, then gradebook.csv and canvas.csv again. Returns a summary."""
    out = Path(out)
    db = out / "gradebook.db"
    if not db.exists():
        raise PolicyError(f"{db}: no gradebook; run python -m autograder grade SUBMITTED --out {out} first")
    if not Path(submitted).is_dir():
        raise PolicyError(f"{submitted}: no such folder (the SUBMITTED folder that was graded)")
    book = Gradebook(db)
    try:
        entered = read_manual_points(course, book, points) if points else []
        late_lines = assess_late(course, book, Path(submitted))
        if entered:
            book.set_manual_scores(entered)
        extra = {i.id for nb in course.notebooks for i in nb.items if i.extra_credit}
        book.export_csv(out / "gradebook.csv", course.item_ids, extra)
        canvas_problems = export_canvas(course, book, out / "canvas.csv", roster)
    finally:
        book.close()
    return {"late": late_lines, "manual": sum(1 for r in entered if r[2] is not None),
            "cleared": sum(1 for r in entered if r[2] is None), "canvas_problems": canvas_problems}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
