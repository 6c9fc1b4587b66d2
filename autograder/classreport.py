"""The class report: what the whole class scored, and what it got wrong.

`write_report(course, book, out, run)` reads every graded submission from the
gradebook and writes

- OUT/report.html: one self-contained page (pictures as data URIs): the
  totals of every notebook, the score distribution of every item, the
  diagnosed mistakes ranked by how many students made them (with who made
  them, linked to their feedback pages), the items most students fail (and
  why: a named mistake, a stub left as is, an error, or wrong values no known
  mistake explains), and how long grading took;
- OUT/report.csv: one row per item, per notebook and for the course, for
  spreadsheets;
- OUT/mistakes.csv: one row per (item, diagnosed mistake), with the students.

Only auto-graded items count here; free-text answers (manual items) are
listed as graded by hand.
"""
from __future__ import annotations

import csv
import html
import io
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import compare
from .config import Course
from .gradebook import Gradebook, csv_row

CAUSES = ("mistake", "stub", "error", "stopped", "wrong")
CAUSE_NAMES = {
    "mistake": "a named mistake",
    "stub": "not attempted (still the stub)",
    "error": "raised an error",
    "stopped": "stopped (not defined, killed, unreadable)",
    "wrong": "wrong values, no known mistake",
}


@dataclass
class ItemStats:
    """One item over the class."""

    notebook: str
    item: str
    points: float
    manual: bool = False
    extra_credit: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    causes: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CAUSES})
    mistakes: dict[str, dict] = field(default_factory=dict)
    """{mistake name: {"title", "hint", "students": [...]}}"""

    @property
    def failed(self) -> list[str]:
        return [s for s, v in self.scores.items() if v < self.points]

    @property
    def full_marks(self) -> int:
        return sum(v >= self.points for v in self.scores.values())


def cause_of(item: dict) -> str:
    """Why a student lost points on an item, as one of CAUSES."""
    if item["message"]:
        return "stopped"
    failures = [c for c in item["cases"] if not c["passed"]]
    if any(c.get("mistake") for c in failures):
        return "mistake"
    if compare.still_stub(failures) or compare.unanswered(failures):  # as released: a stub, or an answer of None
        return "stub"
    if failures and all(c["problems"] and c["problems"][0].startswith("raised ") for c in failures):
        return "error"
    return "wrong"


def collect(course: Course, book: Gradebook) -> tuple[list[ItemStats], dict[str, dict[str, float]], dict]:
    """Per-item statistics, every student's notebook totals, and the sandbox times of the submissions."""
    stats: dict[str, ItemStats] = {}
    for nb in course.notebooks:
        for it in nb.items:
            stats[it.id] = ItemStats(nb.id, it.id, it.points, it.manual, it.extra_credit)
    totals: dict[str, dict[str, float]] = {nb.id: {} for nb in course.notebooks}
    seconds: list[tuple[float, str, str]] = []
    for student in book.students():
        for nb in book.results(student):
            if nb["notebook_id"] not in totals:
                continue
            seconds.append((float(nb.get("seconds", 0.0)), student, nb["notebook_id"]))
            totals[nb["notebook_id"]][student] = sum(i["score"] for i in nb["items"])
            for item in nb["items"]:
                st = stats.get(item["id"])
                if st is None:
                    continue
                st.scores[student] = float(item["score"])
                if st.manual or item["score"] >= st.points:
                    continue
                st.causes[cause_of(item)].append(student)
                for case in item["cases"]:
                    m = case.get("mistake")
                    if m:
                        entry = st.mistakes.setdefault(m["name"], {"title": m["title"], "hint": m["hint"],
                                                                   "students": []})
                        if student not in entry["students"]:
                            entry["students"].append(student)
    seconds.sort(reverse=True)
    timing = {
        "submissions": len(seconds),
        "sandbox_total": sum(s for s, _, _ in seconds),
        "sandbox_median": statistics.median([s for s, _, _ in seconds]) if seconds else 0.0,
        "slowest": seconds[:5],
    }
    return list(stats.values()), totals, timing


