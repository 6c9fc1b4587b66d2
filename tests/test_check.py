"""The student's check: in the notebook and from the shell, on public cases only."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import nbformat
import pytest

from autograder import check
from autograder.check import CheckError, CheckFailed, check_notebook
from autograder.config import ROOT

D06 = "day06_scaled_dot_product_attention"
SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)


@pytest.fixture(scope="module")
def reference_ns():
    """The Days 6-7 solution cells executed in a namespace (the reference objects, for these tests)."""
    ns: dict = {}
    nb = nbformat.read(ROOT / "solutions" / "week1" / f"{D06}.ipynb", as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or cell.source.startswith("import")):
            exec(SOLUTION.sub("", cell.source).replace("from autograder import check", ""), ns)
    return ns


def test_correct_function_passes(reference_ns, capsys):
    """Does check() on a correct function pass quietly and say so?"""
    assert check(reference_ns["scaled_dot_product_attention"]) is None
    assert "PASS scaled_dot_product_attention: 6/6 public cases passed" in capsys.readouterr().out


def test_mistake_is_named_without_showing_inputs(reference_ns):
    """Does check() on a known mistake fail with the case, the numbers and the named mistake?"""
    torch, math = reference_ns["torch"], reference_ns["math"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        scores = query @ key.transpose(-2, -1) / query.size(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, -1).nan_to_num()
        return w @ value, w

    with pytest.raises(CheckFailed) as err:
        check(scaled_dot_product_attention)
    text = err.value.text
    assert "FAIL scaled_dot_product_attention" in text and "case 2d-float64" in text
    assert "largest difference" in text and "divided by d_k instead of sqrt(d_k)" in text
    assert "array(" not in text and "tensor(" not in text  # inputs are described, never printed
    assert err.value._render_traceback_()[0].startswith("FAIL")
    del math


def test_wrong_return_form_is_explained(reference_ns):
    """Is returning only the output (not the pair) explained as such?"""
    torch = reference_ns["torch"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        return torch.softmax(query @ key.transpose(-2, -1), -1) @ value

    with pytest.raises(CheckFailed, match=r"should return a tuple \(output, weights\)"):
        check(scaled_dot_product_attention)


def test_quiz_check_accepts_any_valid_letter_but_not_others():
    """Does the public quiz check only validate the form (it must not reveal the answer)?"""
    assert check("C", item="quiz_sqrt_dk") is None
    assert check("b", item="quiz_sqrt_dk") is None
    with pytest.raises(CheckFailed, match="not one of A, B, C, D"):
        check("Z", item="quiz_sqrt_dk")


def test_unknown_object_suggests_the_item():
    """Does checking a function whose name is not an item suggest the closest id?"""
    def casual_mask(size):
        return None

    with pytest.raises(Exception, match="did you mean 'causal_mask'"):
        check(casual_mask)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autograder", "check", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_check_complete_notebook(demo_class):
    """Does the shell check pass a complete notebook, with exit code 0 and valid JSON?"""
    path = demo_class / "ada_complete" / "week1" / f"{D06}.ipynb"
    res = run_cli(path, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["passed"] and data["notebook"] == D06


def test_cli_check_names_mistake(demo_class):
    """Does the shell check of a buggy notebook exit 1 and name the mistake, in short plain text?"""
    res = run_cli(demo_class / "cleo_no_scaling" / "week1" / f"{D06}.ipynb")
    assert res.returncode == 1
    assert "FAIL scaled_dot_product_attention" in res.stdout and "the scores are not scaled" in res.stdout
    assert "PASS causal_mask" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert "hidden" not in res.stdout.split("items pass")[0].replace("(hidden", "")  # only public cases run


def test_cli_check_stub_notebook():
    """Does checking the untouched release notebook fail cleanly, saying what is missing?"""
    res = run_cli(ROOT / "weeks" / "week1" / f"{D06}.ipynb")
    assert res.returncode == 1 and "NotImplementedError" in res.stdout and "Traceback" not in res.stderr


def test_cli_check_unknown_notebook(tmp_path):
    """Does checking a file that is not a course notebook say which names are expected?"""
    path = tmp_path / "day6.ipynb"
    path.write_text("{}")
    res = run_cli(path)
    assert res.returncode == 2 and "not a notebook of this course" in res.stderr


def copy_of_release(folder, mutate=None):
    """The Days 6-7 release notebook, changed by `mutate(data)`, under its own name in `folder`."""
    data = json.loads((ROOT / "weeks" / "week1" / f"{D06}.ipynb").read_text())
    if mutate:
        mutate(data)
    path = folder / f"{D06}.ipynb"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_cli_check_unreadable_notebook_is_a_message(tmp_path):
    """Does checking a notebook whose JSON nests 100,000 deep exit 2 with a message naming it, no traceback?"""
    path = tmp_path / f"{D06}.ipynb"
    path.write_text("[" * 100_000)
    res = run_cli(path)
    assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr
    assert str(path) in res.stderr and "nests deeper than" in res.stderr and "save it from Jupyter" in res.stderr


def test_cli_check_grade_id_list_is_no_crash(tmp_path):
    """Does the shell check of a notebook whose grade_ids are a list and a dict judge it, without a traceback?"""
    def mutate(data):
        data["cells"] = [c for c in data["cells"] if c["cell_type"] != "code"]  # nothing to execute: fast
        for cell in data["cells"]:
            if cell["id"] == "checkpoint_sdpa":
                cell["metadata"]["nbgrader"]["grade_id"] = ["checkpoint_sdpa"]
        data["cells"][0]["metadata"]["nbgrader"] = {"grade_id": {"id": "checkpoint_sdpa"}}

    res = run_cli(copy_of_release(tmp_path, mutate))
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr
    assert "scaled_dot_product_attention is not defined" in res.stdout and "0/5 items pass" in res.stdout


def test_check_notebook_internal_error_is_a_message(tmp_path, monkeypatch, capsys):
    """When the checker itself fails, is it exit 2 and a message naming the file and whose problem it is?"""
    def broken(notebook_id):
        raise RuntimeError("the key is gone")

    monkeypatch.setattr("autograder.reference.load_public", broken)
    path = copy_of_release(tmp_path)
    out = io.StringIO()
    assert check_notebook(path, as_json=True, out=out) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "the key is gone" in err and "tell the instructor" in err and "Traceback" not in err
    assert json.loads(out.getvalue())["passed"] is False


def test_check_internal_error_shows_no_traceback(reference_ns, monkeypatch):
    """In a notebook, does a failure of the checker itself raise CheckError, shown as its message only?"""
    def broken(*args):
        raise KeyError("cases")

    monkeypatch.setattr("autograder.compare.judge_item", broken)
    with pytest.raises(CheckError) as err:
        check(reference_ns["causal_mask"])
    assert "check(causal_mask) could not run (KeyError" in str(err.value) and "tell the instructor" in str(err.value)
    assert err.value._render_traceback_() == str(err.value).splitlines()
    with pytest.raises(CheckError, match="needs a function or class"):
        check(3)
