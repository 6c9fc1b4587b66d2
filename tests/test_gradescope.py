"""The Gradescope bundle, run against a simulated /autograder layout in a temporary folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import jsonschema
import pytest

from autograder.config import ROOT, load_course
from autograder.gradescope import build_bundle
from autograder.release import ReleaseError, check_built
from conftest import results_of
from test_release import readable_tmpdir

COURSE = load_course()
NB = COURSE.notebook("day06_scaled_dot_product_attention")

# Gradescope's documented results.json (gradescope-autograders.readthedocs.io, "Autograder Specifications").
VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
RESULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": FORMAT,
        "test_output_format": FORMAT,
        "test_name_format": FORMAT,
        "visibility": VISIBILITY,
        "stdout_visibility": VISIBILITY,
        "extra_data": {"type": "object"},
        "leaderboard": {"type": "array"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "score", "max_score", "status", "output", "visibility"],
            "properties": {
                "score": {"type": "number"},
                "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"},
                "name_format": FORMAT,
                "number": {"type": "string"},
                "output": {"type": "string"},
                "output_format": FORMAT,
                "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": VISIBILITY,
                "extra_data": {"type": "object"},
            },
        }},
    },
}


@pytest.fixture(scope="module")
def bundle():
    """The bundle for the week of Days 6-7, built once; removed afterwards."""
    try:
        check_built(COURSE, [nb for nb in COURSE.notebooks if nb.week == NB.week])
        names = [NB.week]
    except ReleaseError:
        names = [NB.id]  # another notebook of the week is being written: grade Days 6-7 alone
    folder = readable_tmpdir("gradescope-")  # the sandbox must see the simulated /autograder
    path = folder / "autograder.zip"
    build_bundle(COURSE, path, names, log=lambda *a: None)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def run_autograder(bundle: Path, files: dict[str, Path]) -> dict:
    """Unzip into <tmp>/autograder/source, put `files` in submission/, run run_autograder; the results.json."""
    root = Path(tempfile.mkdtemp(prefix="autograder-", dir=bundle.parent)) / "autograder"
    root.parent.chmod(0o755)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    for name in ("run_autograder", "setup.sh"):
        (root / "source" / name).chmod(0o755)
    (root / "submission").mkdir()
    for name, path in files.items():
        target = root / "submission" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable, MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_bundle_has_what_gradescope_runs(bundle):
    """Are setup.sh and run_autograder at the zip's root and executable, valid bash, with the course and its keys?"""
    with zipfile.ZipFile(bundle) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        manifest = json.loads(zf.read("gradescope.json"))
        setup = zf.read("setup.sh").decode()
        runner = zf.read("run_autograder").decode()
        requirements = zf.read("requirements.txt").decode().split()
    for name in ("setup.sh", "run_autograder"):
        assert infos[name].external_attr >> 16 & 0o111, f"{name} is not executable"
    for text in (setup, runner):
        assert text.startswith("#!/usr/bin/env bash")
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert "python3.11" in setup and "-r requirements.txt" in setup and "/autograder/venv" in setup
    assert "-m autograder.gradescope" in runner
    assert NB.id in manifest["notebooks"]
    for nb_id in manifest["notebooks"]:
        nb = COURSE.notebook(nb_id)
        assert f"weeks/{nb.path}" in infos and f"solutions/{nb.path}" in infos
        assert any(n.startswith(f".cache/keys/{nb_id}-") for n in infos), f"no answer key for {nb_id}"
    assert "autograder/hidden/__init__.py" in infos and "course.yml" in infos
    assert any(r.startswith("torch==") for r in requirements) and not any("jupyterlab" in r for r in requirements)


def test_run_autograder_gives_the_scores_of_grade(bundle, graded_demo, demo_class):
    """Does the container's run give the same tests and scores as `python -m autograder grade`, in Gradescope's schema?"""
    _, out = graded_demo
    for student in ("cleo_no_scaling", "ada_complete"):
        submitted = demo_class / student / NB.path
        # a student who uploads through a browser twice may send "name (1).ipynb"
        results = run_autograder(bundle, {f"{NB.id} (1).ipynb": submitted})
        jsonschema.validate(results, RESULTS_SCHEMA)
        expected = {name: t for name, t in results_of(out, student).items()
                    if name.split(":")[0] in {i.id for i in NB.auto_items}}
        got = {t["name"]: t for t in results["tests"] if t["name"].split(":")[0] in {i.id for i in NB.auto_items}}
        assert set(got) == set(expected)
        for name, test in expected.items():
            assert (got[name]["score"], got[name]["max_score"], got[name]["status"]) == (
                test["score"], test["max_score"], test["status"]), name
        assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]), abs=1e-3)
        assert f"{NB.id}.ipynb" in results["output"]
    assert sum(t["score"] for t in got.values()) == pytest.approx(sum(i.points for i in NB.auto_items))  # ada: full


