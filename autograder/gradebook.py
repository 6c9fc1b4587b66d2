"""The gradebook: SQLite, written one submission per transaction.

A submission (student, notebook) is stored with the digest of its content and
of the grader, so grading is incremental (unchanged submissions are skipped)
and resumable (a run killed half-way loses nothing already committed, and a
half-written submission is never visible). `export_csv` writes one row per
student, one column per item id, and a `total`.
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
        out: dict[str, dict[str, float]] = {}
        for student, item, score in self.db.execute("SELECT student_id, item_id, score FROM scores"):
            out.setdefault(student, {})[item] = score
        return out

    def export_csv(self, path: Path, item_ids: list[str], extra_credit: set[str]) -> None:
        """gradebook.csv: student_id, one column per item id, total (extra credit included)."""
        scores = self.scores()
        tmp = Path(path).with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["student_id", *item_ids, "total"])
            for student in self.students():
                row = scores.get(student, {})
                values = [row.get(i, 0.0) for i in item_ids]
                writer.writerow([student, *(_fmt(v) for v in values), _fmt(sum(values))])
        tmp.replace(path)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x != int(x) else str(int(x))
