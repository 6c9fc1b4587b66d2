"""Importing LMS downloads (nbgrader zip_collect-style archives, Canvas's submissions.zip) into SUBMITTED/."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from autograder.__main__ import main
from autograder.config import ROOT, load_course
from autograder.lms import ImportError_, NBGRADER_PATTERN, import_canvas, import_nbgrader
from autograder.policy import parse_timestamp

COURSE = load_course()
NB = COURSE.notebook("day06_scaled_dot_product_attention")
OTHER = next(nb for nb in COURSE.notebooks if nb.week == NB.week and nb.id != NB.id)
NOTEBOOK = (ROOT / "weeks" / NB.path).read_bytes()


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_nbgrader_archive_lands_in_the_submitted_layout(tmp_path):
    """Are zip_collect-style files placed as <student>/<week>/<notebook>.ipynb, newest attempt kept, with timestamp.txt?"""
    inner = make_zip(tmp_path / "inner.zip", {f"{NB.week}_cyd_attempt_2026-01-14-08-00-00_{NB.id}.ipynb": b"cyd"})
    archive = make_zip(tmp_path / "download.zip", {
        f"{NB.week}_ada_attempt_2026-01-15-10-00-00_{NB.id}.ipynb": b"ada old",
        f"{NB.week}_ada_attempt_2026-01-16-09-30-00_{NB.id}.ipynb": b"ada new",
        f"{NB.week}_ada_attempt_2026-01-16-11-00-00_{OTHER.id}.ipynb": b"ada other",
        f"{NB.week}_ben_attempt_2026-01-15-10-00-00_{NB.id}.ipynb": NOTEBOOK,
        "nested/cyd.zip": inner.read_bytes(),
        f"{NB.week}_dan_attempt_2026-01-15-10-00-00_day6_attention.ipynb": b"dan",
        "readme.txt": b"not a notebook",
        "ada_homework.ipynb": b"no pattern",
    })
    into = tmp_path / "submitted"
    report = import_nbgrader(COURSE, archive, into)
    found = sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())
    assert found == sorted([f"ada/{NB.path}", f"ada/{OTHER.path}", f"ada/{NB.week}/timestamp.txt",
                            f"ben/{NB.path}", f"ben/{NB.week}/timestamp.txt",
                            f"cyd/{NB.path}", f"cyd/{NB.week}/timestamp.txt"])
    assert (into / "ada" / NB.path).read_bytes() == b"ada new"
    assert (into / "ben" / NB.path).read_bytes() == NOTEBOOK
    assert parse_timestamp((into / "ada" / NB.week / "timestamp.txt").read_text()) == utc("2026-01-16T11:00:00")
    problems = "\n".join(report.problems)
    assert "older submission of ada" in problems
    assert "readme.txt: not a notebook" in problems
    assert "ada_homework.ipynb: the name does not match the pattern" in problems
    assert "'day6_attention' is not a notebook of this course" in problems and "did you mean" in problems
    assert len(report.imported) == 4 and "imported 4 notebook(s) of 3 student(s)" in report.text()


def test_same_result_as_nbgrader_zip_collect(tmp_path):
    """Does real `nbgrader zip_collect` put the same notebooks and times where our import puts them?"""
    files = {
        f"{NB.week}_ada_attempt_2026-01-15-10-00-00_{NB.id}.ipynb": NOTEBOOK,
        f"{NB.week}_ada_attempt_2026-01-16-09-00-00_{NB.id}.ipynb": NOTEBOOK + b" ",
        f"{NB.week}_ben_attempt_2026-01-17-23-00-00_{NB.id}.ipynb": NOTEBOOK + b"  ",
    }  # whole hours: nbgrader 0.9.6 misreads the minutes of this form (see test_dashed_times_are_read_exactly)
    course = tmp_path / "course"
    archive_dir = course / "downloaded" / NB.week / "archive"
    archive_dir.mkdir(parents=True)
    make_zip(archive_dir / "download.zip", files)
    (course / "weeks" / NB.week).mkdir(parents=True)
    (course / "weeks" / NB.path).write_bytes(NOTEBOOK)
    (course / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "zip_collect", NB.week, "--force"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = tmp_path / "ours"
    import_nbgrader(COURSE, archive_dir / "download.zip", ours)
    theirs = course / "submitted"
    listing = {p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file()}
    assert listing == {p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file()}
    for rel in listing:
        if rel.endswith(".ipynb"):
            assert (theirs / rel).read_bytes() == (ours / rel).read_bytes(), rel
        else:
            assert parse_timestamp((theirs / rel).read_text()) == parse_timestamp((ours / rel).read_text()), rel


def write_roster(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{NB.title} (4242)"])
        writer.writerow(["    Points Possible", "", "", "", "", "10"])
        for name, user_id, login in rows:
            writer.writerow([name, user_id, "", login, "A", ""])
    return path


def test_canvas_download_with_times_and_roster(tmp_path):
    """Does a Canvas archive land under SIS logins, with the API's submission times, and name every file it skipped?"""
    archive = make_zip(tmp_path / "submissions.zip", {
        f"lovelaceada_1001_5001_{NB.id}.ipynb": b"ada",
        f"bitdiddleben_late_1002_5002_{NB.id}-1.ipynb": b"ben again",
        "hackercy_1003_5003_report.pdf": b"%PDF",
        f"reasonerdan_1004_5004_day6.ipynb": b"dan",
        f"strangerx_1999_5999_{NB.id}.ipynb": b"not enrolled",
        "notes.ipynb": b"not Canvas's naming",
    })
    metadata = tmp_path / "submissions.json"
    metadata.write_text(json.dumps([
        {"id": 5001, "user_id": 1001, "submitted_at": "2026-01-15T09:00:00Z", "late": False},
        {"id": 5002, "user_id": 1002, "submitted_at": "2026-01-17T10:00:00Z", "late": True},
        {"id": 5004, "user_id": 1004, "submitted_at": None},
    ]))
    roster = write_roster(tmp_path / "roster.csv", [("Lovelace, Ada", "1001", "ada"), ("Bitdiddle, Ben", "1002", "ben"),
                                                    ("Reasoner, Dan", "1004", "dan")])
    into = tmp_path / "submitted"
    report = import_canvas(COURSE, archive, into, metadata, roster)
    assert (into / "ada" / NB.path).read_bytes() == b"ada"
    assert (into / "ben" / NB.path).read_bytes() == b"ben again"
    assert parse_timestamp((into / "ben" / NB.week / "timestamp.txt").read_text()) == utc("2026-01-17T10:00:00")
    assert parse_timestamp((into / "ada" / NB.week / "timestamp.txt").read_text()) == utc("2026-01-15T09:00:00")
    assert sorted(p.name for p in into.iterdir()) == ["ada", "ben"]
    problems = "\n".join(report.problems)
    assert "report.pdf: not a notebook" in problems
    assert "'day6.ipynb' is not a notebook of this course" in problems
    assert "Canvas user 1999 is not in the roster" in problems
    assert "notes.ipynb: not named the Canvas way" in problems


