"""`python -m autograder new ITEM --notebook NB`: a new auto-graded exercise, in every file it needs.

An item lives in four files, in three formats, under one id (five with the course contract):

- `solutions/<week>/<NB>.ipynb`: a prompt, the solution cell (nbgrader grade_id ITEM, the solution
  between `### BEGIN SOLUTION` and `### END SOLUTION`) and its test cell (`test_ITEM`), appended at
  the end of the notebook and stored normalized;
- `course.yml`: `- {id: ITEM, points: P}`, appended to the notebook's items, so that course.yml keeps
  the notebook's order (the text is edited in place: its comments and layout stay);
- `autograder/exercises/<NB>.py`: `run_ITEM` (how a case calls the student's object), `ITEM_public`
  (its public cases) and `Exercise("ITEM", ...)` at the end of EXERCISES;
- `autograder/hidden/<NB>.py`: `ITEM_hidden` (its hidden cases) in HIDDEN_CASES, and an empty list of
  known mistakes in MISTAKES;
- and `docs/contract.md`, when the course has one: a row for the item after the last row of the
  notebook's section.

The skeleton is a function of one array `x` returning one output, with one public and one hidden case,
and a solution that raises until it is written; `build` then computes the keys and refuses an item
without cases or a mistake the reference cannot be told from. Nothing is written when any of the
files cannot take the item (ScaffoldError, exit 2, naming the file and what to do).
"""
from __future__ import annotations

import ast
import dataclasses
import keyword
import os
import re
from pathlib import Path

import yaml

from .config import RESERVED_PREFIXES, ConfigError, Course, Item, Notebook, _did_you_mean, load_course
from .crosscheck import _rel, check_course_files


class ScaffoldError(ConfigError):
    """An item `new` cannot add, phrased for the instructor: the file, the problem and what to do."""


PROMPT = """\
## Exercise: `{item}`

`{item}(x)` returns ...: state its exact contract here (its arguments, their shapes and dtypes, what it
returns, and the conventions it follows), as the notebook's other exercises do.
"""

SOLUTION = '''\
def {item}(x):
    """What {item} returns, in one line."""
    ### BEGIN SOLUTION
    raise NotImplementedError("write the reference solution of {item} here")
    ### END SOLUTION
'''

TEST = """\
### BEGIN HIDDEN TESTS
from autograder.hidden_tests import check_all
check_all({item})
### END HIDDEN TESTS
check({item})"""

RUNNER = '''\
def run_{item}(fn, inputs):
    """Call {item} on one case and name its outputs (adapt it to {item}'s arguments and results)."""
    return {{"output": fn({argument})}}


def {item}_public(rng):
    """{item}'s public cases (students run them with check); a note says what a case exercises."""
    return [
        Case("small-float64", {{"x": rng.standard_normal((2, 3))}}, "a small input"),
    ]


'''

HIDDEN = '''\
def {item}_hidden(rng):
    """{item}'s hidden cases: graded, never shown to students (only their names)."""
    return [
        Case("larger-float32", {{"x": rng.standard_normal((4, 5)).astype("float32")}}),
    ]


'''

CONTRACT_ROW = ("| `{item}` | function | `{item}(x) -> output` | What `{item}` must do, exactly: its arguments, their "
                "shapes and dtypes, what it returns (as the notebook's prompt says). |")
CONTRACT_HEADING = re.compile(r"^#+\s+`(?P<path>[\w-]+/\w+\.ipynb)`")
CONTRACT_ROW_START = re.compile(r"^\|\s*`[A-Za-z_]\w*`\s*\|")

MISTAKES_ENTRY = """\
"{item}": [
        # Mistake("name", "what the code does wrong, as the feedback says it", "how to fix it",
        #         a drop-in {item} that makes the mistake: it must fail some case the reference passes),
    ],"""


