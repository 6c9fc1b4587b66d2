"""Benchmark: our grader against real nbgrader, a cold check against a bare torch import.

Builds a synthetic class from the course's own notebooks (complete students and
the demo class's buggy ones), then, in one run on this machine:
  1. grades it with `python -m autograder grade --no-pages` (the gradebook and
     results.json, what `nbgrader autograde` writes) and with plain `grade` (also
     the feedback pages and the class report); answer keys are warmed first, as a
     course computes them once;
  2. grades the same submissions with real `nbgrader autograde`;
  3. times a cold `python -m autograder check NOTEBOOK` against `python -c "import torch"`;
  4. times an in-notebook `check(...)` call;
and prints the three ratios, the peak memory per worker and per sandbox. Speed is
reported as ratios against baselines measured in the same run, never asserted.

    .venv/bin/python bench/benchmark.py [--students N] [--workers W] [--repeat R] [--skip-nbgrader]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

import students as demo_students  # noqa: E402

from autograder.config import load_course  # noqa: E402

PY = sys.executable
KERNEL = "attention-course-bench"


def timed(cmd, **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - start


def synthetic_class(dest: Path, n: int) -> int:
    """n students per notebook: complete ones and the demo class's realistic (non-hostile) ones, in turn."""
    pool = {k: v for k, v in demo_students.load_students().items() if "hostile" not in k and "patcher" not in k}
    names = sorted(pool)
    students = {f"student{i:03d}": pool[names[i % len(names)]] for i in range(n)}
    return len(demo_students.write_class(dest, students))


def bench_grade(cls: Path, workers: int, work: Path) -> dict:
    warm = work / "warm"
    demo_students.write_class(warm, {"warm": demo_students.load_students()["ada_complete"]})
    subprocess.run([PY, "-m", "autograder", "grade", str(warm), "--out", str(work / "warm-out")],
                   check=True, capture_output=True, cwd=ROOT)  # computes and caches the answer keys
    cmd = [PY, "-m", "autograder", "grade", str(cls), "--workers", str(workers), "--out"]
    gradebook_only = timed(cmd + [str(work / "grade-only"), "--no-pages"], cwd=ROOT)
    out = work / "grade-out"
    seconds = timed(cmd + [str(out)], cwd=ROOT)
    db = sqlite3.connect(out / "gradebook.db")
    details = [json.loads(d) for (d,) in db.execute("SELECT detail FROM submissions")]
    return {"seconds": seconds, "gradebook_only": gradebook_only,
            "sandbox_peak_mb": max(d.get("peak_mb", 0) for d in details)}


def nbgrader_course(work: Path, cls: Path) -> Path:
    """An nbgrader course directory holding the same submissions, with the assignments generated."""
    course = work / "nbgrader"
    shutil.copytree(ROOT / "solutions", course / "source")
    shutil.copytree(cls, course / "submitted")
    kernels = work / "jupyter" / "kernels" / KERNEL
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "bench", "language": "python"}))
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.source_directory = 'source'\n"
        "c.CourseDirectory.release_directory = 'release'\n"
        "c.CourseDirectory.submitted_directory = 'submitted'\n"
        f"c.ExecutePreprocessor.kernel_name = {KERNEL!r}\n"
        f"c.Execute.kernel_name = {KERNEL!r}\n"
    )
    return course


