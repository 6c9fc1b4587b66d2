"""Gradescope: the autograder bundle, and what runs inside Gradescope's container.

`python -m autograder gradescope OUT.zip [NOTEBOOK or WEEK ...]` writes the zip
to upload as a Gradescope "programming assignment" autograder:

    setup.sh          installs Python 3.11 and the pinned requirements (once per image)
    run_autograder    grades /autograder/submission, writes /autograder/results/results.json
    requirements.txt  the project's pinned versions (no Jupyter)
    gradescope.json   which notebooks this assignment grades
    course.yml, autograder/, solutions/, weeks/, .cache/keys/   the course and its answer keys

Inside the container, `python -m autograder.gradescope /autograder` finds the
submitted notebooks by file name (anywhere in the submission, so a GitHub
repository or a few uploaded files both work), lays them out as
SUBMITTED/<student>/<week>/<notebook>.ipynb and grades them with the same
`grade_all` as `python -m autograder grade`: same sandbox, same keys, same
results.json. Notebooks the assignment expects but the submission lacks score 0,
with a test that says which file name was expected.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from .config import ROOT, Course, Notebook, load_course
from .release import GRADING_PACKAGES, TEMPLATES, TORCH_CPU_INDEX, check_built, pinned_requirements, select

MANIFEST = "gradescope.json"
STUDENT = "submission"
COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|-\d+)$")
"""What uploads and LMSs append to a repeated file name: `name (1)`, `name-1`."""


def _render(name: str) -> str:
    import string

    return string.Template((TEMPLATES / name).read_text(encoding="utf-8")).substitute(torch_index=TORCH_CPU_INDEX)


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def build_bundle(course: Course, out_zip: Path, names: list[str] | None = None, root: Path = ROOT,
                 log=print) -> dict:
    """Write the Gradescope autograder zip; returns {"notebooks", "files", "bytes"}."""
    from . import reference
    from .worker import run_reference

    notebooks = select(course, names)
    check_built(course, notebooks, root)
    digests = {nb.id: reference.key_digest(course, nb, root) for nb in notebooks}
    for nb in notebooks:
        reference.load_key(course, nb, run_reference, root)  # computed once, shipped in .cache/keys/
    files: dict[str, tuple[bytes, bool]] = {
        "setup.sh": (_render("gradescope_setup.sh").encode(), True),
        "run_autograder": (_render("gradescope_run_autograder").encode(), True),
        "requirements.txt": (("\n".join(pinned_requirements(GRADING_PACKAGES)) + "\n").encode(), False),
        MANIFEST: (json.dumps({"notebooks": [nb.id for nb in notebooks]}, indent=2).encode(), False),
        "course.yml": (course.source.read_bytes(), False),
    }
    for path in sorted((root / "autograder").rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            files[rel.as_posix()] = (path.read_bytes(), False)
    for folder in ("solutions", "weeks"):
        for nb in course.notebooks:  # every notebook: later items may reuse earlier reference pieces
            path = root / folder / nb.path
            if path.exists():
                files[f"{folder}/{nb.path}"] = (path.read_bytes(), False)
    for nb in notebooks:
        key = root / ".cache" / "keys" / f"{nb.id}-{digests[nb.id]}.agw"
        files[f".cache/keys/{key.name}"] = (key.read_bytes(), False)
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, (data, executable) in sorted(files.items()):
            _add(zf, arcname, data, executable)
    tmp.replace(out_zip)
    size = out_zip.stat().st_size
    log(f"wrote {out_zip}: {len(files)} files, {size / 1024:.0f} KiB, grading {', '.join(nb.id for nb in notebooks)}")
    return {"notebooks": [nb.id for nb in notebooks], "files": len(files), "bytes": size}


def find_submitted(course: Course, expected: list[Notebook], submission: Path) -> tuple[dict[str, Path], list[str]]:
    """The submitted file of each expected notebook (matched by file name), and notes about the rest."""
    by_id = {nb.id: nb for nb in expected}
    found: dict[str, Path] = {}
    notes = []
    for path in sorted(submission.rglob("*.ipynb"), key=lambda p: (len(p.parts), str(p))):
        rel = path.relative_to(submission)
        if ".ipynb_checkpoints" in rel.parts or path.is_symlink() or not path.is_file():
            continue
        stem = COPY_SUFFIX.sub("", path.stem)
        if stem in by_id:
            if stem in found:
                notes.append(f"{rel}: a second copy of {stem}.ipynb; graded {found[stem].relative_to(submission)}")
            else:
                found[stem] = path
        else:
            notes.append(f"{rel}: not a notebook of this assignment; ignored")
    return found, notes


def _missing_tests(nb: Notebook) -> list[dict]:
    return [{
        "name": item.id, "score": 0.0, "max_score": item.points, "status": "failed", "visibility": "visible",
        "output": f"not graded: the submission has no file named {nb.id}.ipynb",
    } for item in nb.auto_items]


def run(autograder_root: Path) -> dict:
    """Grade /autograder/submission and write /autograder/results/results.json; returns the results."""
    from .grade import grade_all

    autograder_root = Path(autograder_root)
    results_path = autograder_root / "results" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        course = load_course()
        wanted = json.loads((ROOT / MANIFEST).read_text())["notebooks"]
        expected = [course.notebook(nb_id) for nb_id in wanted]
        found, notes = find_submitted(course, expected, autograder_root / "submission")
        results = {"score": 0.0, "tests": []}
        if found:
            with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
                submitted = Path(tmp) / "submitted"
                for nb_id, path in found.items():
                    nb = course.notebook(nb_id)
                    target = submitted / STUDENT / nb.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                out = Path(tmp) / "out"
                summary = grade_all(course, submitted, out, progress=None)
                notes += summary["problems"]
                results = json.loads((out / "results" / f"{STUDENT}.json").read_text())
        for nb in expected:
            if nb.id not in found:
                results["tests"].extend(_missing_tests(nb))
        lines = [f"Graded: {', '.join(f'{nb_id}.ipynb' for nb_id in found) or 'nothing'}."]
        missing = [f"{nb.id}.ipynb" for nb in expected if nb.id not in found]
        if missing:
            lines.append(f"Not found in the submission (scored 0): {', '.join(missing)}. "
                         "Upload the notebooks under these exact names.")
        lines += notes
        if results.get("output") and results["output"] not in lines:
            lines.append(results["output"])
        results["output"] = "\n".join(lines)
        results["score"] = round(sum(t["score"] for t in results["tests"]), 4)
        results["execution_time"] = round(time.monotonic() - started, 3)
        results.setdefault("visibility", "visible")
        results.setdefault("stdout_visibility", "hidden")
    except Exception as exc:  # noqa: BLE001 - Gradescope must get a results.json, whatever failed
        traceback.print_exc()
        results = {"score": 0.0, "output": f"The autograder itself failed ({type(exc).__name__}: {exc}); "
                   "your instructor has been shown the details.", "tests": [], "visibility": "visible",
                   "stdout_visibility": "hidden"}
    tmp = results_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(results_path)
    return results


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    results = run(Path(sys.argv[1] if len(sys.argv) > 1 else "/autograder"))
    print(f"score {results['score']} from {len(results['tests'])} tests")