def _max_points(course: Course, nb_id: str) -> float:
    nb = course.notebook(nb_id)
    return sum(i.points for i in nb.items if not i.extra_credit)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x != round(x) else f"{x:g}"


def ranked_mistakes(stats: list[ItemStats]) -> list[tuple[ItemStats, str, dict]]:
    """Every (item, mistake) pair, most students first."""
    rows = [(i, st, name, m) for i, st in enumerate(stats) for name, m in st.mistakes.items()]
    rows.sort(key=lambda r: (-len(r[3]["students"]), r[0], r[2]))  # ties in course order
    return [(st, name, m) for _, st, name, m in rows]


def failing_items(stats: list[ItemStats]) -> list[ItemStats]:
    """Auto-graded items that at least one student failed, largest share of failing students first."""
    rows = [st for st in stats if not st.manual and st.scores and st.failed]
    return sorted(rows, key=lambda st: (-len(st.failed) / len(st.scores), st.item))


def write_report(course: Course, book: Gradebook, out: Path, run: dict | None = None) -> dict:
    """report.html, report.csv and mistakes.csv in OUT; returns what was written and how long it took.

    `run` is grade_all's summary of this run (seconds, graded, unchanged, workers), when there is one.
    """
    started = time.monotonic()
    out = Path(out)
    stats, totals, timing = collect(course, book)
    _write(out / "report.csv", report_csv(course, stats, totals))
    _write(out / "mistakes.csv", mistakes_csv(stats))
    page = report_html(course, stats, totals, timing, run or {})
    _write(out / "report.html", page)
    return {"seconds": time.monotonic() - started, "bytes": len(page.encode())}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(csv_row(row) for row in rows)
    return buf.getvalue()


def _summary(values: list[float]) -> list:
    if not values:
        return ["", "", "", ""]
    return [round(statistics.fmean(values), 4), round(statistics.median(values), 4), round(min(values), 4),
            round(max(values), 4)]


REPORT_COLUMNS = ["kind", "notebook", "item", "max_score", "students", "mean", "median", "min", "max",
                  "full_marks", "failed", "fail_rate", *(f"failed_{c}" for c in CAUSES),
                  "top_mistake", "top_mistake_students"]


def report_csv(course: Course, stats: list[ItemStats], totals: dict[str, dict[str, float]]) -> str:
    """One row per item (kind item or manual), per notebook (kind notebook) and for the course (kind course)."""
    rows = [REPORT_COLUMNS]
    for st in stats:
        if not st.scores:
            continue  # its notebook was not submitted by anyone
        values = list(st.scores.values())
        failed = len(st.failed) if not st.manual else ""
        top = ranked_mistakes([st])[:1]
        rows.append(["manual" if st.manual else "item", st.notebook, st.item, st.points, len(values),
                     *_summary(values), st.full_marks if not st.manual else "", failed,
                     round(len(st.failed) / len(values), 4) if values and not st.manual else "",
                     *((len(st.causes[c]) if not st.manual else "") for c in CAUSES),
                     top[0][1] if top else "", len(top[0][2]["students"]) if top else ""])
    course_totals: dict[str, float] = {}
    for nb in course.notebooks:
        values = list(totals.get(nb.id, {}).values())
        if not values:
            continue
        top = _max_points(course, nb.id)
        rows.append(["notebook", nb.id, "", top, len(values), *_summary(values),
                     sum(v >= top for v in values), "", "", *([""] * len(CAUSES)), "", ""])
        for student, v in totals[nb.id].items():
            course_totals[student] = course_totals.get(student, 0.0) + v
    if course_totals:
        values = list(course_totals.values())
        top = sum(_max_points(course, nb.id) for nb in course.notebooks if totals.get(nb.id))
        rows.append(["course", "", "", top, len(values), *_summary(values), sum(v >= top for v in values),
                     "", "", *([""] * len(CAUSES)), "", ""])
    return _csv(rows)


