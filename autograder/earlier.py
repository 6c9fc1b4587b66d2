"""Earlier days' code in a later notebook, in one line: `from autograder.earlier import padding_mask, ...`.

Each name is a function or class written in an earlier notebook. By default it
is the student's own: the definitions in that exercise's cell of their earlier
notebook (`weeks/<week>/<notebook>.ipynb`, as last saved), with the imports of
that notebook, executed in a fresh module. Nothing else of the earlier notebook
runs: no demo, no check, no other cell. A piece that still raises
NotImplementedError, or an earlier notebook that is missing, stops the import
with a message that says what to do.

Once the instructor publishes the references of a week (`python -m autograder
release OUT --publish-references week1`, into `autograder/published/`), a
student may take those instead, for every piece or for some:

    from autograder import earlier; earlier.use("reference")                        # every piece
    from autograder import earlier; earlier.use("reference", "MultiHeadAttention")  # this one only
    from autograder import earlier; earlier.use("own")                              # back to your own

then run the import line again (it also reads an edited earlier notebook again).

Where the pieces come from, first match wins:
- while `grade` runs the notebook in its sandbox: the course's references,
  given by the grader (`provide`), whatever `use` says; the grader also
  substitutes the references of the pieces each item builds on
  (`Exercise.needs`), as before;
- in the course's own repository (it has solutions/, and weeks/ holds only
  stubs), where `nbgrader autograde` runs too: the reference solutions;
- otherwise as `use` chose: the student's own (the default), or the published
  references.
"""
from __future__ import annotations

import ast
import functools
import linecache
import re
import types
from pathlib import Path

from .config import ROOT, ConfigError, _did_you_mean

SOURCES = ("own", "reference")
"""What `use` accepts: the student's own earlier notebooks, or the course's published references."""
PUBLISHED = Path(__file__).resolve().parent / "published"
"""Where the release puts the published references: `<notebook id>.py`, one per notebook."""
USE_REFERENCE = 'from autograder import earlier; earlier.use("reference")'
MODULE = "autograder.earlier"
_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)
_MAGIC = re.compile(r"^[ \t]*[%!].*$", re.M)


class EarlierError(ImportError):
    """A piece of an earlier notebook cannot be imported; the message says why and what to do."""

    def _render_traceback_(self):
        return str(self).splitlines()


_choice: dict[str | None, str] = {None: "own"}
"""The source of each piece chosen with `use`: None for every piece not named."""
_provided: dict[str, dict] | None = None
"""While grading: {notebook id: reference pieces} given by the grader."""
_cache: dict[tuple[str, str], tuple[types.ModuleType, dict]] = {}
"""{(origin, notebook id): (module, what it defines)} of the notebooks loaded so far."""
_files: dict[str, tuple[int, int]] = {}
"""(mtime, size) of every file read: when one changes, everything is read again."""
_loading: list[str] = []
"""Notebooks being loaded, outermost first (to find a notebook that imports from itself)."""
_forced: list[str] = []
"""While a reference module loads, the pieces it imports are references too."""
_course_cache: list = []


def use(source: str, *names: str) -> None:
    """Take earlier pieces from `source`, "own" or "reference": every piece, or only those named."""
    if source not in SOURCES:
        raise ValueError(f"earlier.use({source!r}): say \"own\" (your earlier notebooks) or \"reference\" "
                         "(the course's published references)")
    if _provided is not None:
        return  # grading: the references, whatever the notebook chose
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"earlier.use({source!r}, ...) takes the names of the pieces as strings, such as "
                            f"\"padding_mask\"; got {type(name).__name__}")
        known = _course().item_ids
        if name not in known:
            raise ValueError(f"earlier.use({source!r}, {name!r}): no exercise of the course is called "
                             f"{name!r}{_did_you_mean(name, known)}")
    if names:
        _choice.update(dict.fromkeys(names, source))
    else:
        _choice.clear()
        _choice[None] = source
    _cache.clear()


def provide(pieces: dict[str, dict]) -> None:
    """While grading: every earlier piece is the course's reference, from `pieces` (see `needed`)."""
    global _provided
    _provided = dict(pieces)
    _cache.clear()


def __getattr__(name: str):
    """`from autograder.earlier import name`: the piece, from where the module's docstring says."""
    if name.startswith("_"):
        raise AttributeError(f"module {MODULE!r} has no attribute {name!r}")
    if not _loading:
        _refresh()
    return _piece(name)


def __dir__() -> list[str]:
    """The module's own names and, when the course can be read, every function or class one can import."""
    names = ["EarlierError", "PUBLISHED", "SOURCES", "imported_names", "needed", "provide", "reference_pieces", "use"]
    try:
        names += [item.id for nb in _course().notebooks for item in nb.auto_items]
    except Exception:  # noqa: BLE001 - tab completion must never fail
        pass
    return sorted(set(names))


