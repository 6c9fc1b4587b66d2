"""course.yml against the files that implement it: solution notebooks, exercises/ and hidden/.

Every graded item of course.yml must be, under the same id:

- a solution cell of `solutions/<week>/<notebook>.ipynb` (nbgrader grade_id), whose
  test cell, if any, is `test_<id>`; `reuse_<id>` cells name items of earlier notebooks, and so
  does every `from autograder.earlier import <id>`;
- for auto-graded items, an `Exercise` in `autograder/exercises/<notebook>.py` (EXERCISES),
  whose `needs` are items of the course;
- for auto-graded items, a `HIDDEN_CASES` entry in `autograder/hidden/<notebook>.py`;
  `MISTAKES` may only name its items.

And nothing in those files may name an item course.yml does not have. A mismatch
is a ConfigError naming the file, the item and the id that was probably meant,
instead of a KeyError deep in grading.

The names are read from the files without importing them (the hidden modules
import torch, which takes seconds): solution notebooks as JSON, modules with
`ast`, as long as EXERCISES is a list of `Exercise("id", ...)` calls and
HIDDEN_CASES and MISTAKES are dicts with string keys. A module written otherwise
is imported instead. Parts that are absent as a whole are skipped: the student
release has no solutions/ and no hidden/. A notebook none of whose files exist
yet is skipped too (course.yml may list notebooks still to be written), unless
its id is close to an existing file's name (then it is probably misspelt).
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import ROOT, ConfigError, Course, Notebook, _did_you_mean

PARTS = ("solutions", "exercises", "hidden")
TEST_PREFIX, REUSE_PREFIX = "test_", "reuse_"


class _NotStatic(Exception):
    """A module-level value that cannot be read without running the module."""


@dataclass
class _Files:
    """What one notebook's files say about its items (None: the file is absent or its part is skipped)."""

    solution: Path
    exercise: Path
    hidden: Path
    cells: list[tuple[str, str, bool]] | None = None
    """(grade_id, cell_type, is a solution cell) of every nbgrader cell, in order."""
    earlier: list[str] = field(default_factory=list)
    """The names its code cells import with `from autograder.earlier import ...`."""
    exercises: list[str] | None = None
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hidden_cases: list[str] | None = None
    mistakes: list[str] | None = None


def check_course_files(course: Course, notebooks=None, root: Path = ROOT, parts=PARTS) -> None:
    """Raise ConfigError when course.yml and the notebooks' files disagree (see the module docstring).

    `notebooks`: Notebook objects or ids to check (default: all); `parts`: which
    of solutions, exercises and hidden to read.
    """
    root = Path(root)
    wanted = [course.notebook(n) if isinstance(n, str) else n for n in (notebooks or course.notebooks)]
    active = {
        "solutions": "solutions" in parts and (root / "solutions").is_dir(),
        "exercises": "exercises" in parts and (root / "autograder" / "exercises").is_dir(),
        "hidden": "hidden" in parts and (root / "autograder" / "hidden").is_dir(),
    }
    problems: list[str] = []
    files: dict[str, _Files] = {}
    for nb in wanted:
        f = _Files(root / "solutions" / nb.path, root / "autograder" / "exercises" / f"{nb.id}.py",
                   root / "autograder" / "hidden" / f"{nb.id}.py")
        present = {"solutions": active["solutions"] and f.solution.is_file(),
                   "exercises": active["exercises"] and f.exercise.is_file(),
                   "hidden": active["hidden"] and f.hidden.is_file()}
        if not any(present.values()):
            guess = _did_you_mean(nb.id, _file_stems(root, active) - {n.id for n in course.notebooks})
            if guess:
                problems.append(f"{_rel(course.source, root)}: notebook {nb.id!r} (in {nb.week}) has no solution "
                                f"notebook, exercise module or hidden module{guess}")
            continue  # not written yet
        for part, path in (("solutions", f.solution), ("exercises", f.exercise), ("hidden", f.hidden)):
            if active[part] and not present[part]:
                problems.append(f"{_rel(path, root)}: missing, but course.yml lists notebook {nb.id!r} in "
                                f"{nb.week}{_elsewhere(root, nb, part)}")
        if present["solutions"]:
            f.cells = _cached(_solution_cells, f.solution, nb.id, root)
            f.earlier = _cached(_earlier_imports, f.solution, nb.id, root)
        if present["exercises"]:
            f.exercises, f.needs = _cached(_exercise_names, f.exercise, nb.id, root)
        if present["hidden"]:
            f.hidden_cases, f.mistakes = _cached(_hidden_names, f.hidden, nb.id, root)
        files[nb.id] = f
    claimed: set[str] = set()  # file names a course item's "did you mean" already points to
    for nb in wanted:
        if nb.id in files:
            problems += _missing_items(course, nb, files[nb.id], root, claimed)
    for nb in wanted:
        if nb.id in files:
            problems += _extra_names(course, nb, files[nb.id], root, claimed)
    if not problems:
        for nb in wanted:
            if nb.id in files and files[nb.id].cells is not None:
                problems += _out_of_order(course, nb, files[nb.id], root)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"course.yml and the course's files disagree in {len(problems)} places:\n  "
                          + "\n  ".join(problems))


