"""Hostile submissions: each is contained, costs only its own item, and changes nothing outside.

One class of students, one threat each (on top of a complete Days 6-7 notebook), is
graded once in a real sandbox with short limits; each test reads its row.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
import uuid

import pytest

from autograder.config import ROOT, load_course
from autograder.grade import grade_all
from conftest import fast_course_file, gradebook_rows
import students as demo_students

D06 = "day06_scaled_dot_product_attention"
MARK = f"agw-{uuid.uuid4().hex[:8]}"
NAME = "agw" + MARK[-8:]  # a process name (at most 15 characters) that only this test's threats take
SET_NAME = f"import ctypes\nctypes.CDLL(None).prctl(15, b'{NAME}')\n"
ITEMS = {item.id: item.points for item in load_course().notebook(D06).auto_items}
"""Day 6's auto-graded items and their points (course.yml)."""

# name: (edits, the item(s) that must get 0 or None, a phrase its message or a cell problem must contain)
THREATS = {
    "loop_in_function": ({"attention_flops": "def attention_flops(a, b, c, d):\n    while True:\n        pass\n"},
                         "attention_flops", "CPU time"),
    "loop_at_top_level": ({"+x": "while True:\n    pass\n"}, None, "CPU time"),
    "memory_bomb": ({"+x": "hog = bytearray(10**11)\n"}, None, "MemoryError"),
    "memory_bomb_in_function": ({"causal_mask": "def causal_mask(size, device=None):\n"
                                 "    return [bytearray(2 * 10**9) for _ in range(10)]\n"}, "causal_mask", ""),
    "process_bomb": ({"+x": SET_NAME + "import os, time\nfor _ in range(10000):\n    try:\n        if os.fork() == 0:\n"
                      "            time.sleep(300)\n            os._exit(0)\n    except OSError:\n        break\n"}, None, ""),
    "sys_exit": ({"+x": "import sys\nsys.exit(0)\n"}, None, "SystemExit"),
    "os_exit_in_function": ({"causal_mask": "import os\ndef causal_mask(size, device=None):\n    os._exit(0)\n"},
                            "causal_mask", "ended itself"),
    "kill_parent_and_group": ({"+x": "import os, signal\nfor target in (os.getppid(), 0, -1):\n    try:\n"
                               "        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\n"
                               "os.killpg(os.getpgid(0), signal.SIGKILL)\n"}, None, ""),
    "escapes_group_and_sleeps": ({"+x": SET_NAME + "import ctypes, os, time\nctypes.CDLL(None).prctl(1, 0)\n"
                                  "if os.fork() == 0:\n    os.setsid()\n    ctypes.CDLL(None).prctl(1, 0)\n"
                                  "    time.sleep(600)\ntry:\n    os.setsid()\nexcept OSError:\n    pass\ntime.sleep(600)\n"}, None, "wall time"),
    "ignores_sigterm": ({"+x": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                         "    signal.signal(s, signal.SIG_IGN)\n",
                         "attention_flops": "def attention_flops(a, b, c, d):\n    while True:\n        pass\n"},
                        "attention_flops", "CPU time"),
    "segfault": ({"+x": "import ctypes\nctypes.string_at(0)\n"}, None, "SIGSEGV"),
    "c_stack_overflow": ({"+x": "import sys\nsys.setrecursionlimit(10**8)\nnest = []\nfor _ in range(10**7):\n"
                          "    nest = [nest]\nrepr(nest)\n"}, None, ""),
    "reads_stdin": ({"+x": "answer = input('score? ')\n"}, None, "EOFError"),
    "overrides_builtins": ({"+x": "import builtins\nbuiltins.len = lambda x: 0\nbuiltins.type = lambda *a: int\n"}, None, ""),
    "nan_output": ({"attention_flops": "def attention_flops(a, b, c, d):\n    return float('nan')\n",
                    "scaled_dot_product_attention": "def scaled_dot_product_attention(query, key, value, mask=None):\n"
                    "    w = torch.full((*query.shape[:-1], key.shape[-2]), float('nan'), dtype=query.dtype)\n"
                    "    return w @ value, w\n"}, ("scaled_dot_product_attention", "attention_flops"), "NaN values"),
    "huge_output": ({"causal_mask": "def causal_mask(size, device=None):\n    return torch.ones(5000, 5000, dtype=torch.float64)\n"},
                    "causal_mask", "larger than any expected output"),
    "prints_100mb": ({"+x": "for _ in range(100):\n    print('x' * 2**20)\n"}, None, ""),
    "reads_secrets": ({"+x": f"import glob, os\nfound = []\nfor p in ['{ROOT}/solutions', '{ROOT}/autograder/hidden', '{ROOT}/.cache', '{ROOT}/.git']:\n"
                       "    found += glob.glob(p + '/**/*', recursive=True)\n"
                       f"assert not found and not os.path.exists('{ROOT}/course.yml'), 'secrets visible'\n"
                       "open('/secrets-" + MARK + "', 'w')\n"}, None, "Read-only file system"),
    "writes_outside": ({"+x": f"import os\nfor p in ['{ROOT}/{MARK}', '/tmp/{MARK}', '/dev/shm/{MARK}', '/var/tmp/{MARK}']:\n"
                        "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
                        f"open('{ROOT}/autograder/compare.py', 'a').write('# pwned')\n"}, None, ""),
    "leaks_inputs_in_errors": ({"attention_flops": "def attention_flops(n_queries, n_keys, d_k, d_v):\n"
                                "    raise ValueError(f'LEAKED {n_queries} {n_keys} {d_k} {d_v}')\n"},
                               "attention_flops", "not shown on hidden cases"),
    "network": ({"+x": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n"}, None, "Error"),
}


GUARDED = ["course.yml", "autograder/compare.py", "autograder/grade.py", f"solutions/week1/{D06}.ipynb",
           f"weeks/week1/{D06}.ipynb", f"autograder/hidden/{D06}.py", f"autograder/public/{D06}.agw"]


def tree_digest() -> str:
    """A digest of the course files the threats try to read or write."""
    h = hashlib.sha256()
    for rel in GUARDED:
        h.update(rel.encode() + (ROOT / rel).read_bytes())
    return h.hexdigest()


HOSTILE_LIMITS = {"cell_seconds": 2, "notebook_seconds": 30, "item_seconds": 2}
"""Shorter still than FAST_LIMITS: a threat that loops or sleeps meets its limit twice (the retry), and
the honest cells and items of Days 6-7 need a fraction of a second of CPU time each."""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    fast_course = load_course(fast_course_file(tmp_path_factory.mktemp("hostile-course"), HOSTILE_LIMITS))
    cls = tmp_path_factory.mktemp("hostile")
    students = {name: {D06: dict(edits, **{"*": "solution"})} for name, (edits, _, _) in THREATS.items()}
    students["zz_honest"] = {D06: {"*": "solution"}}
    demo_students.write_class(cls, students)
    out = tmp_path_factory.mktemp("hostile-out")
    before = tree_digest()
    summary = grade_all(fast_course, cls, out, workers=2, progress=None)
    db = sqlite3.connect(out / "gradebook.db")
    details = {s: json.loads(d) for s, d in db.execute("SELECT student_id, detail FROM submissions")}
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return {"summary": summary, "rows": gradebook_rows(out), "details": details, "out": out,
            "tree_changed": tree_digest() != before, "integrity": integrity}


def _messages(detail: dict) -> str:
    parts = [c["error"] for c in detail["cell_problems"]]
    for item in detail["items"]:
        parts.append(item["message"])
        parts += [p for c in item["cases"] for p in c["problems"]]
    return "\n".join(parts)


@pytest.mark.parametrize("threat", list(THREATS))
def test_threat_costs_only_its_item(hostile, threat):
    """Does the threatened item get 0 with a clear reason, while every other item is still graded in full?"""
    _, target, phrase = THREATS[threat]
    targets = target if isinstance(target, tuple) else (target,)
    row, detail = hostile["rows"][threat], hostile["details"][threat]
    assert detail["status"] == "graded"
    for item, points in ITEMS.items():
        expected = 0 if item in targets else points
        assert float(row[item]) == expected, f"{threat}: {item} scored {row[item]}\n{_messages(detail)}"
    assert phrase in _messages(detail), _messages(detail)


def test_honest_student_and_gradebook_untouched(hostile):
    """Is the honest student in the same batch graded in full, and is the gradebook intact?"""
    assert float(hostile["rows"]["zz_honest"]["total"]) == sum(ITEMS.values())
    assert hostile["integrity"] == "ok"
    assert hostile["summary"]["graded"] == len(THREATS) + 1


def test_nothing_outside_the_sandbox_changed(hostile):
    """Did no submission leave a file behind, change the course, or leave a process running?"""
    assert not hostile["tree_changed"]
    for path in (ROOT / MARK, f"/tmp/{MARK}", f"/dev/shm/{MARK}", f"/var/tmp/{MARK}", f"/secrets-{MARK}"):
        assert not os.path.exists(path), path
    time.sleep(0.5)
    left = subprocess.run(["pgrep", NAME], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes of the hostile submissions still running: {left}"


def test_sandbox_reports_its_protections(hostile):
    """Does each result say which protections were in force (all of them, as root)?"""
    features = hostile["details"]["zz_honest"]["sandbox"]
    assert features["root"] == "allow-list"
    assert set(features["namespaces"]) >= {"ipc", "mount", "net", "pid", "uts"}
    assert features["user"] == ("nobody" if os.geteuid() == 0 else "unprivileged (no capabilities)")


def test_printing_is_capped(hostile):
    """Is 100 MB of printing cut to the configured output limit instead of filling memory or disk?"""
    detail = hostile["details"]["prints_100mb"]
    assert float(hostile["rows"]["prints_100mb"]["total"]) == sum(ITEMS.values())
    assert len(json.dumps(detail)) < 2 * 2**20


PROBE = """
import json, sys
from autograder import reference
from autograder.config import load_course
from autograder.worker import Pool
probe = ("import os, autograder\\n"
         "assert os.path.exists(os.path.join(os.path.dirname(autograder.__file__), 'exercise.py')), 'package hidden'\\n"
         "assert not os.path.exists(os.path.join(os.path.dirname(autograder.__file__), 'hidden')), 'hidden visible'\\n"
         "assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(autograder.__file__)), 'course.yml'))\\n")
job = {"cells": [{"index": 0, "source": probe}], "skip": [], "items": [],
       "limits": reference.limits_dict(load_course())}
with Pool(1, []) as pool:
    print(json.dumps(pool.run(job)))
"""


def test_course_under_tmp_stays_visible_to_the_sandbox(tmp_path):
    """When the course itself lives under /tmp (which each sandbox covers with a fresh tmpfs), does the
    sandbox still import the grader's public modules, and still not see the rest of the course?"""
    import shutil
    import sys

    course = tmp_path / "course"
    assert str(course).startswith("/tmp/")
    for part in ("autograder", "solutions", "weeks"):
        shutil.copytree(ROOT / part, course / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "course.yml", course / "course.yml")
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=course, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(course)))
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.splitlines()[-1])
    assert result["cells"]["0"] == {"status": "ok", "error": ""}, result["cells"]
    assert result["features"]["root"] == "allow-list"


def test_hidden_inputs_never_reach_the_student_through_their_own_errors(hostile):
    """When a student's function raises an error quoting its inputs, is the message kept on public cases but
    reduced to the error's type on hidden ones (whose inputs are never shown)?"""
    detail = hostile["details"]["leaks_inputs_in_errors"]
    cases = next(i for i in detail["items"] if i["id"] == "attention_flops")["cases"]
    assert any(c["public"] for c in cases) and any(not c["public"] for c in cases)
    for case in cases:
        text = " ".join(case["problems"])
        assert ("LEAKED" in text) == case["public"], (case["case"], text)
    results = json.loads((hostile["out"] / "results" / "leaks_inputs_in_errors.json").read_text())
    leaking = [t["name"] for t in results["tests"] if "LEAKED" in json.dumps(t)]
    assert leaking and all("(public)" in t["output"] for t in results["tests"] if t["name"] in leaking), leaking
    assert "LEAKED" not in json.dumps({k: v for k, v in results.items() if k != "tests"})