# ---------------------------------------------------------------- finding a piece


def _piece(name: str):
    """The object `name`, from the grader's references, the course's, the published ones or the student's own."""
    if _provided is not None:
        for nb_id, entry in _provided.items():
            if name in entry["names"]:
                module, _ = _load(("graded", nb_id), lambda: _exec_reference(nb_id, entry["source"],
                                                                             f"<reference {nb_id}>"))
                return module.__dict__[name]
        raise EarlierError(f"{name} is not available while grading: `from {MODULE} import ...` gives the "
                           "functions and classes of earlier notebooks only, by their exercise names")
    course = _course()
    try:
        owner, item = course.item(name)
    except ConfigError:
        raise EarlierError(f"no exercise of the course is called {name!r}{_did_you_mean(name, course.item_ids)}; "
                           f"{MODULE} gives the functions and classes of earlier notebooks") from None
    if item.manual:
        raise EarlierError(f"{name} is a free-text answer of {_label(owner)}, not code to import")
    if (ROOT / "solutions").is_dir():  # the course's own repository: weeks/ holds stubs only
        return _reference_piece(name, owner, "course", lambda: _solution_source(owner), f"<reference {owner.id}>")
    source = _forced[-1] if _forced else _choice.get(name, _choice[None])
    if source == "reference":
        path = PUBLISHED / f"{owner.id}.py"
        if not path.is_file():
            raise EarlierError(f"{name} comes from {_label(owner)}, whose references are not published yet: your "
                               f"instructor publishes them after the due date of {owner.week}; until then use your "
                               f"own (from autograder import earlier; earlier.use(\"own\"))")
        return _reference_piece(name, owner, "published", lambda: _read(path), str(path))
    return _own_piece(name, owner)


def _reference_piece(name: str, owner, origin: str, text, filename: str):
    """`name` from the reference module of `owner` (`text()` gives its source)."""
    module, pieces = _load((origin, owner.id), lambda: _exec_reference(owner.id, text(), filename))
    if name not in pieces["names"]:
        raise EarlierError(f"{name} is an exercise of {_label(owner)} but not a function or class; "
                           f"{MODULE} gives functions and classes only")
    return module.__dict__[name]


def _own_piece(name: str, owner):
    """`name` as the student wrote it in their earlier notebook, or an EarlierError saying why not."""
    rel = f"weeks/{owner.path}"
    path = ROOT / "weeks" / owner.path
    if not path.is_file():
        raise EarlierError(f"{name} comes from {rel} ({_label(owner)}), which is not there: put your "
                           f"{_label(owner)} notebook there, or {_or_reference(owner, name)}")
    module, pieces = _load(("own", owner.id), lambda: _exec_own(owner, path, rel))
    problem = pieces["problems"].get(name)
    if problem:
        raise EarlierError(f"{name} in {rel} {problem}: fix it there (and save), or {_or_reference(owner, name)}")
    if name in pieces["stubs"]:
        raise EarlierError(f"{name} in {rel} is still a stub (it raises NotImplementedError): finish "
                           f"{_label(owner)}, or {_or_reference(owner, name)}")
    if name not in pieces["names"]:
        if name in pieces["answers"]:
            raise EarlierError(f"{name} is a quiz answer of {_label(owner)}, not code; {MODULE} gives functions "
                               "and classes only")
        raise EarlierError(f"{rel} has no function or class {name} in its exercise cell: keep the name and the "
                           f"cell the exercise gives, or {_or_reference(owner, name)}")
    return module.__dict__[name]


def _or_reference(owner, name: str) -> str:
    """The way out through the references: use them if they are published, else wait for them."""
    if (PUBLISHED / f"{owner.id}.py").is_file():
        return (f"use the published references ({USE_REFERENCE}, or earlier.use(\"reference\", \"{name}\") for "
                "this piece only)")
    return (f"once your instructor publishes the references of {owner.week} (after its due date), use them "
            f"({USE_REFERENCE})")


def _label(nb) -> str:
    """How the course names a notebook to students: "Days 6-7"."""
    return nb.title.split(":")[0].strip() or nb.id


def _course():
    """The course (course.yml), read again when the file changes."""
    from .config import load_course

    path = ROOT / "course.yml"
    try:
        stat = path.stat()
    except OSError:
        raise EarlierError(f"{path} is not there: {MODULE} reads the course from it (run the notebook in the "
                           "course's repository)") from None
    key = (stat.st_mtime_ns, stat.st_size)
    if not _course_cache or _course_cache[0] != key:
        _course_cache[:] = [key, load_course(path)]
    return _course_cache[1]


def _remember(path: Path) -> None:
    """Note a file's time and size, so that a change of it is noticed (`_refresh`)."""
    stat = path.stat()
    _files[str(path)] = (stat.st_mtime_ns, stat.st_size)


