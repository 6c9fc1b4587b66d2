"""The gradebook: SQLite, written one submission per transaction.

A submission (student, notebook) is stored with the digest of its content and
of the grader, so grading is incremental (unchanged submissions are skipped)
and resumable (a run killed half-way loses nothing already committed, and a
half-written submission is never visible). `export_csv` writes one row per
student, one column per item id, and a `total`.

Two tables hold what the instructor adds after grading, and survive regrading:
`manual_scores` (points entered for free-text answers; they replace the 0 the
grader gives a manual item) and `late` (each submission's lateness and the
fraction of its notebook's points taken off, from `python -m autograder
finalize`). Once lateness has been assessed, gradebook.csv has a
`late_penalty` column (points taken off) before `total`.
"""
from __future__ import annotations

import csv
import json
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

    def late_penalties(self) -> dict[str, dict[str, float]]:
        """{student: {notebook: points taken off for lateness}}."""
        earned = self.notebook_scores()
        out: dict[str, dict[str, float]] = {}
        for (student, notebook), info in self.late().items():
            if info["penalty"] > 0:
                points = round(info["penalty"] * earned.get(student, {}).get(notebook, 0.0), 6)
                out.setdefault(student, {})[notebook] = points
        return out

    def export_csv(self, path: Path, item_ids: list[str], extra_credit: set[str]) -> None:
        """gradebook.csv: student_id, one column per item id, total (extra credit included).

        Manual items hold the points entered by hand; once lateness has been assessed a
        `late_penalty` column (points taken off) comes before `total`, which is net of it.
        """
        scores = self.scores()
        assessed = self.db.execute("SELECT COUNT(*) FROM late").fetchone()[0] > 0
        penalties = self.late_penalties()
        tmp = Path(path).with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["student_id", *item_ids, *(["late_penalty"] if assessed else []), "total"])
            for student in self.students():
                row = scores.get(student, {})
                values = [row.get(i, 0.0) for i in item_ids]
                penalty = sum(penalties.get(student, {}).values())
                late = [_fmt(penalty)] if assessed else []
                writer.writerow([student, *(_fmt(v) for v in values), *late, _fmt(sum(values) - penalty)])
        tmp.replace(path)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x != int(x) else str(int(x))
