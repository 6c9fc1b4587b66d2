"""What an instructor sees from `make demo`, `make bench` and the README: readable, consistent, self-contained."""
from __future__ import annotations

import ast
import csv
import re

from autograder.__main__ import main
from autograder.config import ROOT


def _write_gradebook(course, out, late=False):
    """A gradebook.csv as `grade` writes it: one column per item (here item i of the course scores i % 3)."""
    out.mkdir(parents=True, exist_ok=True)
    ids = course.item_ids
    rows = {"ada": {i: course.item(i)[1].points for i in ids}, "ben": {i: float(n % 3) for n, i in enumerate(ids)}}
    with open(out / "gradebook.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_id", *ids, *(["late_penalty"] if late else []), "total"])
        for student, scores in rows.items():
            penalty = [1.5] if late and student == "ben" else [0] if late else []
            w.writerow([student, *(scores[i] for i in ids), *penalty, sum(scores.values()) - sum(penalty)])
    return rows


def test_summary_prints_notebook_totals(course, tmp_path, capsys):
    """Does `summary` print one column per notebook (its points, of its maximum), fit a terminal, and say where
    the per-item CSV is?"""
    rows = _write_gradebook(course, tmp_path / "out")
    assert main(["summary", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, "the table should fit a terminal"
    assert "softmax" not in text, "no item columns"
    header = lines[0].split()
    for nb in course.notebooks:
        label = nb.id.split("_")[0]
        maximum = sum(i.points for i in nb.items if not i.extra_credit)
        assert f"/{maximum:g}" == header[header.index(label) + 1]
    ben = next(line for line in lines if line.startswith("ben")).split()
    expected = [sum(rows["ben"][i.id] for i in nb.items) for nb in course.notebooks]
    assert [float(x) for x in ben[1:1 + len(course.notebooks)]] == expected
    assert f"Points per item: {tmp_path / 'out' / 'gradebook.csv'}" in text


def test_summary_shows_late_penalties_and_needs_a_gradebook(course, tmp_path, capsys):
    """After `finalize` (a late_penalty column), is the penalty shown; without a gradebook, exit 2 with a message?"""
    _write_gradebook(course, tmp_path / "out", late=True)
    assert main(["summary", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "late" in lines[0].split()
    assert "-1.5" in next(line for line in lines if line.startswith("ben")).split()
    assert main(["summary", str(tmp_path / "nowhere")]) == 2
    assert "run grade first" in capsys.readouterr().err


def test_make_demo_prints_the_summary():
    """Does `make demo` end with the per-notebook summary instead of the CSV with a column per item?"""
    demo = re.search(r"^demo:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "-m autograder summary demo/out" in demo and "gradebook.csv" not in demo


def test_bench_default_is_the_class_the_readme_quotes():
    """Is `make bench`'s default class size the one the README's performance figures are for?"""
    tree = ast.parse((ROOT / "bench" / "benchmark.py").read_text())
    default = next(kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--students"
                   for kw in node.keywords if kw.arg == "default")
    quoted = re.findall(r"--students (\d+)", (ROOT / "README.md").read_text())
    assert quoted and all(int(q) == default for q in quoted), (default, quoted)
    assert "bench/benchmark.py" in (ROOT / "Makefile").read_text().split("bench:")[1].split("\n\n")[0]


def test_readme_stands_alone():
    """Does the README stand alone: no ../shared, no local wheel folder, no "this machine", no home folders?"""
    text = (ROOT / "README.md").read_text()
    assert "../" not in text
    assert "this 2-core machine" not in text and "local wheel" not in text
    assert not re.search(r"(?<![\w.])/(home|work|Users|mnt|root)/", text), "a path on someone's machine"