def _out_of_order(course: Course, nb: Notebook, f: _Files, root: Path) -> list[str]:
    """A line when course.yml lists a notebook's items in another order than their cells (grading order,
    gradebook columns and the reference pieces a later item builds on all follow course.yml)."""
    listed = [i.id for i in nb.items]
    in_cells = [gid for gid, _, solution in f.cells or [] if solution and gid in listed]
    if in_cells == listed:
        return []
    return [f"{_rel(course.source, root)}: the items of {nb.id} are listed in another order than their cells in "
            f"{_rel(f.solution, root)}: list them as {', '.join(in_cells)}"]


def _missing_items(course: Course, nb: Notebook, f: _Files, root: Path, claimed: set[str]) -> list[str]:
    """Items of course.yml that a file of their notebook lacks, one line per item."""
    items = {i.id for i in nb.items}
    grade_ids = [gid for gid, _, solution in f.cells or [] if solution]
    sources = [  # (names in the file, the file, whether manual items belong in it too)
        (grade_ids if f.cells is not None else None, f"{_rel(f.solution, root)} (no solution cell with this grade_id)",
         True),
        (f.exercises, f"{_rel(f.exercise, root)} (EXERCISES)", False),
        (f.hidden_cases, f"{_rel(f.hidden, root)} (HIDDEN_CASES)", False),
    ]
    problems = []
    for item in nb.items:
        lacks, unmatched = [], []
        for names, what, manual_too in sources:
            if names is None or (item.manual and not manual_too):
                continue
            if item.id not in names:
                lacks.append(what)
                unmatched += [n for n in names if n not in items]
        if not lacks:
            continue
        meant = difflib.get_close_matches(item.id, list(dict.fromkeys(unmatched)), n=1, cutoff=0.6)
        claimed.update(meant)
        kind = "manual item" if item.manual else "item"
        by_hand = ("; its solution cell is markdown, an answer graded by hand: mark it manual: true"
                   if not item.manual and (item.id, "markdown", True) in (f.cells or []) else "")
        problems.append(f"{_rel(course.source, root)}: {kind} {item.id!r} of {nb.id} is missing from "
                        f"{_and(lacks)}{_did_you_mean(item.id, meant)}{by_hand}")
    return problems


