"""Submissions downloaded from an LMS, into the layout the grader reads.

`python -m autograder import nbgrader ARCHIVE --into SUBMITTED` takes an
archive (a .zip, or a folder) as nbgrader's `zip_collect` does: each file name
is matched with a regular expression that names `student_id`, `file_id` (the
notebook) and optionally `timestamp` (nbgrader's own FileNameCollectorPlugin
does the matching; the default pattern is the one in nbgrader_config.py).

`python -m autograder import canvas submissions.zip --into SUBMITTED` takes
Canvas's "Download Submissions" archive, whose files are named
`<name>_[late_]<user id>_<submission id>_<file name>`. Canvas puts no times in
it: pass `--metadata` with the assignment's submissions from Canvas's API
(`GET /api/v1/courses/:course/assignments/:assignment/submissions`, JSON) or a
CSV with `user_id,submitted_at`, and `--roster` with a Canvas gradebook export
to name students by SIS login instead of Canvas user id.

Both write SUBMITTED/<student>/<week>/<notebook>.ipynb and, when times are
known, SUBMITTED/<student>/<week>/timestamp.txt (nbgrader's file, read by the
late policy: the latest time of the week's notebooks). The report lists what
was imported and, for every file that was not, why.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .config import Course, Notebook, _did_you_mean
from .grade import STUDENT_ID
from .notebook import MAX_NOTEBOOK_BYTES
from .policy import TIMESTAMP_FILE, PolicyError, format_timestamp, parse_timestamp, read_roster

NBGRADER_PATTERN = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)"
"""nbgrader's documented zip_collect example; nbgrader_config.py sets the same."""
CANVAS_NAME = re.compile(
    r"^(?P<name>[^_/]+)_(?:(?P<late>late)_)?(?P<user_id>\d+)_(?:(?P<submission_id>\d+)_)?(?P<filename>.+)$",
    re.IGNORECASE,
)
COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|-\d+)$")
"""What Canvas and browsers append to a file uploaded again: `name-1`, `name (1)`."""
MAX_NESTING = 2


class ImportError_(Exception):
    """The archive itself cannot be used (missing, not a zip): nothing was imported."""


@dataclass
class Entry:
    """One file of the archive."""

    name: str
    """Its path inside the archive (nested archives as outer.zip/inner/file)."""
    data: bytes


@dataclass
class Imported:
    student_id: str
    notebook: Notebook
    source: str
    when: datetime | None
    dest: Path | None = None


