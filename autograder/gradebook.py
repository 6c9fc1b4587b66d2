"""The gradebook: SQLite, written one submission per transaction.

A submission (student, notebook) is stored with the digest of its content and
of the grader, so grading is incremental (unchanged submissions are skipped)
and resumable (a run killed half-way loses nothing already committed, and a
half-written submission is never visible). `export_csv` writes one row per
student, one column per item id, and a `total`.

Two tables hold what the instructor adds after grading, and survive regrading:
`manual_scores` (points entered for free-text answers; they replace the 0 the
grader gives a manual item) and `late` (each submission's lateness and the
fraction of its notebook's points possible taken off, from `python -m autograder
finalize`). Once lateness has been assessed, gradebook.csv has a
`late_penalty` column (points taken off) before `total`.

The review page (`python -m autograder review`) enters hand grades one at a time
with `set_manual` (last write wins, and says what it overwrote), appends every
save to `manual_log`, and keeps each manual item's rubric in `rubrics`.

Every CSV the grader writes passes its cells through `csv_cell`, so that student
text is never run as a spreadsheet formula.
"""
from __future__ import annotations

import csv
import json
import re
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    student_id TEXT NOT NULL,
    notebook_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    seconds REAL NOT NULL,
    graded_at REAL NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (student_id, notebook_id)
);
CREATE TABLE IF NOT EXISTS scores (
    student_id TEXT NOT NULL,
    notebook_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    mistake TEXT,
    PRIMARY KEY (student_id, item_id)
);
CREATE TABLE IF NOT EXISTS manual_scores (
    student_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    score REAL NOT NULL,
    comment TEXT NOT NULL,
    entered_at REAL NOT NULL,
    PRIMARY KEY (student_id, item_id)
);
CREATE TABLE IF NOT EXISTS late (
    student_id TEXT NOT NULL,
    notebook_id TEXT NOT NULL,
    submitted_at TEXT,
    minutes_late REAL NOT NULL,
    penalty REAL NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (student_id, notebook_id)
);
CREATE TABLE IF NOT EXISTS manual_log (
    student_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    score REAL,
    comment TEXT NOT NULL,
    entered_at REAL NOT NULL,
    overwrote_at REAL
);
CREATE TABLE IF NOT EXISTS rubrics (
    item_id TEXT PRIMARY KEY,
    lines TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class Gradebook:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def digest(self, student_id: str, notebook_id: str) -> str | None:
        row = self.db.execute(
            "SELECT digest FROM submissions WHERE student_id=? AND notebook_id=?", (student_id, notebook_id)
        ).fetchone()
        return row[0] if row else None

    def record(self, student_id: str, notebook_id: str, digest: str, result: dict) -> None:
        """Replace one submission's rows, atomically."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM scores WHERE student_id=? AND notebook_id=?", (student_id, notebook_id))
            db.execute(
                "INSERT OR REPLACE INTO submissions VALUES (?,?,?,?,?,?,?,?)",
                (student_id, notebook_id, digest, result["status"], result["message"], result["seconds"],
                 time.time(), json.dumps(result, sort_keys=True)),
            )
            db.executemany(
                "INSERT INTO scores VALUES (?,?,?,?,?,?)",
                [(student_id, notebook_id, it["id"], it["score"], it["max_score"], it.get("mistake"))
                 for it in result["items"]],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def students(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT student_id FROM submissions ORDER BY student_id")]

    def results(self, student_id: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT detail FROM submissions WHERE student_id=? ORDER BY notebook_id", (student_id,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def scores(self) -> dict[str, dict[str, float]]:
        """{student: {item: score}}, with the points entered by hand for manual items."""
        out: dict[str, dict[str, float]] = {}
        for student, item, score in self.db.execute("SELECT student_id, item_id, score FROM scores"):
            out.setdefault(student, {})[item] = score
        for student, item, score in self.db.execute("SELECT student_id, item_id, score FROM manual_scores"):
            if item in out.get(student, {}):
                out[student][item] = score
        return out

    def _transaction(self, statements) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def set_manual_scores(self, rows: list[tuple[str, str, float | None, str]]) -> None:
        """Enter points for manual items: (student, item, points, comment); points None clears them."""
        now = time.time()
        self._transaction([
            ("DELETE FROM manual_scores WHERE student_id=? AND item_id=?", [(s, i) for s, i, p, _ in rows if p is None]),
            ("INSERT OR REPLACE INTO manual_scores VALUES (?,?,?,?,?)",
             [(s, i, float(p), c, now) for s, i, p, c in rows if p is not None]),
        ])

    def manual_scores(self) -> dict[tuple[str, str], tuple[float, str]]:
        """{(student, item): (points, comment)} entered by hand."""
        return {(s, i): (score, comment) for s, i, score, comment in
                self.db.execute("SELECT student_id, item_id, score, comment FROM manual_scores")}

    def manual_grades(self) -> dict[tuple[str, str], tuple[float, str, float]]:
        """{(student, item): (points, comment, entered_at)}: entered_at is the grade's version."""
        return {(s, i): (score, comment, at) for s, i, score, comment, at in
                self.db.execute("SELECT student_id, item_id, score, comment, entered_at FROM manual_scores")}

    def set_manual(self, student_id: str, item_id: str, points: float | None, comment: str,
                   loaded: float | None) -> dict:
        """Enter (points None: clear) one hand grade in its own transaction; the last write wins.

        `loaded` is the version (entered_at) of the grade the grader was shown, None when there was none.
        Returns {"version": the new version, "overwrote": None, or the grade stored since then that this
        save replaced: {"points", "comment", "entered_at"} (points None when it had been cleared)}.
        Every save is also appended to `manual_log`, so that two concurrent saves both leave a trace.
        """
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT score, comment, entered_at FROM manual_scores WHERE student_id=? AND item_id=?",
                             (student_id, item_id)).fetchone()
            current = row[2] if row else None
            overwrote = None
            if current != loaded:
                overwrote = ({"points": row[0], "comment": row[1], "entered_at": row[2]} if row
                             else {"points": None, "comment": "", "entered_at": None})
            now = max(time.time(), (current or 0.0) + 1e-6, (loaded or 0.0) + 1e-6)  # versions only increase
            if points is None:
                db.execute("DELETE FROM manual_scores WHERE student_id=? AND item_id=?", (student_id, item_id))
            else:
                db.execute("INSERT OR REPLACE INTO manual_scores VALUES (?,?,?,?,?)",
                           (student_id, item_id, float(points), comment, now))
            db.execute("INSERT INTO manual_log VALUES (?,?,?,?,?,?)",
                       (student_id, item_id, None if points is None else float(points), comment, now,
                        overwrote["entered_at"] if overwrote else None))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return {"version": now, "overwrote": overwrote}

    def manual_log(self, student_id: str, item_id: str) -> list[dict]:
        """Every save of one hand grade, oldest first: {"points", "comment", "entered_at", "overwrote_at"}."""
        return [{"points": p, "comment": c, "entered_at": at, "overwrote_at": over} for p, c, at, over in
                self.db.execute("SELECT score, comment, entered_at, overwrote_at FROM manual_log WHERE student_id=? "
                                "AND item_id=? ORDER BY entered_at, rowid", (student_id, item_id))]

    def rubric(self, item_id: str) -> list[dict]:
        """The rubric of a hand-graded item: [{"points", "comment"}] in the order the grader wrote it."""
        row = self.db.execute("SELECT lines FROM rubrics WHERE item_id=?", (item_id,)).fetchone()
        return json.loads(row[0]) if row else []

    def set_rubric(self, item_id: str, lines: list[dict]) -> None:
        self._transaction([("INSERT OR REPLACE INTO rubrics VALUES (?,?,?)",
                            [(item_id, json.dumps(lines, ensure_ascii=False), time.time())])])

    def results_with_manual(self, student_id: str) -> list[dict]:
        """`results`, with the points and comment entered by hand on each manual item that has them
        (`score`, `manual_comment`, `graded_by_hand`), as the feedback pages and results.json show them."""
        entered = {i: (p, c) for i, p, c in self.db.execute(
            "SELECT item_id, score, comment FROM manual_scores WHERE student_id=?", (student_id,))}
        results = self.results(student_id)
        for nb in results:
            for item in nb["items"]:
                if item.get("manual") and item["id"] in entered:
                    item["score"], item["manual_comment"] = entered[item["id"]]
                    item["graded_by_hand"] = True
        return results

    def set_late(self, rows: list[tuple[str, str, str | None, float, float, str]]) -> None:
        """Replace the lateness table: (student, notebook, submitted_at, minutes_late, penalty fraction, note)."""
        self._transaction([("DELETE FROM late", [()]), ("INSERT INTO late VALUES (?,?,?,?,?,?)", rows)])

    def late(self) -> dict[tuple[str, str], dict]:
        """{(student, notebook): {"submitted_at", "minutes_late", "penalty", "note"}}."""
        return {(s, n): {"submitted_at": at, "minutes_late": minutes, "penalty": penalty, "note": note}
                for s, n, at, minutes, penalty, note in self.db.execute("SELECT * FROM late")}

    def notebook_scores(self) -> dict[str, dict[str, float]]:
        """{student: {notebook: points earned}}, manual points included, before any late penalty."""
        manual = self.manual_scores()
        out: dict[str, dict[str, float]] = {}
        for student, notebook, item, score in self.db.execute(
                "SELECT student_id, notebook_id, item_id, score FROM scores"):
            score = manual.get((student, item), (score, ""))[0]
            row = out.setdefault(student, {})
            row[notebook] = row.get(notebook, 0.0) + score
        return out

    def points_possible(self, extra_credit=frozenset()) -> dict[str, dict[str, float]]:
        """{student: {notebook: points possible}}: the max_score of its items, extra credit left out."""
        out: dict[str, dict[str, float]] = {}
        for student, notebook, item, max_score in self.db.execute(
                "SELECT student_id, notebook_id, item_id, max_score FROM scores"):
            row = out.setdefault(student, {})
            row[notebook] = row.get(notebook, 0.0) + (0.0 if item in extra_credit else max_score)
        return out

    def late_penalties(self, extra_credit=frozenset()) -> dict[str, dict[str, float]]:
        """{student: {notebook: points taken off for lateness}}.

        The penalty is a fraction of the notebook's points possible (extra credit left out),
        as Canvas's late policy deducts, not of the points earned; it never takes a notebook
        below 0. A penalty of 1 (past `zero_after_days`) takes everything, extra credit included.
        """
        earned = self.notebook_scores()
        possible = self.points_possible(extra_credit)
        out: dict[str, dict[str, float]] = {}
        for (student, notebook), info in self.late().items():
            if info["penalty"] > 0:
                got = max(0.0, earned.get(student, {}).get(notebook, 0.0))
                off = got if info["penalty"] >= 1 else info["penalty"] * possible.get(student, {}).get(notebook, 0.0)
                out.setdefault(student, {})[notebook] = round(min(got, off), 6)
        return out

    def export_csv(self, path: Path, item_ids: list[str], extra_credit: set[str]) -> None:
        """gradebook.csv: student_id, one column per item id, total (extra credit included).

        Manual items hold the points entered by hand; once lateness has been assessed a
        `late_penalty` column (points taken off) comes before `total`, which is net of it.
        """
        scores = self.scores()
        assessed = self.db.execute("SELECT COUNT(*) FROM late").fetchone()[0] > 0
        penalties = self.late_penalties(extra_credit)
        tmp = Path(path).with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(csv_row(["student_id", *item_ids, *(["late_penalty"] if assessed else []), "total"]))
            for student in self.students():
                row = scores.get(student, {})
                values = [row.get(i, 0.0) for i in item_ids]
                penalty = sum(penalties.get(student, {}).values())
                late = [_fmt(penalty)] if assessed else []
                writer.writerow(csv_row([student, *(_fmt(v) for v in values), *late, _fmt(sum(values) - penalty)]))
        tmp.replace(path)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x != int(x) else str(int(x))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """A CSV cell that a spreadsheet shows as text and never runs as a formula (OWASP's rule).

    A string beginning with = + - @, a tab or a carriage return gets a leading single quote,
    unless it is a plain number (the grader's own "-1.5"); any other value is kept as it is.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_row(values) -> list:
    """A CSV row with every cell made safe by `csv_cell`."""
    return [csv_cell(v) for v in values]