def _read(path: Path) -> str:
    """A file's text, remembered (`_remember`)."""
    _remember(path)
    return path.read_text(encoding="utf-8")


def _solution_source(owner) -> str:
    """The reference source of a notebook in the course's own repository, from its solutions/ notebook."""
    _remember(ROOT / "solutions" / owner.path)
    return reference_pieces(owner, ROOT)["source"]


def _refresh() -> None:
    """Forget every loaded notebook when a file read for one of them changed (an edited earlier notebook)."""
    for name, seen in list(_files.items()):
        try:
            stat = Path(name).stat()
            now = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            now = None
        if now != seen:
            _cache.clear()
            _files.clear()
            return


def _load(key: tuple[str, str], make) -> tuple[types.ModuleType, dict]:
    """The module of one notebook, made once (`make()`) until something changes."""
    if key not in _cache:
        nb_id = key[1]
        if nb_id in _loading:
            chain = " -> ".join(_loading[_loading.index(nb_id):] + [nb_id])
            raise EarlierError(f"the earlier notebooks import from each other in a circle ({chain}); "
                               f"a notebook may import from earlier ones only")
        _loading.append(nb_id)
        try:
            _cache[key] = make()
        finally:
            _loading.pop()
    return _cache[key]


# ---------------------------------------------------------------- reading a notebook's definitions


def _parse(source: str) -> ast.Module | None:
    """A cell's code as a syntax tree (IPython's %magic and !shell lines left out); None when it is not Python."""
    try:
        return ast.parse(_MAGIC.sub("", source))
    except (SyntaxError, ValueError):
        return None


def _is_stub(node) -> bool:
    """Whether a function, or a method of a class, still raises NotImplementedError as its stub did."""
    if isinstance(node, ast.ClassDef):
        bodies = [n.body for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    else:
        bodies = [node.body]
    for body in bodies:
        for stmt in body:
            if isinstance(stmt, ast.Raise) and stmt.exc is not None:
                exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
                if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                    return True
    return False


def _is_constant(node, items: set[str]) -> bool:
    """`NAME = <literal>` (a constant a definition may use), unless NAME is an exercise (a quiz answer)."""
    if not isinstance(node, ast.Assign) or not all(isinstance(t, ast.Name) for t in node.targets):
        return False
    if any(t.id in items for t in node.targets):
        return False
    try:
        ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _definitions(nb_json, items: set[str]):
    """The parts of a notebook that a later one may run: [(code cell number, source, imports, definitions)].

    Imports come from every code cell but demos and tests; definitions (functions, classes,
    literal constants) only from the exercise cells, by grade_id. Also returns what each
    exercise cell defines: ({name: stub?}, {item: problem}, {quiz answers}).
    """
    from . import notebook

    cells, defined, problems, answers = [], {}, {}, set()
    number = 0
    for cell in nb_json.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        number += 1
        if notebook.is_demo_cell(cell) or notebook.is_test_cell(cell):
            continue
        source = _MARKER.sub("", cell.get("source") or "")
        gid = notebook.grade_id(cell)
        exercise = gid in items and bool(notebook.nbgrader_meta(cell).get("solution"))
        tree = _parse(source)
        if tree is None:
            if exercise:
                try:
                    compile(_MAGIC.sub("", source), "cell", "exec")
                except SyntaxError as exc:
                    problems[gid] = f"has a syntax error (code cell {number}, line {exc.lineno}: {exc.msg})"
                except ValueError as exc:
                    problems[gid] = f"cannot be read as Python (code cell {number}: {exc})"
            continue
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        definitions = []
        if exercise:
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    definitions.append(node)
                    if node.name in items:
                        defined[node.name] = _is_stub(node)
                elif _is_constant(node, items):
                    definitions.append(node)
                elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == gid
                                                          for t in node.targets):
                    answers.add(gid)
        if imports or definitions:
            cells.append((number, source, imports, definitions))
    return cells, defined, problems, answers


def _exec_own(owner, path: Path, rel: str) -> tuple[types.ModuleType, dict]:
    """A fresh module holding the student's definitions from their earlier notebook (and its imports)."""
    from . import notebook

    _remember(path)
    try:
        nb_json = notebook.read(path)
    except notebook.NotebookError as exc:
        raise EarlierError(f"{exc} (autograder.earlier reads it for {_label(owner)}'s code)") from None
    items = {item.id for item in owner.auto_items}
    cells, defined, problems, answers = _definitions(nb_json, items)
    module = types.ModuleType(owner.id, f"Your code of {_label(owner)}, from {rel}.")
    compiled = []
    for number, source, imports, definitions in cells:
        filename = f"{path}, code cell {number}"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        for nodes in (imports, definitions):
            if nodes:
                code = compile(ast.Module(body=nodes, type_ignores=[]), filename, "exec")
                compiled.append((nodes is imports, code))
    # Imports first, so that a definition may use a module imported in a later cell.
    for _, code in sorted(compiled, key=lambda c: not c[0]):
        try:
            exec(code, module.__dict__)
        except EarlierError as exc:
            raise EarlierError(f"{exc} (needed by your {rel})") from None
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            from .exercise import describe_error

            raise EarlierError(f"{rel} could not be loaded for {_label(owner)}'s code: "
                               f"{describe_error(exc)}; fix it there (and save)") from None
    stubs = {name for name, stub in defined.items() if stub}
    return module, {"names": set(defined), "stubs": stubs, "problems": problems, "answers": answers}