def bench_nbgrader(work: Path, cls: Path, weeks: list[str]) -> float:
    course = nbgrader_course(work, cls)
    env = dict(os.environ, JUPYTER_PATH=str(work / "jupyter"), MPLBACKEND="Agg",
               PATH=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # nbgrader runs `alembic`
    nbgrader = [PY, "-m", "nbgrader"]
    for week in weeks:
        subprocess.run(nbgrader + ["generate_assignment", week, "--force"], check=True, capture_output=True,
                       cwd=course, env=env)
    return sum(timed(nbgrader + ["autograde", week, "--force"], cwd=course, env=env) for week in weeks)


def bench_cold_check(notebook: Path, repeat: int) -> tuple[float, float]:
    torch_times, check_times = [], []
    for _ in range(repeat):  # alternate, so both see the same machine load
        torch_times.append(timed([PY, "-c", "import torch"]))
        start = time.perf_counter()
        subprocess.run([PY, "-m", "autograder", "check", str(notebook)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=ROOT)
        check_times.append(time.perf_counter() - start)
    return statistics.median(torch_times), statistics.median(check_times)


IN_NOTEBOOK = """
import math, time, torch
first = time.perf_counter()
from autograder import check
def scaled_dot_product_attention(query, key, value, mask=None):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ value, weights
import io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    check(scaled_dot_product_attention)
    t1 = time.perf_counter() - first
    times = []
    for _ in range(5):
        s = time.perf_counter(); check(scaled_dot_product_attention); times.append(time.perf_counter() - s)
print(t1, sorted(times)[2])
"""


def bench_in_notebook() -> tuple[float, float]:
    out = subprocess.run([PY, "-c", IN_NOTEBOOK], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    first, again = map(float, out.split())
    return first, again


def worker_peak_mb(workers: int) -> float:
    """Peak resident memory of one grading worker after importing everything (VmHWM)."""
    code = ("from autograder.worker import preload; preload(); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    kb = subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return int(kb) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=24,
                        help="class size (default 24, the class the README's figures are for)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-nbgrader", action="store_true", help="skip the slow nbgrader baseline")
    args = parser.parse_args()
    course = load_course()
    with tempfile.TemporaryDirectory(prefix="agw-bench-") as tmp:
        work = Path(tmp)
        cls = work / "submitted"
        n_notebooks = synthetic_class(cls, args.students)
        print(f"synthetic class: {args.students} students, {n_notebooks} notebooks, {args.workers} worker(s)")

        grade = bench_grade(cls, args.workers, work)
        print(f"autograder grade:      {grade['seconds']:7.2f} s  ({grade['seconds'] / n_notebooks * 1000:6.0f} ms per notebook; "
              "gradebook, results.json, feedback pages with pictures, class report)")
        print(f"  ... --no-pages:      {grade['gradebook_only']:7.2f} s  "
              f"({grade['gradebook_only'] / n_notebooks * 1000:6.0f} ms per notebook; gradebook and results.json, "
              "what nbgrader autograde writes)")
        if not args.skip_nbgrader:
            weeks = sorted({w.id for w in course.weeks})
            nbg = bench_nbgrader(work, cls, weeks)
            print(f"nbgrader autograde:    {nbg:7.2f} s  ({nbg / n_notebooks * 1000:6.0f} ms per notebook)")

        sample = next(p for p in sorted(cls.glob("student000/*/*.ipynb")) if "day06" in p.name)
        torch_s, check_s = bench_cold_check(sample, args.repeat)
        print(f"import torch:          {torch_s:7.2f} s  (median of {args.repeat})")
        print(f"cold check:            {check_s:7.2f} s  (median of {args.repeat}, {sample.name})")
        first, again = bench_in_notebook()
        print(f"in-notebook check:     {first:7.3f} s first call, {again:.3f} s after")
        print(f"peak memory:           {worker_peak_mb(args.workers):7.0f} MiB per worker, "
              f"{grade['sandbox_peak_mb']:.0f} MiB per sandbox at most")
        print()
        if not args.skip_nbgrader:
            print(f"RATIO grade speed-up over nbgrader autograde: {nbg / grade['gradebook_only']:6.1f}x   (target >= 30x; "
                  "same outputs as autograde)")
            print(f"RATIO ... with feedback pages and report:     {nbg / grade['seconds']:6.1f}x")
        print(f"RATIO cold check / import torch:              {check_s / torch_s:6.2f}    (target <= 1.5)")
        print(f"RATIO in-notebook check / 0.3 s:              {first / 0.3:6.2f}    (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
