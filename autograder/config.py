"""Typed course configuration, loaded from `course.yml`.

Every field is documented here and in `course.yml` itself. Unknown keys are
errors that name the file, the key and the closest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WEEK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
"""The values of `visibility` in Gradescope's results.json."""
RESERVED_PREFIXES = ("test_", "reuse_")
"""grade_id prefixes of the notebooks' test cells and reuse cells: no item id may start with them."""


class ConfigError(ValueError):
    """A mistake in course.yml, phrased for the person who edits it."""


@dataclass(frozen=True)
class Item:
    """One graded item: its id is the name the student defines."""

    id: str
    """Name of the function, class or quiz variable; also the nbgrader grade_id."""
    points: float
    """Points the item is worth."""
    manual: bool = False
    """True for free-text checkpoints graded by hand (the grader only collects the text)."""
    extra_credit: bool = False
    """True when the points are not counted in the maximum score."""


@dataclass(frozen=True)
class Notebook:
    """One notebook of the course."""

    id: str
    """File stem, e.g. day06_scaled_dot_product_attention."""
    title: str
    """Title shown in feedback and reports."""
    items: tuple[Item, ...]
    """Graded items, in the order they appear in the notebook."""
    week: str = ""
    """Filled in from the enclosing week."""

    @property
    def path(self) -> str:
        """Path of the notebook relative to solutions/ or weeks/."""
        return f"{self.week}/{self.id}.ipynb"

    @property
    def auto_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if not i.manual)


@dataclass(frozen=True)
class Week:
    """One week: a folder of notebooks under weeks/ and solutions/."""

    id: str
    """Folder name, e.g. week1."""
    notebooks: tuple[Notebook, ...]
    """The week's notebooks."""
    due: datetime | None = None
    """Due date of the week's notebooks, with its UTC offset (2026-01-16T23:59:00+01:00, or ...Z for UTC).
    None (the default): no deadline, nothing is late. Applied by `python -m autograder finalize`."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use while it is graded."""

    cell_seconds: float = 30.0
    """CPU time for one notebook cell (a cell that waits instead of computing is stopped after
    4 times this much wall time plus 2 s, so a busy machine never costs a point)."""
    notebook_seconds: float = 180.0
    """CPU time for executing a whole notebook (all cells), with the same wall-time backstop."""
    item_seconds: float = 10.0
    """CPU time for running all cases of one graded item (retried once when it runs out)."""
    memory_mb: int = 4096
    """Address-space limit of the sandbox process, in MiB."""
    processes: int = 64
    """Most processes the sandbox may have at once (enforced in the sandbox, with or without root)."""
    file_mb: int = 64
    """Largest file the sandbox may write, in MiB."""
    output_kb: int = 256
    """Printed output kept per notebook, in KiB (the rest is dropped)."""


@dataclass(frozen=True)
class Grading:
    """How the instructor's grader behaves."""

    hidden_seed: int
    """Secret seed of the hidden cases: every student meets the same cases."""
    public_seed: int = 0
    """Seed of the public cases shipped with the student release."""
    workers: int = 0
    """Grading processes; 0 means one per CPU core."""
    limits: Limits = field(default_factory=Limits)
    """Resource limits of the sandbox."""
    hidden_visibility: str = "after_published"
    """When Gradescope shows students the tests of hidden cases (results.json's per-test `visibility`):
    `after_published` (the default: once the instructor publishes the grades), `after_due_date`,
    `hidden` (never) or `visible` (at once, so students can probe them by resubmitting).
    Public cases, and items without cases, are always `visible`."""


@dataclass(frozen=True)
class LatePolicy:
    """How work handed in after its week's due date is scored (`python -m autograder finalize`).

    Lateness is measured from the submission's timestamp (nbgrader's
    timestamp.txt, or the LMS's submission time) to the week's `due`. The
    defaults take nothing off.
    """

    grace_minutes: float = 0.0
    """Minutes after the due date during which a submission still counts as on time."""
    penalty_per_day: float = 0.0
    """Fraction of the notebook's points possible taken off per started day late, past the grace period
    (0.1 = 10%): a fraction of the points possible, as Canvas deducts, not of the points earned; a late
    notebook never scores below 0."""
    max_penalty: float = 1.0
    """The largest fraction taken off by penalty_per_day, however late (0.5 = never more than half the points possible)."""
    zero_after_days: float = 0.0
    """Work more than this many days late (past the grace period) scores 0; 0 means no such cut-off."""


