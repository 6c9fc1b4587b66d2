"""The project's install: supported Python versions, pins that install on the oldest one, no pin that nothing
needs, and a Makefile that stops early, saying what to do, on an unsupported Python.

These tests are fast and offline: they read the metadata of the distributions installed in this environment
(which `make` installs from requirements.txt). The real install on Debian 12's Python 3.11.2 is exercised by
tests/test_release.py, which installs the student release into a new virtual environment made with the oldest
supported interpreter found on the machine.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from autograder.config import ROOT
from autograder.release import GRADING_PACKAGES, STUDENT_PACKAGES, pinned_requirements, project_pins

REQUIRES_PYTHON = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
OLDEST = "3.11.2"
"""The oldest Python supported: Debian 12's python3.11, the one students and servers on Debian have."""

DIRECT = {
    "torch": "the course's subject, the grader's sandbox preloads it",
    "numpy": "answer keys, comparison, wire format",
    "matplotlib": "the notebooks' plots and the feedback pages' pictures",
    "ipython": "the grader runs cells through IPython's InteractiveShell",
    "ipykernel": "the attention-course kernel (make), nbgrader's and the notebook tests' kernel",
    "nbformat": "reading and writing notebooks",
    "PyYAML": "course.yml",
    "nbgrader": "build (nbgrader's preprocessors), the nbgrader course, LMS imports, timestamps",
    "jupytext": "normalize: drafts as percent scripts",
    "pytest": "the tests",
    "markdown-it-py": "the review page renders free-text answers as Markdown",
    "websocket-client": "the browser tests drive Chromium over the DevTools protocol",
    "jupyterlab": "what students run (pinned in the release from these pins)",
    "notebook": "what students run (pinned in the release from these pins)",
    "packaging": "pins and markers (release, these tests)",
    "setuptools": "pip install -e . --no-build-isolation (make)",
}
"""What the project uses itself, and why; everything else in requirements.txt must be needed by these."""


BROKEN_ON_OLDEST = {
    "soupsieve": (SpecifierSet(">=3"), "Soup Sieve 3 needs re's possessive quantifiers, broken before Python 3.11.5 "
                  "(3.0.0 and 3.0.1 say >=3.11 and were yanked for it; later ones require >=3.11.5)"),
}
"""Versions whose metadata accepts Python 3.11.2 but which do not work on it."""


def pins() -> dict[str, str]:
    """{canonical name: pinned version} of requirements.txt."""
    out = {}
    for key, line in project_pins().items():
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        out[key] = spec.version
    return out


def test_supported_pythons_are_stated_alike():
    """Do pyproject.toml, the README and the student release's pyproject state the same supported Pythons, 3.11.2 on?"""
    assert REQUIRES_PYTHON.contains(OLDEST) and REQUIRES_PYTHON.contains("3.11.12")
    assert not REQUIRES_PYTHON.contains("3.11.1") and not REQUIRES_PYTHON.contains("3.12.0")
    student = tomllib.loads((ROOT / "autograder" / "templates" / "student_pyproject.toml").read_text())
    assert SpecifierSet(student["project"]["requires-python"]) == REQUIRES_PYTHON
    readme = (ROOT / "README.md").read_text()
    assert "3.11.2" in readme and "3.12" in readme


def test_every_pin_installs_on_the_oldest_supported_python():
    """Does every distribution pinned in requirements.txt accept Python 3.11.2 (its Requires-Python metadata)?

    soupsieve 4.1.3, for one, requires 3.11.5 and so cannot be installed by Debian 12's python3.11; a few
    versions accept 3.11.2 on paper and fail on it (BROKEN_ON_OLDEST).
    The metadata read is that of the installed distribution, so it must be the pinned version.
    """
    refused, other_version, missing = [], [], []
    for key, version in sorted(pins().items()):
        try:
            dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            missing.append(key)
            continue
        if dist.version.split("+")[0] != version:  # torch 2.13.0+cpu is the pin 2.13.0
            other_version.append(f"{key}: {dist.version} installed, {version} pinned")
            continue
        requires = dist.metadata.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(OLDEST, prereleases=True):
            refused.append(f"{key}=={version} requires Python {requires}")
    for key, (broken, why) in BROKEN_ON_OLDEST.items():
        if broken.contains(pins()[key]):
            refused.append(f"{key}=={pins()[key]}: {why}")
    assert not refused, f"pins that Python {OLDEST} cannot install: {refused}"
    if missing or other_version:
        message = (f"this environment is not requirements.txt (run make to reinstall): "
                   f"missing {missing}, other versions {other_version}")
        if os.environ.get("CI"):
            pytest.fail(message)  # CI has just installed requirements.txt: a difference is a real failure
        pytest.skip(message)


def test_every_pin_is_needed_and_every_need_is_pinned():
    """Is requirements.txt exactly the project's direct needs and what they need (extras included), nothing else?"""
    needed = {canonicalize_name(Requirement(line).name) for line in pinned_requirements(tuple(DIRECT))}
    pinned = set(pins())
    assert not needed - pinned, f"needed but not pinned: {sorted(needed - pinned)}"
    assert not pinned - needed, f"pinned but nothing uses them: {sorted(pinned - needed)}"
    for group in (STUDENT_PACKAGES, GRADING_PACKAGES):
        assert {canonicalize_name(p) for p in group} <= needed


def fake_python(tmp_path: Path, version: str) -> Path:
    """An interpreter that says it is Python `version` (a real one underneath, with sys.version_info replaced)."""
    numbers = tuple(int(x) for x in version.split("."))
    path = tmp_path / f"python{version}"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "Python {version}"; exit 0; fi\n'
        f'exec "{sys.executable}" -c "import sys; sys.version_info = {numbers + ("final", 0)!r}; '
        'exec(sys.argv[1])" "$2"\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("version", ["3.10.13", "3.11.1", "3.11.2", "3.11.9", "3.12.1", "3.13.0"])
def test_makefile_stops_early_on_an_unsupported_python(version, tmp_path):
    """Does `make` refuse, before creating .venv, a Python that pyproject.toml does not support, saying which it
    found and what to do, and accept a supported one?"""
    python = fake_python(tmp_path, version)
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "python-check", f"PYTHON={python}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    if REQUIRES_PYTHON.contains(version):
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and f"is Python {version}" in proc.stderr
        assert "3.11.2" in proc.stderr and "PYTHON=" in proc.stderr
    assert not venv.exists()


def test_makefile_names_a_missing_python_and_checks_an_existing_venv(tmp_path):
    """Does `make` say how to get Python 3.11 when it is missing, and refuse a .venv built with an unsupported one?"""
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "python-check", f"PYTHON={tmp_path / 'python3.11'}",
                           f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not found" in proc.stderr and "apt-get install python3.11" in proc.stderr
    venv = tmp_path / "old"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(fake_python(tmp_path, "3.12.1"))
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "python-check", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "runs Python 3.12.1" in proc.stderr and f"Remove {venv}" in proc.stderr
    stamp = re.search(r"^\$\(STAMP\):.*\| python-check$", (ROOT / "Makefile").read_text(), re.M)
    assert stamp, "the install step must depend on python-check"