@dataclass
class ImportReport:
    imported: list[Imported] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        students = {i.student_id for i in self.imported}
        lines = [f"imported {len(self.imported)} notebook(s) of {len(students)} student(s)"]
        for i in sorted(self.imported, key=lambda i: (i.student_id, i.notebook.id)):
            when = f", submitted {format_timestamp(i.when)}" if i.when else ""
            lines.append(f"  {i.student_id} {i.notebook.week}/{i.notebook.id}.ipynb <- {i.source}{when}")
        if self.problems:
            lines.append(f"not imported or incomplete ({len(self.problems)}):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def read_archive(path: Path) -> list[Entry]:
    """Every file in a .zip (nested .zip files opened too) or a folder."""
    path = Path(path)
    if path.is_dir():
        return [Entry(p.relative_to(path).as_posix(), p.read_bytes()) for p in sorted(path.rglob("*"))
                if p.is_file() and not p.is_symlink()]
    if not path.exists():
        raise ImportError_(f"{path}: no such file or folder")
    try:
        with zipfile.ZipFile(path) as zf:
            return _zip_entries(zf, "", 0)
    except zipfile.BadZipFile:
        raise ImportError_(f"{path}: not a zip archive; pass the downloaded .zip, or a folder of its files") from None


def _zip_entries(zf: zipfile.ZipFile, prefix: str, depth: int) -> list[Entry]:
    entries = []
    for info in zf.infolist():
        if info.is_dir() or "__MACOSX" in info.filename:
            continue
        name = prefix + info.filename
        if info.file_size > MAX_NOTEBOOK_BYTES:
            entries.append(Entry(name, b""))  # reported as too large below
            continue
        data = zf.read(info)
        if name.lower().endswith(".zip") and depth < MAX_NESTING:
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    entries += _zip_entries(inner, name + "/", depth + 1)
                continue
            except zipfile.BadZipFile:
                pass
        entries.append(Entry(name, data))
    return entries


def match_notebook(course: Course, file_id: str) -> Notebook | None:
    """The course notebook a submitted file stands for (by name; `-1` and ` (1)` copies allowed)."""
    stem = Path(file_id).name
    if stem.lower().endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    stem = COPY_SUFFIX.sub("", stem)
    for nb in course.notebooks:
        if nb.id == stem:
            return nb
    return None


def _unknown_notebook(course: Course, name: str, file_id: str) -> str:
    ids = [nb.id for nb in course.notebooks]
    return f"{name}: {Path(file_id).name!r} is not a notebook of this course{_did_you_mean(Path(file_id).stem, ids)}; skipped"


def _basic_checks(entry: Entry) -> str | None:
    if not entry.name.lower().endswith(".ipynb"):
        return f"{entry.name}: not a notebook (.ipynb); skipped"
    if not entry.data:
        return f"{entry.name}: empty, or larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB; skipped"
    return None


def choose_latest(candidates: list[Imported], report: ImportReport) -> list[Imported]:
    """One file per (student, notebook): the latest; two undated copies are both refused."""
    groups: dict[tuple[str, str], list[Imported]] = {}
    for c in candidates:
        groups.setdefault((c.student_id, c.notebook.id), []).append(c)
    chosen = []
    for (student, nb_id), group in groups.items():
        if len(group) == 1:
            chosen.append(group[0])
            continue
        if any(c.when is None for c in group):
            report.problems.append(
                f"{student} {nb_id}: {len(group)} files and no times to choose between them "
                f"({', '.join(c.source for c in group)}); none imported")
            continue
        group.sort(key=lambda c: c.when)
        chosen.append(group[-1])
        for older in group[:-1]:
            report.problems.append(f"{older.source}: an older submission of {student} {nb_id}; "
                                   f"superseded by {group[-1].source}")
    return chosen


def write_submissions(chosen: list[Imported], into: Path, entries: dict[str, bytes]) -> None:
    """SUBMITTED/<student>/<week>/<notebook>.ipynb, and timestamp.txt with the week's latest time."""
    into = Path(into)
    latest: dict[Path, datetime] = {}
    for c in chosen:
        folder = into / c.student_id / c.notebook.week
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{c.notebook.id}.ipynb"
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(entries[c.source])
        tmp.replace(dest)
        c.dest = dest
        if c.when is not None and (folder not in latest or c.when > latest[folder]):
            latest[folder] = c.when
    for folder, when in latest.items():
        stamp = folder / TIMESTAMP_FILE
        if stamp.exists():
            try:
                when = max(when, parse_timestamp(stamp.read_text(encoding="utf-8", errors="replace")))
            except PolicyError:
                pass
        stamp.write_text(format_timestamp(when) + "\n", encoding="utf-8")


def import_nbgrader(course: Course, archive: Path, into: Path, pattern: str = NBGRADER_PATTERN) -> ImportReport:
    """Import an archive named the zip_collect way (see the module docstring)."""
    from nbgrader.plugins import FileNameCollectorPlugin

    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ImportError_(f"the file-name pattern is not a regular expression: {exc}") from None
    missing = {"student_id", "file_id"} - set(compiled.groupindex)
    if missing:
        raise ImportError_(f"the file-name pattern must name the groups (?P<student_id>...) and (?P<file_id>...); "
                           f"missing: {', '.join(sorted(missing))}")
    quiet = logging.getLogger("autograder.lms.nbgrader")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    collector = FileNameCollectorPlugin(named_regexp=pattern, log=quiet)
    report = ImportReport()
    entries = read_archive(archive)
    candidates = []
    for entry in entries:
        problem = _basic_checks(entry)
        if problem:
            report.problems.append(problem)
            continue
        info = collector.collect(entry.name)
        if not info:
            report.problems.append(f"{entry.name}: the name does not match the pattern {pattern!r}; skipped")
            continue
        student, file_id = info.get("student_id") or "", info.get("file_id") or ""
        if not STUDENT_ID.match(student):
            report.problems.append(f"{entry.name}: student id {student!r} is not allowed "
                                   "(letters, digits, . _ @ + - only); skipped")
            continue
        nb = match_notebook(course, file_id)
        if nb is None:
            report.problems.append(_unknown_notebook(course, entry.name, file_id))
            continue
        when = None
        if info.get("timestamp"):
            try:
                when = parse_timestamp(info["timestamp"])
            except PolicyError as exc:
                report.problems.append(f"{entry.name}: timestamp {exc}; imported without a time")
        candidates.append(Imported(student, nb, entry.name, when))
    report.imported = choose_latest(candidates, report)
    write_submissions(report.imported, into, {e.name: e.data for e in entries})
    return report


def read_canvas_metadata(path: Path) -> dict[str, datetime]:
    """{Canvas user id: submission time} from the submissions API's JSON, or a CSV user_id,submitted_at."""
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    rows: list[dict]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportError_(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        rows = data if isinstance(data, list) else data.get("submissions", []) if isinstance(data, dict) else []
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    times: dict[str, datetime] = {}
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.get("user_id") in (None, ""):
            raise ImportError_(f"{path}: submission {n} has no user_id")
        if not row.get("submitted_at"):
            continue  # Canvas lists students who submitted nothing, with submitted_at null
        try:
            when = parse_timestamp(str(row["submitted_at"]))
        except PolicyError as exc:
            raise ImportError_(f"{path}: submission {n}: submitted_at {exc}") from None
        user = str(row["user_id"]).strip()
        times[user] = max(when, times.get(user, when))
    return times


def import_canvas(course: Course, archive: Path, into: Path, metadata: Path | None = None,
                  roster: Path | None = None) -> ImportReport:
    """Import Canvas's "Download Submissions" archive (see the module docstring)."""
    times = read_canvas_metadata(metadata) if metadata else {}
    students: dict[str, str] = {}
    if roster:
        try:
            _, rows = read_roster(roster)
        except PolicyError as exc:
            raise ImportError_(str(exc)) from None
        for row in rows:
            login = (row.get("SIS Login ID") or row.get("SIS User ID") or "").strip()
            students[row["ID"].strip()] = login or row["ID"].strip()
    report = ImportReport()
    entries = read_archive(archive)
    candidates = []
    for entry in entries:
        problem = _basic_checks(entry)
        if problem:
            report.problems.append(problem)
            continue
        base = Path(entry.name).name
        m = CANVAS_NAME.match(base)
        if not m:
            report.problems.append(f"{entry.name}: not named the Canvas way (<name>_<user id>_<submission id>_<file>); skipped")
            continue
        user = m["user_id"]
        if roster and user not in students:
            report.problems.append(f"{entry.name}: Canvas user {user} is not in the roster {Path(roster).name}; skipped")
            continue
        student = students.get(user, user)
        if not STUDENT_ID.match(student):
            report.problems.append(f"{entry.name}: student id {student!r} is not allowed; skipped")
            continue
        nb = match_notebook(course, m["filename"])
        if nb is None:
            report.problems.append(_unknown_notebook(course, entry.name, m["filename"]))
            continue
        when = times.get(user)
        if when is None and metadata:
            report.problems.append(f"{entry.name}: no submission time for Canvas user {user} in {Path(metadata).name}; "
                                   "imported without a time")
        elif when is None and m["late"]:
            report.problems.append(f"{entry.name}: Canvas marks it late, but without --metadata its time is unknown; "
                                   "imported without a time")
        candidates.append(Imported(student, nb, entry.name, when))
    report.imported = choose_latest(candidates, report)
    write_submissions(report.imported, into, {e.name: e.data for e in entries})
    return report