def _extra_names(course: Course, nb: Notebook, f: _Files, root: Path, claimed: set[str]) -> list[str]:
    """Names in the notebook's files that course.yml does not have (or has elsewhere, or as manual)."""
    items = {i.id: i for i in nb.items}
    all_items = {i.id: n for n in course.notebooks for i in n.items}
    problems = []

    def unknown(where: str, name: str, shown: str | None = None) -> None:
        shown = shown or repr(name)
        if name in claimed:
            return
        if name in all_items:
            other = all_items[name]
            problems.append(f"{where} names {shown}, an item of {other.id}, not of {nb.id}, in course.yml "
                            "(is it listed under the right notebook?)")
        else:
            problems.append(f"{where} names {shown}, which is not an item of {nb.id} in "
                            f"{_rel(course.source, root)}{_did_you_mean(name, items)}")

    if f.cells is not None:
        where = _rel(f.solution, root)
        seen: set[str] = set()
        for gid, cell_type, solution in f.cells:
            if gid in seen:
                problems.append(f"{where}: two cells have grade_id {gid!r}")
            seen.add(gid)
            if gid.startswith(REUSE_PREFIX):
                name = gid[len(REUSE_PREFIX):]
                if name not in all_items and name not in claimed:
                    problems.append(f"{where}: reuse cell {gid!r} names {name!r}, which is not an item in "
                                    f"{_rel(course.source, root)}{_did_you_mean(name, all_items)}")
            elif solution:
                if gid not in items:
                    unknown(f"{where}: a solution cell", gid)
            elif gid.startswith(TEST_PREFIX) and gid[len(TEST_PREFIX):] in items:
                if items[gid[len(TEST_PREFIX):]].manual:
                    problems.append(f"{where}: test cell {gid!r} tests an item course.yml marks manual: true")
            else:
                name = gid[len(TEST_PREFIX):] if gid.startswith(TEST_PREFIX) else gid
                unknown(f"{where}: test cell", name, repr(gid))
    order = [n.id for n in course.notebooks]
    for name in f.earlier:
        where = f"{_rel(f.solution, root)}: `from autograder.earlier import {name}`"
        if name not in all_items:
            if name not in claimed:
                problems.append(f"{where} names no item of {_rel(course.source, root)}"
                                f"{_did_you_mean(name, all_items)}")
        elif order.index(all_items[name].id) >= order.index(nb.id):
            problems.append(f"{where}: {name} is an item of {all_items[name].id}, which does not come before "
                            f"{nb.id}; a notebook imports from earlier notebooks only")
    for names, where in ((f.exercises, f"{_rel(f.exercise, root)}: EXERCISES"),
                         (f.hidden_cases, f"{_rel(f.hidden, root)}: HIDDEN_CASES"),
                         (f.mistakes, f"{_rel(f.hidden, root)}: MISTAKES")):
        if names is None:
            continue
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{where} has {name!r} twice")
        for name in dict.fromkeys(names):
            if name in items and items[name].manual:
                problems.append(f"{where} names {name!r}, which course.yml marks manual: true (graded by hand); "
                                "remove manual: true or this entry")
            elif name not in items:
                unknown(where, name)
    for ex_id, needs in f.needs.items():
        for need in needs:
            if need not in all_items and need not in claimed:
                problems.append(f"{_rel(f.exercise, root)}: Exercise {ex_id!r} needs {need!r}, which is not an "
                                f"item in {_rel(course.source, root)}{_did_you_mean(need, all_items)}")
    return list(dict.fromkeys(problems))


# --- reading the files ------------------------------------------------------------------------

_CACHE: dict = {}


def _cached(reader, path: Path, nb_id: str, root: Path):
    """reader(path, nb_id, root, text), remembered by the file's content (commands and tests check often)."""
    where = _rel(path, root)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    key = (reader.__name__, str(path), nb_id, where, hashlib.blake2b(data, digest_size=16).digest())
    if key not in _CACHE:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
        _CACHE[key] = reader(path, nb_id, root, text)
    return _CACHE[key]

def _solution_cells(path: Path, nb_id: str, root: Path, text: str) -> list[tuple[str, str, bool]]:
    where = _rel(path, root)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{where}: not a readable notebook ({type(exc).__name__}: {exc})") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise ConfigError(f"{where}: not a Jupyter notebook (no list of cells)")
    out = []
    for index, cell in enumerate(cells):
        meta = cell.get("metadata") if isinstance(cell, dict) else None
        grader = meta.get("nbgrader") if isinstance(meta, dict) else None
        if not isinstance(grader, dict):
            continue
        gid = grader.get("grade_id")
        if not isinstance(gid, str) or not gid:
            raise ConfigError(f"{where}: cell {index + 1} has nbgrader metadata but no grade_id")
        out.append((gid, str(cell.get("cell_type")), bool(grader.get("solution"))))
    return out


def _earlier_imports(path: Path, nb_id: str, root: Path, text: str) -> list[str]:
    """The names that the notebook's code cells import with `from autograder.earlier import ...`."""
    from .earlier import imported_names

    cells = json.loads(text).get("cells", [])
    return imported_names("".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")
                          for c in cells if isinstance(c, dict) and c.get("cell_type") == "code")


def _exercise_names(path: Path, nb_id: str, root: Path, text: str) -> tuple[list[str] | None, dict]:
    """Ids of EXERCISES, in order, and each exercise's `needs` (when they are literal)."""
    tree, env = _parse(path, root, text)
    try:
        value = _assigned(tree, "EXERCISES")
        if not isinstance(value, (ast.List, ast.Tuple)):
            raise _NotStatic
        ids, needs = [], {}
        for call in value.elts:
            if not isinstance(call, ast.Call):
                raise _NotStatic
            id_node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "id"), None)
            ex_id = _literal(id_node, env) if id_node is not None else None
            if not isinstance(ex_id, str):
                raise _NotStatic
            ids.append(ex_id)
            for k in call.keywords:
                if k.arg == "needs":
                    try:
                        need = _literal(k.value, env)
                    except _NotStatic:
                        continue
                    if isinstance(need, tuple) and all(isinstance(n, str) for n in need):
                        needs[ex_id] = need
        return ids, needs
    except _NotStatic:
        module = _import(path, f"autograder.exercises.{nb_id}", root)
        if module is None:
            return None, {}
        try:
            exs = list(module.EXERCISES)
            return [ex.id for ex in exs], {ex.id: tuple(ex.needs) for ex in exs}
        except Exception as exc:  # noqa: BLE001 - the instructor's module may hold anything
            raise ConfigError(f"{_rel(path, root)}: EXERCISES should be a list of Exercise(...): "
                              f"{type(exc).__name__}: {exc}") from None


