"""Grading the same class twice, once with a CPU hog running beside it, gives the identical gradebook (issue 12).

Limits must measure the student's work, not the machine's load: the whole demo class (every
notebook, the slowest to grade among them, and its hostile students), a submission with an endless
loop that must hit its limit both times, and a correct but slow one that uses most of its item's
limit, is graded alone, then again while one busy-loop process per core competes for the CPU. Every
result and the gradebook must be the same in both runs, timings and peak memory aside.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import students as demo_students
from conftest import FAST_LIMITS, gradebook_rows

from autograder.config import load_course
from autograder.grade import grade_all

D06 = "day06_scaled_dot_product_attention"
LOOP = "def attention_flops(n_queries, n_keys, d_k, d_v):\n    while True:\n        pass\n"
"""lou_loops_forever's attention_flops, which must hit its limit, with the same message, in both runs."""
SLOW_SHARE = 0.6
"""sam_slow_but_right's correct attention spends this share of the item's time limit computing (CPU time,
whatever the machine's speed): well inside a CPU-time limit, but past a wall-clock limit of the same size
as soon as a hog takes half of its core."""
SLOW = f"""import time as _time
_solution, _burned = scaled_dot_product_attention, []


def scaled_dot_product_attention(query, key, value, mask=None):
    if not _burned:  # correct, but slow: {SLOW_SHARE:g} of the item's limit in CPU time, once
        _burned.append(1)
        start = _time.process_time()
        while _time.process_time() - start < {SLOW_SHARE * FAST_LIMITS["item_seconds"]}:
            pass
    return _solution(query, key, value, mask)
"""
TIMING_KEYS = {"seconds", "peak_mb", "graded_at", "cpu_seconds", "wall_seconds", "worker_peak_mb"}
"""Result fields that measure the run rather than the submission: left out of the comparison."""
HOG = "while True:\n    pass\n"
MIN_HOG_SHARE = 0.05
"""Each hog must have had at least this share of a CPU during the loaded run, else the run was not loaded
(alone on 2 cores each gets about half of one; other work on the machine leaves it less)."""


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _details(out) -> dict[tuple[str, str], dict]:
    db = sqlite3.connect(out / "gradebook.db")
    try:
        return {(s, nb): _strip(json.loads(d)) for s, nb, d in
                db.execute("SELECT student_id, notebook_id, detail FROM submissions")}
    finally:
        db.close()


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _differences(alone: dict, loaded: dict) -> list[str]:
    """Each difference as one line: the submission, what differs, and both values."""
    lines = []
    for key in sorted(set(alone) | set(loaded)):
        a, b = alone.get(key), loaded.get(key)
        if a is None or b is None:
            lines.append(f"{key}: graded only {'alone' if b is None else 'under load'}")
            continue
        before = len(lines)
        items_a = {i["id"]: i for i in a["items"]}
        items_b = {i["id"]: i for i in b["items"]}
        for item in sorted(set(items_a) | set(items_b)):
            ia, ib = items_a.get(item, {}), items_b.get(item, {})
            for field in ("score", "message", "mistake"):
                if ia.get(field) != ib.get(field):
                    lines.append(f"{key} {item}.{field}: alone {ia.get(field)!r}, under load {ib.get(field)!r}")
        if a["cell_problems"] != b["cell_problems"]:
            lines.append(f"{key} cell_problems: alone {a['cell_problems']!r}, under load {b['cell_problems']!r}")
        if len(lines) == before and a != b:
            rest = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            lines.append(f"{key} differs in {rest}: alone {json.dumps({k: a.get(k) for k in rest})[:600]}, "
                         f"under load {json.dumps({k: b.get(k) for k in rest})[:600]}")
    return lines


def test_grading_under_cpu_load_gives_the_identical_gradebook(fast_course, demo_class, graded_demo, tmp_path):
    """Is every score, message, named mistake, cell problem and gradebook cell the same with a CPU hog per
    core running beside?

    The run alone is the demo class as graded once for the session (graded_demo), plus the two students
    made here graded alone; the loaded run grades them all again.
    """
    extra = {"sam_slow_but_right": {D06: {"*": "solution", "+slow": SLOW}},
             "lou_loops_forever": {D06: {"*": "solution", "attention_flops": LOOP}}}
    demo_students.write_class(tmp_path / "extra", extra)
    started = time.monotonic()
    grade_all(fast_course, tmp_path / "extra", tmp_path / "alone", workers=2, progress=None)
    alone_wall = time.monotonic() - started
    shutil.copytree(demo_class, tmp_path / "submitted")
    shutil.copytree(tmp_path / "extra", tmp_path / "submitted", dirs_exist_ok=True)
    hogs = []
    try:
        for _ in range(max(2, os.cpu_count() or 2)):
            hogs.append(subprocess.Popen([sys.executable, "-c", HOG]))
        started = time.monotonic()
        grade_all(fast_course, tmp_path / "submitted", tmp_path / "loaded", workers=2, progress=None)
        wall = time.monotonic() - started
        shares = [_cpu_seconds(h.pid) / wall for h in hogs]
        assert all(h.poll() is None for h in hogs), "a hog ended early"
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"extra students alone {alone_wall:.0f} s, all under load {wall:.0f} s, "
          f"hogs' CPU shares {[round(x, 2) for x in shares]}")
    assert min(shares) >= MIN_HOG_SHARE, f"the hogs did not load the machine: CPU shares {shares}"
    alone = {**_details(graded_demo[1]), **_details(tmp_path / "alone")}
    loaded = _details(tmp_path / "loaded")
    assert len(alone) == len(list((tmp_path / "submitted").glob("*/*/*.ipynb")))
    slow = alone[("sam_slow_but_right", D06)]["items"][0]
    assert slow["score"] == load_course().item(slow["id"])[1].points, (
        f"correct work that takes {SLOW_SHARE:g} of its limit in CPU time lost points: {slow['message']}")
    differences = _differences(alone, loaded)
    assert not differences, f"{len(differences)} differences under load:\n" + "\n".join(differences[:25])
    rows_alone = {**gradebook_rows(graded_demo[1]), **gradebook_rows(tmp_path / "alone")}
    assert gradebook_rows(tmp_path / "loaded") == rows_alone