@dataclass(frozen=True)
class Course:
    """The whole course."""

    name: str
    """Course title."""
    grading: Grading
    """Grader settings."""
    weeks: tuple[Week, ...]
    """Weeks, in teaching order."""
    late: LatePolicy = field(default_factory=LatePolicy)
    """Late policy (grace period and penalties); applies to weeks that have a `due` date."""
    source: Path = ROOT / "course.yml"

    @property
    def notebooks(self) -> tuple[Notebook, ...]:
        return tuple(nb for w in self.weeks for nb in w.notebooks)

    def notebook(self, notebook_id: str) -> Notebook:
        for nb in self.notebooks:
            if nb.id == notebook_id:
                return nb
        raise ConfigError(
            f"unknown notebook {notebook_id!r}{_did_you_mean(notebook_id, [n.id for n in self.notebooks])}"
        )

    def item(self, item_id: str) -> tuple[Notebook, Item]:
        for nb in self.notebooks:
            for it in nb.items:
                if it.id == item_id:
                    return nb, it
        ids = [i.id for nb in self.notebooks for i in nb.items]
        raise ConfigError(f"unknown graded item {item_id!r}{_did_you_mean(item_id, ids)}")

    @property
    def item_ids(self) -> list[str]:
        return [i.id for nb in self.notebooks for i in nb.items]


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls, data, where: str, path: Path):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where} should be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("week", "source")}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{path}: unknown key {where}.{key}{_did_you_mean(str(key), fields)}; "
                f"known keys: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing key {where}.{name}")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}", path)
    return cls(**kwargs)


def _convert(hint, value, where: str, path: Path):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner, value, where, path)
    if hint is datetime:
        return _datetime(value, where, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, path)
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {where} should be a list")
        return tuple(_convert(inner, v, f"{where}[{i}]", path) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {where} should be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{path}: {where} should be a non-negative integer, got {value!r}")
        return value
    if hint is float:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0):
            raise ConfigError(f"{path}: {where} should be a non-negative number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where} should be a string, got {value!r}")
        return value
    raise TypeError(hint)


def _datetime(value, where: str, path: Path) -> datetime:
    """A date and time with its UTC offset, from YAML's own timestamp or an ISO 8601 string."""
    example = "a date, a time and a UTC offset, e.g. 2026-01-16T23:59:00+01:00"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"{path}: {where} should be {example}; got {value!r}") from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        raise ConfigError(f"{path}: {where} has no time of day; write {example}")
    elif not isinstance(value, datetime):
        raise ConfigError(f"{path}: {where} should be {example}; got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"{path}: {where} has no UTC offset, so its moment is ambiguous; write {example}")
    return value


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # noqa: BLE001 - an unhashable key: let construct_mapping say so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the course repository or pass --course") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. a timestamp YAML recognizes but cannot build (2026-13-45): ValueError from datetime
        raise ConfigError(f"{path}: not valid YAML: {type(exc).__name__}: {exc}") from None


def load_course(path: str | os.PathLike | None = None) -> Course:
    """Read and validate course.yml (default: the repository's own).

    This checks course.yml on its own; `autograder.crosscheck.check_course_files`
    checks it against the solution notebooks, exercises/ and hidden/ (the command
    line does both).
    """
    path = Path(path) if path else ROOT / "course.yml"
    data = _read_yaml(path)
    course = _build(Course, data, "course", path)
    for name in ("penalty_per_day", "max_penalty"):
        if getattr(course.late, name) > 1:
            raise ConfigError(f"{path}: course.late.{name} is a fraction of the points, between 0 and 1; "
                              f"got {getattr(course.late, name)!r}")
    if course.grading.hidden_visibility not in VISIBILITIES:
        raise ConfigError(f"{path}: course.grading.hidden_visibility should be one of {', '.join(VISIBILITIES)}; "
                          f"got {course.grading.hidden_visibility!r}"
                          f"{_did_you_mean(course.grading.hidden_visibility, VISIBILITIES)}")
    for f in dataclasses.fields(Limits):
        if getattr(course.grading.limits, f.name) <= 0:
            raise ConfigError(f"{path}: course.grading.limits.{f.name} should be more than 0, "
                              f"got {getattr(course.grading.limits, f.name)!r}")
    weeks, seen, week_ids, nb_ids = [], set(), set(), set()
    for week in course.weeks:
        if not WEEK_RE.match(week.id):
            raise ConfigError(f"{path}: week id {week.id!r} is not a folder name (letters, digits, _ . -)")
        if week.id in week_ids:
            raise ConfigError(f"{path}: week id {week.id!r} appears twice")
        week_ids.add(week.id)
        nbs = []
        for nb in week.notebooks:
            if not ID_RE.match(nb.id):
                raise ConfigError(f"{path}: notebook id {nb.id!r} in {week.id} is not a Python identifier "
                                  "(it names autograder/exercises/<id>.py)")
            if nb.id in nb_ids:
                raise ConfigError(f"{path}: notebook id {nb.id!r} appears twice; ids are unique across the course")
            nb_ids.add(nb.id)
            for it in nb.items:
                if not ID_RE.match(it.id):
                    raise ConfigError(f"{path}: item id {it.id!r} in {nb.id} is not a Python identifier")
                if it.id.startswith(RESERVED_PREFIXES):
                    raise ConfigError(f"{path}: item id {it.id!r} in {nb.id} starts with "
                                      f"{it.id.split('_')[0]}_, which marks the notebooks' "
                                      f"{'test' if it.id.startswith('test_') else 'reuse'} cells; rename it")
                if it.id in seen:
                    raise ConfigError(f"{path}: item id {it.id!r} appears twice; ids are unique across the course")
                seen.add(it.id)
            nbs.append(dataclasses.replace(nb, week=week.id))
        weeks.append(dataclasses.replace(week, notebooks=tuple(nbs)))
    return dataclasses.replace(course, weeks=tuple(weeks), source=path)