def _exec_reference(nb_id: str, source: str, filename: str) -> tuple[types.ModuleType, dict]:
    """A fresh module holding a notebook's reference pieces (the source `reference_pieces` writes)."""
    module = types.ModuleType(f"reference.{nb_id}", f"The course's reference code of {nb_id}.")
    if filename.startswith("<"):
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    _forced.append("reference")
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    finally:
        _forced.pop()
    return module, {"names": set(_defined_names(source))}


def _defined_names(source: str) -> list[str]:
    """The functions and classes a reference source defines at top level, named on its `# pieces:` line."""
    for line in source.splitlines():
        if line.startswith("# pieces: "):
            return line[len("# pieces: "):].split(", ")
    return []


# ---------------------------------------------------------------- the references, for the grader and the release


def reference_pieces(nb, root: Path = ROOT) -> dict:
    """The reference functions and classes of notebook `nb`, from solutions/, as the release publishes them.

    {"notebook", "names", "imports", "source"}: `source` is a Python file of the
    notebook's imports and the definitions of its exercise cells; `names` the
    exercises it defines; `imports` the names it takes from earlier notebooks.
    """
    path = Path(root) / "solutions" / nb.path
    stat = path.stat()
    return _reference_pieces(str(path), stat.st_mtime_ns, stat.st_size, nb)


@functools.lru_cache(maxsize=64)
def _reference_pieces(path: str, mtime: int, size: int, nb) -> dict:
    from . import notebook

    nb_json = notebook.read(Path(path))
    items = {item.id for item in nb.auto_items}
    cells, defined, problems, _ = _definitions(nb_json, items)
    if problems:
        raise ConfigError(f"solutions/{nb.path}: the cell of {', '.join(sorted(problems))} "
                          f"{next(iter(problems.values()))}")
    imports, blocks = [], []
    for _, source, import_nodes, definitions in cells:
        lines = source.splitlines()
        for node in import_nodes:
            if isinstance(node, ast.ImportFrom) and node.module == "autograder" or (
                    isinstance(node, ast.Import) and any(a.name.startswith("autograder") for a in node.names)):
                continue  # the checker: no use in a module of definitions (autograder.earlier stays)
            imports.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
        for node in definitions:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            blocks.append("\n".join(lines[first - 1:node.end_lineno]))
    names = [name for name in defined if name in items]
    later = imported_names(imports)
    head = (f"# The course's reference code of {nb.title} (weeks/{nb.path}).\n"
            f"# A later notebook imports it with `from {MODULE} import ...` after\n"
            f"#     {USE_REFERENCE}\n"
            f"# pieces: {', '.join(names)}\n")
    source = head + "\n".join(dict.fromkeys(imports)) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"
    return {"notebook": nb.id, "names": names, "imports": later, "source": source}


def imported_names(sources) -> list[str]:
    """The names that `from autograder.earlier import ...` statements in these code sources import."""
    names = []
    for source in sources:
        tree = _parse(source) if isinstance(source, str) else None
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == MODULE and not node.level:
                names += [alias.name for alias in node.names if alias.name != "*"]
    return list(dict.fromkeys(names))


def needed(course, nb, names, root: Path = ROOT) -> dict[str, dict]:
    """{notebook id: reference_pieces} that `names`, imported in notebook `nb`, come from (and what those import).

    Only notebooks before `nb` in the course count: a notebook's own exercises are
    never among them, so no reference ever reaches a sandbox where the item it
    answers is graded. Names of no earlier function or class are left out (the
    import then fails in the sandbox, with a message).
    """
    order = {n.id: i for i, n in enumerate(course.notebooks)}
    found: dict[str, dict] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            owner, _ = course.item(name)
        except ConfigError:
            continue
        if owner.id in found or order[owner.id] >= order[nb.id] or not (Path(root) / "solutions" / owner.path).is_file():
            continue
        pieces = reference_pieces(owner, root)
        if name in pieces["names"]:
            found[owner.id] = pieces
            todo.extend(pieces["imports"])
    return {nb_id: found[nb_id] for nb_id in sorted(found, key=order.get)}