def new_item(course: Course, item_id: str, notebook_id: str, points: float = 1.0) -> list[Path]:
    """Add auto-graded item `item_id` to notebook `notebook_id` in the course's files; returns them.

    The course's files are the ones beside its course.yml (`course.source`). ScaffoldError, with nothing
    written, when the id is not a usable Python name, is taken, or the notebook or one of its files is
    missing or cannot take the item.
    """
    root = course.source.parent
    nb = _notebook(course, notebook_id)
    _check_id(course, item_id)
    if not points > 0:
        raise ScaffoldError(f"--points should be more than 0, got {points:g}")
    paths = {
        "course": course.source,
        "solution": root / "solutions" / nb.path,
        "exercise": root / "autograder" / "exercises" / f"{nb.id}.py",
        "hidden": root / "autograder" / "hidden" / f"{nb.id}.py",
    }
    contract = root / "docs" / "contract.md"
    for path in paths.values():
        if not path.is_file():
            raise ScaffoldError(f"{_rel(path, root)}: missing; `new` adds an item to a notebook that has its solution "
                                f"notebook, exercise module and hidden module; write {nb.id}'s first")
    texts = {
        "course": course_yml_text(paths["course"].read_text(encoding="utf-8"), nb.id, item_id, points,
                                  _rel(paths["course"], root)),
        "solution": notebook_text(paths["solution"], nb, item_id, points, _rel(paths["solution"], root)),
        "exercise": exercise_text(paths["exercise"].read_text(encoding="utf-8"), item_id,
                                  _rel(paths["exercise"], root)),
        "hidden": hidden_text(paths["hidden"].read_text(encoding="utf-8"), item_id, _rel(paths["hidden"], root)),
    }
    if contract.is_file():
        paths["contract"] = contract
        texts["contract"] = contract_text(contract.read_text(encoding="utf-8"), nb, item_id, _rel(contract, root))
    for what, text in texts.items():  # only once every text is ready: a refusal leaves every file as it was
        _write(paths[what], text)
    try:
        check_course_files(load_course(course.source), [nb.id], root=root)
    except ConfigError as exc:
        raise ScaffoldError(f"new wrote {', '.join(_rel(p, root) for p in paths.values())}, but they disagree "
                            f"(a bug of new; please report it): {exc}") from None
    return list(paths.values())


def next_steps(course: Course, item_id: str, notebook_id: str, points: float) -> str:
    """What `new` tells the instructor after scaffolding: the files it changed, and what to write next."""
    nb = course.notebook(notebook_id)
    solution, exercise, hidden = (f"solutions/{nb.path}", f"autograder/exercises/{nb.id}.py",
                                  f"autograder/hidden/{nb.id}.py")
    contract = (course.source.parent / "docs" / "contract.md").is_file()
    lines = [
        f"added {item_id} ({points:g} point{'s' if points != 1 else ''}) to {nb.id}:",
        f"  {solution}: a prompt, the solution cell (grade_id {item_id}) and test_{item_id}, at the end",
        f"  course.yml: {{id: {item_id}, points: {points:g}}}, after {nb.id}'s last item",
        f"  {exercise}: run_{item_id}, {item_id}_public, and Exercise(\"{item_id}\", ...) in EXERCISES",
        f"  {hidden}: {item_id}_hidden in HIDDEN_CASES, and an empty list in MISTAKES",
    ]
    if contract:
        lines.append(f"  docs/contract.md: a row for {item_id}, last of {nb.path}'s")
    lines += [
        "next:",
        f"  1. write the prompt and the reference solution (between ### BEGIN SOLUTION and ### END SOLUTION) "
        f"in {solution}" + (f", and {item_id}'s row in docs/contract.md" if contract else ""),
        f"  2. adapt run_{item_id} to {item_id}'s arguments and outputs, and write its public cases "
        f"({item_id}_public) and hidden cases ({item_id}_hidden)",
        f"  3. catalogue the mistakes students make in MISTAKES[\"{item_id}\"]: each must fail a case the "
        "reference passes",
        f"  4. python -m autograder build {nb.id}   (weeks/ and the public key; it refuses an item without cases "
        "and a mistake that gives the reference's outputs)",
    ]
    return "\n".join(lines)


# --- checks before anything is written --------------------------------------------------------------

def _notebook(course: Course, notebook_id: str) -> Notebook:
    """The course's notebook `notebook_id`, or a ScaffoldError with the id probably meant."""
    for nb in course.notebooks:
        if nb.id == notebook_id:
            return nb
    ids = [nb.id for nb in course.notebooks]
    raise ScaffoldError(f"{_rel(course.source, course.source.parent)}: no notebook {notebook_id!r}"
                        f"{_did_you_mean(notebook_id, ids)}; `new` adds an item to a notebook course.yml lists "
                        f"({', '.join(ids)}); to start a new notebook, list it there with its files first")


