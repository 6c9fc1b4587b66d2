"""The fork server: sandboxes come and go, and the worker itself stays healthy."""
from __future__ import annotations

import subprocess
import sys

from autograder.config import ROOT

SCRIPT = """
import threading, torch
from autograder.worker import preload, run_job
preload()
job = {"cells": [{"index": 0, "source": "x = 1"}], "skip": [], "items": [], "hide": [],
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
    """After several sandboxes in fresh PID namespaces, can the worker still fork, start threads and use torch?"""
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "healthy [1]" in res.stdout