def mistakes_csv(stats: list[ItemStats]) -> str:
    rows = [["notebook", "item", "mistake", "title", "students_count", "students", "hint"]]
    for st, name, m in ranked_mistakes(stats):
        rows.append([st.notebook, st.item, name, m["title"], len(m["students"]), " ".join(sorted(m["students"])),
                     m["hint"]])
    return _csv(rows)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}th{background:#f6f7f9}
td.num{text-align:right;white-space:nowrap}a{color:#1f5fa8}.muted{color:#6b6b6b}
figure{margin:.6em 0 1.2em}figure img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
.students a{margin-right:.4em}
"""


def report_html(course: Course, stats: list[ItemStats], totals: dict[str, dict[str, float]], timing: dict,
                run: dict) -> str:
    from . import pictures

    e = html.escape
    students = sorted({s for per_nb in totals.values() for s in per_nb})
    graded_nbs = [nb for nb in course.notebooks if totals.get(nb.id)]
    head = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>Class report: {e(course.name)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{e(course.name)}: class report</h1>"
             f"<p>{len(students)} students, {timing['submissions']} graded notebooks. "
             "Student names link to their feedback pages. The same figures are in <code>report.csv</code> "
             "and <code>mistakes.csv</code>.</p>"
             "<nav><a href='#totals'>notebook totals</a> &middot; <a href='#mistakes'>common mistakes</a> &middot; "
             "<a href='#failing'>items most students fail</a> &middot; <a href='#distributions'>score "
             "distributions</a> &middot; <a href='#timing'>grading time</a></nav></header>"]
    sections: dict[str, list[str]] = {}

    # Notebook totals.
    parts = sections['totals'] = []
    parts.append("<section id='totals'><h2>Notebook totals</h2>")
    if graded_nbs:
        rows = [(nb.title, [100 * v / max(_max_points(course, nb.id), 1e-12) for v in totals[nb.id].values()])
                for nb in graded_nbs]
        parts.append(_figure(pictures.totals_strip(rows), "notebook totals",
                             "Each dot is one student's total on a notebook, in percent of its points."))
        parts.append("<table><tr><th>notebook</th><th>students</th><th>points</th><th>mean</th><th>median</th>"
                     "<th>full marks</th></tr>")
        for nb in graded_nbs:
            values = list(totals[nb.id].values())
            top = _max_points(course, nb.id)
            parts.append(f"<tr><td>{e(nb.title)}</td><td class='num'>{len(values)}</td><td class='num'>{_fmt(top)}"
                         f"</td><td class='num'>{statistics.fmean(values):.2f}</td><td class='num'>"
                         f"{_fmt(statistics.median(values))}</td><td class='num'>{sum(v >= top for v in values)}"
                         "</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No graded submissions yet.</p>")
    parts.append("</section>")

    # Per-item distributions, one picture per notebook.
    parts = sections['distributions'] = []
    parts.append("<section id='distributions'><h2>Score distribution per item</h2>"
                 "<p class='muted'>For each item, how many students scored 0, under a quarter, ... or all of its "
                 "points. Items graded by hand are left out.</p>")
    by_nb: dict[str, list[ItemStats]] = {}
    for st in stats:
        if not st.manual and st.scores:
            by_nb.setdefault(st.notebook, []).append(st)
    for nb in course.notebooks:
        items = by_nb.get(nb.id)
        if not items:
            continue
        uri = pictures.score_distributions(nb.title, [(st.item, list(st.scores.values()), st.points) for st in items])
        parts.append(_figure(uri, f"score distribution, {nb.id}", f"{nb.title}: students per score band, per item.",
                             nb.id))
        parts.append("<table><tr><th>item</th><th>points</th><th>students</th><th>mean</th><th>full marks</th>"
                     "<th>most common mistake</th></tr>")
        for st in items:
            top = ranked_mistakes([st])[:1]
            mistake = f"{e(top[0][2]['title'])} ({len(top[0][2]['students'])})" if top else ""
            parts.append(f"<tr><td>{e(st.item)}</td><td class='num'>{_fmt(st.points)}</td><td class='num'>"
                         f"{len(st.scores)}</td><td class='num'>{statistics.fmean(st.scores.values()):.2f}</td>"
                         f"<td class='num'>{st.full_marks}</td><td>{mistake}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")

    # Mistakes.
    parts = sections['mistakes'] = []
    ranked = ranked_mistakes(stats)
    parts.append("<section id='mistakes'><h2>Most common diagnosed mistakes</h2>")
    if ranked:
        shown = ranked[:12]
        counts = [len(m["students"]) for _, _, m in shown]
        if len(set(counts)) > 1:  # a chart of equal bars says less than the table
            uri = pictures.horizontal_bars("students per diagnosed mistake",
                                           [f"{st.item}: {m['title']}" for st, _, m in shown], counts, "students")
            parts.append(_figure(uri, "most common mistakes", "Students per diagnosed mistake (the 12 most common)."))
        parts.append("<table><tr><th>item</th><th>mistake</th><th>students</th><th>who</th></tr>")
        for st, name, m in ranked:
            parts.append(f"<tr><td>{e(st.item)}</td><td><b>{e(m['title'])}</b> <span class='muted'>"
                         f"({e(name)})</span></td><td class='num'>{len(m['students'])}</td>"
                         f"<td class='students'>{_student_links(m['students'])}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No known mistake was diagnosed.</p>")
    parts.append("</section>")

    # Items most students fail.
    parts = sections['failing'] = []
    failing = failing_items(stats)
    parts.append("<section id='failing'><h2>Items most students fail</h2>"
                 "<p class='muted'>Failing means fewer than all of the item's points. The causes: "
                 + "; ".join(f"<b>{e(CAUSE_NAMES[c])}</b>" for c in CAUSES) + ".</p>")
    if failing:
        shown = failing[:20]
        uri = pictures.horizontal_bars("share of students who failed the item", [st.item for st in shown],
                                       [len(st.failed) / len(st.scores) for st in shown], "students failing",
                                       color="#b3261e", percent=True)
        parts.append(_figure(uri, "items most students fail", "Share of students without full marks, per item."))
        parts.append("<table><tr><th>item</th><th>failed</th>"
                     + "".join(f"<th>{e(CAUSE_NAMES[c])}</th>" for c in CAUSES) + "</tr>")
        for st in failing:
            parts.append(f"<tr><td>{e(st.item)}</td><td class='num'>{len(st.failed)} of {len(st.scores)}</td>"
                         + "".join(f"<td class='students'>{_cause_cell(st.causes[c])}</td>" for c in CAUSES)
                         + "</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>Every student has full marks on every auto-graded item.</p>")
    parts.append("</section>")

    # Timing.
    parts = sections['timing'] = []
    parts.append("<section id='timing'><h2>Grading time</h2><ul>")
    if "seconds" in run:
        parts.append(f"<li>This run: <b>{run['seconds']:.1f} s</b> of wall time for {run.get('graded', 0)} "
                     f"submission(s) graded and {run.get('unchanged', 0)} unchanged, with "
                     f"{run.get('workers', '?')} worker(s).</li>")
    parts.append(f"<li>Time in the sandbox, over all {timing['submissions']} recorded submissions: "
                 f"{timing['sandbox_total']:.1f} s in total, median {timing['sandbox_median']:.2f} s per "
                 "notebook.</li>")
    if timing["slowest"]:
        slow = ", ".join(f"{e(s)} / {e(nb)} ({sec:.2f} s)" for sec, s, nb in timing["slowest"])
        parts.append(f"<li>Slowest: {slow}.</li>")
    parts.append("</ul></section>")
    order = ("totals", "mistakes", "failing", "distributions", "timing")  # what went wrong before the detail
    return "\n".join(head + [line for key in order for line in sections[key]] + ["</body></html>"])


def _figure(uri: str, alt: str, caption: str, ident: str = "") -> str:
    e = html.escape
    data = f" data-notebook='{e(ident)}'" if ident else ""
    return (f"<figure class='picture'{data}><img src='{uri}' alt='{e(alt)}'>"
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _student_links(students: list[str]) -> str:
    e = html.escape
    return " ".join(f"<a href='feedback/{e(quote(s))}.html'>{e(s)}</a>" for s in sorted(students))


def _cause_cell(students: list[str]) -> str:
    if not students:
        return ""
    return f"<b>{len(students)}</b>: {_student_links(students)}"