def test_missing_notebook_scores_zero_and_says_why(bundle, tmp_path):
    """When no file has an expected name, is every item a failed test saying which file name was expected?"""
    stray = tmp_path / "homework.ipynb"
    shutil.copy(ROOT / "weeks" / NB.path, stray)
    results = run_autograder(bundle, {"homework.ipynb": stray})
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 0
    names = {t["name"] for t in results["tests"]}
    assert {i.id for i in NB.auto_items} <= names
    for test in results["tests"]:
        assert test["status"] == "failed" and test["max_score"] > 0 and ".ipynb" in test["output"]
    assert "homework.ipynb" in results["output"] and f"{NB.id}.ipynb" in results["output"]


def test_schema_rejects_what_gradescope_would_reject():
    """Is the schema used above strict enough to catch a misspelt field or a bad status?"""
    good = {"score": 1, "tests": [{"name": "a", "score": 1, "max_score": 1, "status": "passed", "output": "",
                                   "visibility": "visible"}]}
    jsonschema.validate(good, RESULTS_SCHEMA)
    for bad in ({**good, "scroe": 1}, {"tests": [dict(good["tests"][0], status="ok")]},
                {"tests": [dict(good["tests"][0], visibility="students")]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, RESULTS_SCHEMA)


def test_hidden_cases_are_shown_after_publishing_by_default(bundle, graded_demo, demo_class):
    """On Gradescope, are the tests of hidden cases `after_published` (course.yml's default), and public ones visible?

    Otherwise students see every hidden case's result at once and can probe them by resubmitting.
    """
    from autograder.gradebook import Gradebook

    assert COURSE.grading.hidden_visibility == "after_published"
    _, out = graded_demo
    book = Gradebook(out / "gradebook.db")
    public = {f"{item['id']}: {case['case']}": case["public"] for nb in book.results("cleo_no_scaling")
              for item in nb["items"] for case in item["cases"] if nb["notebook_id"] == NB.id}
    book.close()
    results = run_autograder(bundle, {f"{NB.id}.ipynb": demo_class / "cleo_no_scaling" / NB.path})
    jsonschema.validate(results, RESULTS_SCHEMA)
    shown = {t["name"]: t["visibility"] for t in results["tests"] if t["name"] in public}
    assert set(shown) == set(public) and {True, False} == set(public.values())
    for name, visibility in shown.items():
        assert visibility == ("visible" if public[name] else "after_published"), name
    assert any(t["status"] == "failed" and shown[t["name"]] == "after_published"
               for t in results["tests"] if t["name"] in shown), "cleo fails some hidden case"


@pytest.mark.parametrize("setting", ["visible", "hidden", "after_due_date", "after_published"])
def test_hidden_visibility_follows_course_yml(setting, graded_demo, tmp_path):
    """Does `grading.hidden_visibility` in course.yml set the visibility of every hidden case's test in results.json?"""
    import yaml

    from autograder.gradebook import Gradebook
    from autograder.report import write_outputs

    data = yaml.safe_load((ROOT / "course.yml").read_text())
    data["grading"]["hidden_visibility"] = setting
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    course = load_course(tmp_path / "course.yml")
    assert course.grading.hidden_visibility == setting
    _, out = graded_demo
    shutil.copy(out / "gradebook.db", tmp_path / "gradebook.db")
    book = Gradebook(tmp_path / "gradebook.db")
    try:
        write_outputs(course, book, tmp_path, pages=False)
        cases = {f"{item['id']}: {case['case']}": case["public"] for nb in book.results("cleo_no_scaling")
                 for item in nb["items"] for case in item["cases"]}
    finally:
        book.close()
    results = json.loads((tmp_path / "results" / "cleo_no_scaling.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    by_name = {t["name"]: t["visibility"] for t in results["tests"]}
    assert {by_name[n] for n, public in cases.items() if not public} == {setting}
    assert {by_name[n] for n, public in cases.items() if public} == {"visible"}


def test_hidden_visibility_is_checked_when_the_course_loads(tmp_path):
    """Is a value Gradescope does not know refused with exit 2 and the value meant, and is the default after_published?"""
    import yaml

    from autograder.__main__ import main
    from autograder.config import ConfigError

    data = yaml.safe_load((ROOT / "course.yml").read_text())
    data["grading"]["hidden_visibility"] = "after_publish"
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"hidden_visibility should be one of .*did you mean 'after_published'"):
        load_course(tmp_path / "course.yml")
    assert main(["--course", str(tmp_path / "course.yml"), "summary", str(tmp_path)]) == 2
    del data["grading"]["hidden_visibility"]
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    assert load_course(tmp_path / "course.yml").grading.hidden_visibility == "after_published"
