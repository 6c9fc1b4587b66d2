"""The gradebook survives a grader killed half-way: nothing lost, nothing doubled."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from autograder.config import ROOT
from conftest import fast_course_file
import students as demo_students

D06 = "day06_scaled_dot_product_attention"


def grade_cmd(course_file, cls, out):
    return [sys.executable, "-m", "autograder", "--course", str(course_file), "grade", str(cls), "--out", str(out),
            "--workers", "1"]


def test_sigkill_mid_batch_then_resume_equals_uninterrupted(tmp_path):
    """Killed with SIGKILL in the middle of a batch and run again, is the gradebook the same as an
    uninterrupted run's, with no lost or duplicated rows?"""
    course_file = fast_course_file(tmp_path)
    cls = tmp_path / "cls"
    slow = "import time\ntime.sleep(0.7)\n"
    students = {f"s{i:02d}": {D06: {"*": "solution", "+slow": slow}} for i in range(8)}
    students["s03"][D06]["causal_mask"] = "def causal_mask(size, device=None):\n    return torch.ones(size, size).triu().bool()\n"
    demo_students.write_class(cls, students)

    clean = tmp_path / "clean"  # the uninterrupted run, beside the one to be killed (another output folder)
    uninterrupted = subprocess.Popen(grade_cmd(course_file, cls, clean), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)

    out = tmp_path / "out"
    proc = subprocess.Popen(grade_cmd(course_file, cls, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT, start_new_session=True)
    db_path = out / "gradebook.db"
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                with sqlite3.connect(db_path) as db:
                    done = db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the grader finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db_path) as db:
        partial = db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    assert 2 <= partial < len(students)

    resumed = subprocess.run(grade_cmd(course_file, cls, out), check=True, capture_output=True, text=True, cwd=ROOT)
    _, errors = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, errors[-3000:]
    assert f"{partial} unchanged" in resumed.stdout
    assert (out / "gradebook.csv").read_text() == (clean / "gradebook.csv").read_text()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == len(students)
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT student_id || item_id) FROM scores").fetchone()
        assert rows[0] == rows[1] == len(students) * 6
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