def test_canvas_without_metadata_warns_about_late_files(tmp_path):
    """Without --metadata, is a file Canvas marks late imported with a warning that its time is unknown?"""
    archive = make_zip(tmp_path / "submissions.zip", {f"bitdiddleben_LATE_1002_5002_{NB.id}.ipynb": b"ben"})
    report = import_canvas(COURSE, archive, tmp_path / "submitted")
    assert (tmp_path / "submitted" / "1002" / NB.path).exists()  # no roster: the Canvas user id names the student
    assert not (tmp_path / "submitted" / "1002" / NB.week / "timestamp.txt").exists()
    assert any("marks it late" in p and "--metadata" in p for p in report.problems)


def test_two_undated_copies_are_refused(tmp_path):
    """When a student has two files for one notebook and no times, is neither imported, and is that said?"""
    archive = make_zip(tmp_path / "d.zip", {f"bena_1002_5002_{NB.id}.ipynb": b"1", f"bena_1002_5003_{NB.id}-1.ipynb": b"2"})
    report = import_canvas(COURSE, archive, tmp_path / "submitted")
    assert not report.imported and "no times to choose between them" in report.problems[0]


def test_unusable_inputs_are_clear_errors(tmp_path, capsys):
    """Do a missing archive, a non-zip, a pattern without student_id and an archive with no match each say what is wrong?"""
    with pytest.raises(ImportError_, match="no such file"):
        import_canvas(COURSE, tmp_path / "missing.zip", tmp_path / "s")
    (tmp_path / "fake.zip").write_text("hello")
    with pytest.raises(ImportError_, match="not a zip archive"):
        import_nbgrader(COURSE, tmp_path / "fake.zip", tmp_path / "s")
    make_zip(tmp_path / "ok.zip", {"x.ipynb": b"{}"})
    with pytest.raises(ImportError_, match="student_id"):
        import_nbgrader(COURSE, tmp_path / "ok.zip", tmp_path / "s", pattern=r"(?P<file_id>\w+)")
    assert main(["import", "nbgrader", str(tmp_path / "ok.zip"), "--into", str(tmp_path / "s")]) == 2
    out = capsys.readouterr().out
    assert "imported 0 notebook(s)" in out and "x.ipynb: the name does not match the pattern" in out
    assert main(["import", "canvas", str(tmp_path / "missing.zip"), "--into", str(tmp_path / "s")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_command_line_import(tmp_path, capsys):
    """Does `python -m autograder import nbgrader` import and print what it matched, exiting 0?"""
    archive = make_zip(tmp_path / "d.zip", {f"{NB.week}_ada_attempt_2026-01-15-10-00-00_{NB.id}.ipynb": NOTEBOOK})
    assert main(["import", "nbgrader", str(archive), "--into", str(tmp_path / "s")]) == 0
    assert f"ada {NB.week}/{NB.id}.ipynb <- " in capsys.readouterr().out
    assert NBGRADER_PATTERN.startswith(".*_(?P<student_id>")


def test_dashed_times_are_read_exactly():
    """Is a zip_collect time like 2026-01-16-09-30-00 read as 09:30:00 UTC (nbgrader's own parse says 09:00)?"""
    from nbgrader.utils import parse_utc

    assert parse_timestamp("2026-01-16-09-30-00") == utc("2026-01-16T09:30:00")
    assert parse_utc("2026-01-16-09-30-00") != datetime(2026, 1, 16, 9, 30)
    assert parse_timestamp("2026-01-16 09:30:00.000000 UTC") == utc("2026-01-16T09:30:00")
    assert parse_timestamp("2026-01-16 10:30:00 Europe/Paris") == utc("2026-01-16T09:30:00")
