"""The fork server: sandboxes come and go, and the worker itself stays healthy."""
from __future__ import annotations

import subprocess
import sys

import pytest

from autograder.config import ROOT

SCRIPT = """
import sys
from autograder import jail
jail.enter(jail.wanted_mode())
import threading, torch
from autograder.worker import preload, run_job
preload([])
job = {"cells": [{"index": 0, "source": "x = 1"}], "skip": [], "items": [],
       "limits": {"cell_seconds": 10, "notebook_seconds": 20, "item_seconds": 10, "memory_mb": 4096,
                  "processes": 64, "file_mb": 64, "output_kb": 64, "cpu_seconds": 60}}
for _ in range(3):
    result = run_job(job)
    assert result["cells"]["0"]["status"] == "ok", result
seen = []
t = threading.Thread(target=seen.append, args=(1,)); t.start(); t.join()
torch.set_num_threads(2)
assert float((torch.ones(300, 300) @ torch.ones(300, 300)).sum()) == 300.0 ** 3
print("healthy", seen, result["features"])
"""


def test_worker_keeps_working_after_forking_sandboxes():
    """After several sandboxes in fresh PID namespaces, can a jailed worker still fork, start threads and use torch?"""
    import os

    from autograder import jail

    env = dict(jail.worker_env(), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd="/", timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "healthy [1]" in res.stdout and "'root': 'allow-list'" in res.stdout, res.stdout


PROBE = r'''
import ctypes, gc, hashlib, os, sys

ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/self/mem readable after the switch to nobody

def _found(needles):
    """Which of `needles` (name -> (prefix, length, sha256)) are anywhere in this process."""
    hits = set()
    def scan(blob):
        for name, (prefix, length, digest) in needles.items():
            if name in hits:
                continue
            start = blob.find(prefix)
            while start != -1:
                if hashlib.sha256(blob[start:start + length]).hexdigest() == digest:
                    hits.add(name)
                    break
                start = blob.find(prefix, start + 1)
    for obj in gc.get_objects():
        if type(obj) is type(_found):
            obj = obj.__code__
        if type(obj) is type(_found.__code__):
            for const in obj.co_consts:
                if type(const) is str:
                    scan(const.encode())
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
            if type(value) is str:
                scan(value.encode())
        frame = frame.f_back
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
            if "r" not in parts[1] or (path and not path.startswith("[heap") and not path.startswith("[stack")):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            try:
                scan(os.pread(mem.fileno(), min(hi - lo, 1 << 30), lo))
            except OSError:
                pass
    return sorted(hits)

_PROBED = set()

def _probe(where, names):
    if where in _PROBED:
        return  # once per item: a scan takes seconds
    _PROBED.add(where)
    hits = _found({n: NEEDLES[n] for n in names})
    if hits:
        raise RuntimeError(f"FOUND {hits} at {where}")
'''


def test_no_reference_before_its_item_is_graded(tmp_path):
    """With every stub untouched, can student code find the reference of the item it is graded on, or of a
    later item, anywhere in its process (gc, frames, /proc/self/mem), at any point where it runs?"""
    import hashlib
    import json

    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo_students
    import yaml

    from autograder.config import load_course
    from autograder.grade import grade_all

    data = yaml.safe_load((ROOT / "course.yml").read_text())
    data["grading"]["limits"].update(item_seconds=60, cell_seconds=60)  # each scan of the process takes seconds
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    course = load_course(tmp_path / "course.yml")
    nb = course.notebook("day08_multi_head_attention")
    order = [i.id for i in nb.auto_items]
    released = (ROOT / "weeks" / nb.path).read_text()
    sources = demo_students.solution_sources(nb)
    needles = {}
    for item in order:
        lines = [ln.strip() for ln in sources[item].splitlines() if ln.strip() and ln.strip() not in released]
        line = max(lines, key=len).encode()
        needles[item] = (line[:16], len(line), hashlib.sha256(line).hexdigest())
    edits = {"+probe": f"NEEDLES = {needles!r}\n" + PROBE + f"\n_probe('top level', {order!r})\n"}
    for k, item in enumerate(order):
        later = order[k:]
        call = f"_probe({item!r}, {later!r})"
        if item == "MultiHeadAttention":
            edits[item] = (f"import torch\nclass MultiHeadAttention(torch.nn.Module):\n"
                           f"    def __init__(self, *a, **k):\n        {call}\n        raise NotImplementedError('clean')\n")
        else:
            edits[item] = f"def {item}(*a, **k):\n    {call}\n    raise NotImplementedError('clean')\n"
    # The probe cell must run before the items: move it first by naming the edits of a stub student.
    demo_students.write_class(tmp_path / "cls", {"mallory": {nb.id: edits}})
    out = tmp_path / "out"
    summary = grade_all(course, tmp_path / "cls", out, workers=1, progress=None, pages=False)
    assert summary["graded"] == 1
    import sqlite3

    detail = json.loads(sqlite3.connect(out / "gradebook.db").execute("SELECT detail FROM submissions").fetchone()[0])
    text = json.dumps(detail)
    assert "FOUND" not in text and "Permission" not in text, text[:3000]
    assert text.count("clean") >= len(order), text[:4000]
    assert all(i["score"] == 0 for i in detail["items"]), [(i["id"], i["score"]) for i in detail["items"]]


def _protocol():
    from autograder.worker import Protocol

    items = [{"key": "a", "needs": False, "case_names": {"c1", "c2"}}, {"key": "b", "needs": True, "case_names": {"c"}}]
    return Protocol([0, 2], items, 1024)


def _feed(protocol, *events):
    from autograder import wire

    for event in events:
        protocol.check(wire.encode(event))


HONEST = [{"ev": "ready"}, {"ev": "cell", "index": 0, "status": "start"},
          {"ev": "cell", "index": 0, "status": "ok", "error": ""},
          {"ev": "cell", "index": 2, "status": "start"}, {"ev": "cell", "index": 2, "status": "error", "error": "E"},
          {"ev": "item", "key": "a", "status": "start"},
          {"ev": "case", "key": "a", "case": "c1", "outputs": {"y": 1.0}, "error": "", "error_type": ""},
          {"ev": "item", "key": "a", "status": "retry"}, {"ev": "item", "key": "a", "status": "start"},
          {"ev": "case", "key": "a", "case": "c1", "outputs": None, "error": "E", "error_type": "E"},
          {"ev": "item", "key": "a", "status": "end"},
          {"ev": "item", "key": "b", "status": "start"}, {"ev": "need", "key": "b"},
          {"ev": "item", "key": "b", "status": "killed", "error": "slow"}, {"ev": "done", "stdout": "hi"}]


def test_protocol_accepts_an_honest_sandbox():
    """Does the worker's protocol check accept every event an honest sandbox sends, retries included?"""
    _feed(_protocol(), *HONEST)


@pytest.mark.parametrize("forged", [
    {"ev": "sandbox", "features": {"user": "root"}},           # a claim about protections: unknown kind
    {"ev": "cell", "index": [1], "status": "start"},           # a malformed index
    {"ev": "cell", "index": 1, "status": "start"},             # a cell that is not in the job
    {"ev": "case", "key": "a", "case": "c1", "outputs": None, "error": "", "error_type": ""},  # outside its item
    {"ev": "done", "stdout": ""},                              # done before the items
    {"ev": "ready"},                                           # a second ready
    {"ev": "item", "key": "b", "status": "start"},             # out of order
    {"ev": "need", "key": "a"},                                # references for an item that needs none
    {"ev": "cell", "index": 0, "status": "start", "extra": 1},  # an unknown field
    {"ev": "cell", "index": 0, "status": "ok", "error": "x"},  # ends a cell that never started
])
def test_protocol_refuses_forged_events(forged):
    """Is each forged or malformed event (after `ready`) refused as a protocol violation, never believed?"""
    from autograder.worker import Violation

    protocol = _protocol()
    _feed(protocol, {"ev": "ready"})
    with pytest.raises(Violation):
        _feed(protocol, forged)


def test_protocol_refuses_a_case_twice_and_unknown_cases():
    """Can a sandbox report a case twice, or a case the job does not have (say, to plant outputs)?"""
    from autograder.worker import Violation

    start = HONEST[:6]
    case = {"ev": "case", "key": "a", "case": "c1", "outputs": None, "error": "", "error_type": ""}
    protocol = _protocol()
    _feed(protocol, *start, case)
    with pytest.raises(Violation):
        _feed(protocol, case)
    protocol = _protocol()
    _feed(protocol, *start)
    with pytest.raises(Violation):
        _feed(protocol, dict(case, case="hidden-1"))


def test_protocol_refuses_oversized_events():
    """Is a cell event padded to megabytes refused, before it is stored?"""
    from autograder.worker import Violation

    protocol = _protocol()
    _feed(protocol, {"ev": "ready"}, {"ev": "cell", "index": 0, "status": "start"})
    with pytest.raises(Violation):
        _feed(protocol, {"ev": "cell", "index": 0, "status": "ok", "error": "x" * 200_000})