def _hidden_names(path: Path, nb_id: str, root: Path, text: str) -> tuple[list[str] | None, list[str] | None]:
    """Keys of HIDDEN_CASES and of MISTAKES, in order."""
    tree, env = _parse(path, root, text)
    try:
        cases = _dict_keys(_assigned(tree, "HIDDEN_CASES"), env, required=True)
        return cases, _dict_keys(_assigned(tree, "MISTAKES"), env, required=False)
    except _NotStatic:
        module = _import(path, f"autograder.hidden.{nb_id}", root)
        if module is None:
            return None, None
        try:
            return list(module.HIDDEN_CASES), list(getattr(module, "MISTAKES", {}))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{_rel(path, root)}: HIDDEN_CASES and MISTAKES should be dicts by item id: "
                              f"{type(exc).__name__}: {exc}") from None


def _dict_keys(node, env, required: bool) -> list[str]:
    if node is None and not required:
        return []
    if not isinstance(node, ast.Dict) or any(k is None for k in node.keys):
        raise _NotStatic
    keys = [_literal(k, env) for k in node.keys]
    if not all(isinstance(k, str) for k in keys):
        raise _NotStatic
    return keys


def _parse(path: Path, root: Path, text: str) -> tuple[ast.Module, dict]:
    """The module's syntax tree, and its module-level names bound to literals."""
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{_rel(path, root)}: line {exc.lineno}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"{_rel(path, root)}: cannot be read ({type(exc).__name__}: {exc})") from None
    env: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                env[stmt.targets[0].id] = _literal(stmt.value, env)
            except _NotStatic:
                env.pop(stmt.targets[0].id, None)
    return tree, env


def _assigned(tree: ast.Module, name: str):
    """The one value a module binds to `name` at its top level (None when unbound); _NotStatic when changed later."""
    value, changed = None, False
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            changed = changed or value is not None or node not in tree.body or len(node.targets) > 1
            value = node.value
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name) \
                and node.target.id == name:
            changed = True
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == name \
                and node.attr in ("append", "extend", "insert", "update", "pop", "setdefault", "remove"):
            changed = True
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name \
                and isinstance(node.ctx, (ast.Store, ast.Del)):
            changed = True
        elif isinstance(node, (ast.Global, ast.ImportFrom, ast.Import)):
            names = node.names if isinstance(node, ast.Global) else [a.asname or a.name for a in node.names]
            changed = changed or name in names or "*" in names
    if changed:
        raise _NotStatic
    return value


def _literal(node, env):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e, env) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left, env), _literal(node.right, env)
        if type(left) is type(right) and isinstance(left, (tuple, str)):
            return left + right
    raise _NotStatic


def _import(path: Path, module_name: str, root: Path):
    """Import a module that cannot be read statically (only the installed package's own files)."""
    if Path(path).resolve() != (ROOT / Path(*module_name.split("."))).with_suffix(".py").resolve():
        return None
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the module raises is a mistake in the course
        raise ConfigError(f"{_rel(path, root)}: cannot be imported ({type(exc).__name__}: {exc})") from None


# --- messages ---------------------------------------------------------------------------------

def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _file_stems(root: Path, active: dict) -> set[str]:
    stems = set()
    if active["solutions"]:
        stems |= {p.stem for p in (root / "solutions").glob("*/*.ipynb")}
    for part in ("exercises", "hidden"):
        if active[part]:
            stems |= {p.stem for p in (root / "autograder" / part).glob("*.py") if p.stem != "__init__"}
    return stems


def _elsewhere(root: Path, nb: Notebook, part: str) -> str:
    """Where a missing file probably is: the same notebook in another week, or a close file name."""
    if part == "solutions":
        found = sorted(p for p in (root / "solutions").glob(f"*/{nb.id}.ipynb"))
        if found:
            return (f" (found {_rel(found[0], root)}: is {nb.id} listed under the right week in course.yml?)")
        names = [p.stem for p in (root / "solutions" / nb.week).glob("*.ipynb")]
    else:
        names = [p.stem for p in (root / "autograder" / part).glob("*.py") if p.stem != "__init__"]
    return _did_you_mean(nb.id, names)