def _check_id(course: Course, item_id: str) -> None:
    """ScaffoldError unless `item_id` can name a new item: a Python name, unreserved, not in the course yet."""
    where = _rel(course.source, course.source.parent)
    if not item_id.isidentifier() or keyword.iskeyword(item_id):
        raise ScaffoldError(f"{item_id!r} is not a Python identifier; an item id is the name students define "
                            "(letters, digits and _, not starting with a digit, not a keyword), e.g. attention_flops")
    if item_id.startswith(RESERVED_PREFIXES):
        raise ScaffoldError(f"{item_id!r} starts with {item_id.split('_')[0]}_, which marks the notebooks' test and "
                            "reuse cells; choose another id")
    if not item_id.isascii():
        raise ScaffoldError(f"{item_id!r} is not ASCII; item ids name files' entries and gradebook columns: "
                            "use letters, digits and _")
    for nb in course.notebooks:
        if any(item.id == item_id for item in nb.items):
            raise ScaffoldError(f"{where}: item {item_id!r} already exists (in {nb.id}); choose another id, or edit "
                                "that item's files")


# --- course.yml ------------------------------------------------------------------------------------

def course_yml_text(text: str, notebook_id: str, item_id: str, points: float, where: str) -> str:
    """course.yml's text with `{id: item_id, points: ...}` after the notebook's last item (comments kept)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"{where}: not valid YAML: {exc}") from None
    items = _items_node(root, notebook_id)
    if items is None:
        raise ScaffoldError(f"{where}: no items list under notebook {notebook_id!r}; add "
                            f"`items:` with `- {{id: {item_id}, points: {points:g}}}` by hand")
    if items.flow_style or not items.value:
        raise ScaffoldError(f"{where}: the items of {notebook_id} are not a list written one item a line "
                            f"(`- {{id: ..., points: ...}}`); add `{{id: {item_id}, points: {points:g}}}` by hand")
    last = items.value[-1]
    lines = text.splitlines(keepends=True)
    prefix = lines[last.start_mark.line][:last.start_mark.column]
    if prefix.strip() != "-":
        raise ScaffoldError(f"{where}: line {last.start_mark.line + 1}: the last item of {notebook_id} is not on a "
                            f"line of its own; add `- {{id: {item_id}, points: {points:g}}}` by hand")
    end = _last_line(last)
    if not lines[end].endswith("\n"):
        lines[end] += "\n"
    lines.insert(end + 1, f"{prefix}{{id: {item_id}, points: {points:g}}}\n")
    return "".join(lines)


def _last_line(node) -> int:
    """The line (0-based) a YAML node's text ends on: its last scalar's, or a flow collection's closing bracket's
    (a block collection's own end mark lies past the comments that follow it)."""
    if isinstance(node, yaml.ScalarNode) or node.flow_style:
        return node.end_mark.line if node.end_mark.column > 0 else node.end_mark.line - 1
    children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
    return max((_last_line(child) for child in children), default=node.start_mark.line)


def _items_node(root, notebook_id: str):
    """The YAML node of `items` of the notebook `notebook_id` (weeks[].notebooks[]), or None."""
    def get(node, key):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return v
        return None

    weeks = get(root, "weeks")
    for week in weeks.value if isinstance(weeks, yaml.SequenceNode) else []:
        notebooks = get(week, "notebooks")
        for nb in notebooks.value if isinstance(notebooks, yaml.SequenceNode) else []:
            nb_id = get(nb, "id")
            if isinstance(nb_id, yaml.ScalarNode) and nb_id.value == notebook_id:
                items = get(nb, "items")
                return items if isinstance(items, yaml.SequenceNode) else None
    return None


# --- the solution notebook ---------------------------------------------------------------------------

def notebook_text(path: Path, nb: Notebook, item_id: str, points: float, where: str) -> str:
    """The solution notebook's text with the item's prompt, solution cell and test cell appended, normalized."""
    import nbformat

    from . import source

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable notebook is the instructor's to fix
        raise ScaffoldError(f"{where}: not a readable notebook ({type(exc).__name__}: {exc})") from None
    for cell in notebook.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if item_id in (cell.get("id"), grade_id) or f"test_{item_id}" in (cell.get("id"), grade_id):
            raise ScaffoldError(f"{where}: a cell already has the id or grade_id {cell.get('id') or grade_id!r}; "
                                "remove it or choose another item id")
    prompt = nbformat.v4.new_markdown_cell(PROMPT.format(item=item_id).rstrip("\n"))
    del prompt["id"]  # normalize derives it from the content, as for a draft's cells
    notebook.cells += [
        prompt,
        nbformat.v4.new_code_cell(SOLUTION.format(item=item_id).rstrip("\n"), metadata={"nbgrader": {
            "grade": False, "grade_id": item_id, "locked": False, "schema_version": 3, "solution": True,
            "task": False}}),
        nbformat.v4.new_code_cell(TEST.format(item=item_id), metadata={"nbgrader": {
            "grade": True, "grade_id": f"test_{item_id}", "locked": True, "points": points, "schema_version": 3,
            "solution": False, "task": False}}),
    ]
    with_item = dataclasses.replace(nb, items=nb.items + (Item(item_id, float(points)),))
    try:
        return source.dumps(source.normalize(notebook, with_item, where))
    except source.SourceError as exc:
        raise ScaffoldError(f"{exc}; fix the notebook (python -m autograder normalize tells more), then run new "
                            "again") from None


# --- docs/contract.md ------------------------------------------------------------------------------

def contract_text(text: str, nb: Notebook, item_id: str, where: str) -> str:
    """The course contract's text with a row for the item after the last row of the notebook's section."""
    lines = text.splitlines(keepends=True)
    section, last = None, None
    for n, line in enumerate(lines):
        heading = CONTRACT_HEADING.match(line)
        if heading or line.startswith("#"):
            section = heading and heading["path"] == nb.path
        elif section and CONTRACT_ROW_START.match(line):
            last = n
    if last is None:
        raise ScaffoldError(f"{where}: no table of items under a heading `{nb.path}`; add the notebook's section "
                            "(as the other notebooks have), then run new again")
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines.insert(last + 1, CONTRACT_ROW.format(item=item_id) + "\n")
    return "".join(lines)


# --- exercises/ and hidden/ --------------------------------------------------------------------------

def exercise_text(text: str, item_id: str, where: str) -> str:
    """The exercise module's text with run_ITEM, ITEM_public and the item's Exercise at the end of EXERCISES."""
    tree = _parse(text, where)
    _check_free(tree, where, [f"run_{item_id}", f"{item_id}_public"])
    tensors = "as_tensor" in _imported(tree)  # a torch notebook's runners hand the student tensors
    argument = 'as_tensor(inputs["x"])' if tensors else 'inputs["x"]'
    text = _append_entry(text, tree, "EXERCISES", item_id, f'Exercise("{item_id}", run_{item_id}, {item_id}_public),',
                         f'Exercise("{item_id}", run_{item_id}, {item_id}_public)', where, ast.List)
    text = _before(text, "EXERCISES", RUNNER.format(item=item_id, argument=argument), where)
    return _import_names(text, ["Case", "Exercise"] + (["as_tensor"] if tensors else []), where)


def hidden_text(text: str, item_id: str, where: str) -> str:
    """The hidden module's text with ITEM_hidden in HIDDEN_CASES and an empty list for the item in MISTAKES."""
    tree = _parse(text, where)
    _check_free(tree, where, [f"{item_id}_hidden"])
    text = _append_entry(text, tree, "HIDDEN_CASES", item_id, f'"{item_id}": {item_id}_hidden,',
                         f'"{item_id}": {item_id}_hidden', where, ast.Dict)
    if _assignment(_parse(text, where), "MISTAKES") is None:
        text = text.rstrip("\n") + "\n\n\nMISTAKES = {\n    " + MISTAKES_ENTRY.format(item=item_id) + "\n}\n"
    else:
        text = _append_entry(text, _parse(text, where), "MISTAKES", item_id, MISTAKES_ENTRY.format(item=item_id),
                             f'"{item_id}": []', where, ast.Dict)
    text = _before(text, "HIDDEN_CASES", HIDDEN.format(item=item_id), where)
    return _import_names(text, ["Case"], where)


def _parse(text: str, where: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise ScaffoldError(f"{where}: line {exc.lineno}: {exc.msg}; fix it, then run new again") from None


def _assignment(tree: ast.Module, name: str) -> ast.Assign | None:
    """The module-level `name = ...` statement, or None."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
    return None


def _defined(tree: ast.Module) -> set[str]:
    """Names the module binds at its top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _imported(tree: ast.Module) -> set[str]:
    """Names imported from autograder.exercise (`from ..exercise import ...`)."""
    return {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.level == 2 and node.module == "exercise" for a in node.names}


def _check_free(tree: ast.Module, where: str, names: list[str]) -> None:
    taken = [n for n in names if n in _defined(tree)]
    if taken:
        raise ScaffoldError(f"{where}: already defines {', '.join(taken)}; rename or remove "
                            f"{'it' if len(taken) == 1 else 'them'}, or choose another item id")


def _offset(text: str, lineno: int, col: int) -> int:
    """The character offset in `text` of ast's (lineno, col), col counted in UTF-8 bytes as ast counts it."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    line = text[starts[lineno - 1]:starts[lineno]] if lineno < len(starts) else ""
    return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def _append_entry(text: str, tree: ast.Module, name: str, item_id: str, entry: str, short: str, where: str,
                  kind) -> str:
    """`text` with `entry`, item_id's, as the last element of the list or dict literal assigned to `name`
    (`short`: the entry as a refusal quotes it)."""
    node = _assignment(tree, name)
    shape = "list [...]" if kind is ast.List else "dict {...}"
    if node is None or not isinstance(node.value, kind):
        raise ScaffoldError(f"{where}: {name} is {'missing' if node is None else 'not written as a ' + shape}; "
                            f"add {short} to it by hand, or write {name} = {shape[-5:]} with it")
    value = node.value
    ids = ([e.args[0] for e in value.elts if isinstance(e, ast.Call) and e.args] if kind is ast.List
           else value.keys)
    if any(isinstance(i, ast.Constant) and i.value == item_id for i in ids):
        raise ScaffoldError(f"{where}: {name} already has an entry for {item_id!r}, which course.yml does not list; "
                            "remove that entry, or choose another item id")
    close = _offset(text, value.end_lineno, value.end_col_offset) - 1  # the closing ] or }
    elements = value.elts if kind is ast.List else value.values
    comma = None
    if elements:
        last = elements[-1]
        end = _offset(text, last.end_lineno, last.end_col_offset)
        if not text[end:close].lstrip().startswith(","):
            comma = end
    line_start = text.rfind("\n", 0, close) + 1
    if text[line_start:close].strip():  # `]` closes a line of elements: open a line for the new one
        text = text[:close] + f"\n    {entry}\n" + text[close:]
    else:
        text = text[:line_start] + f"    {entry}\n" + text[line_start:]
    if comma is not None:
        text = text[:comma] + "," + text[comma:]
    return text


def _before(text: str, name: str, block: str, where: str) -> str:
    """`text` with `block` inserted before the statement assigning `name` (and the comments just above it)."""
    node = _assignment(_parse(text, where), name)
    lines = text.splitlines(keepends=True)
    at = node.lineno - 1
    while at > 0 and lines[at - 1].lstrip().startswith("#"):
        at -= 1
    return "".join(lines[:at]) + block + "".join(lines[at:])


def _import_names(text: str, names: list[str], where: str) -> str:
    """`text` importing `names` from autograder.exercise (added to a one-line `from ..exercise import`)."""
    tree = _parse(text, where)
    missing = [n for n in names if n not in _defined(tree)]
    if not missing:
        return text
    lines = text.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module == "exercise" \
                and node.lineno == node.end_lineno and all(a.asname is None for a in node.names):
            merged = sorted({a.name for a in node.names} | set(missing), key=lambda n: (n[0].islower(), n))
            lines[node.lineno - 1] = f"from ..exercise import {', '.join(merged)}\n"
            return "".join(lines)
    last_import = max((n.end_lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))), default=0)
    lines.insert(last_import, f"from ..exercise import {', '.join(missing)}\n")
    return "".join(lines)


# --- writing -------------------------------------------------------------------------------------------

def _write(path: Path, text: str) -> None:
    """Replace `path`'s content with `text` in one step (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

