"""docs/contract.md, the course contract: every item of course.yml under its own notebook and nothing else,
with the signatures the solution notebooks define."""
from __future__ import annotations

import ast
import re

import pytest

from autograder import reference
from autograder.config import ROOT, load_course

CONTRACT = ROOT / "docs" / "contract.md"
NOTEBOOK_HEADING = re.compile(r"^#+\s+`(?P<week>[\w-]+)/(?P<notebook>\w+)\.ipynb`")
ROW = re.compile(r"^\|\s*`(?P<id>[A-Za-z_]\w*)`\s*\|")
COURSE = load_course()


def contract_rows() -> tuple[dict[str, tuple[str, list[tuple[str, str]]]], list[str]]:
    """({notebook id: (week, [(item id, row text)])}, item ids in rows outside any notebook's section)."""
    sections: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    stray: list[str] = []
    current = None
    for line in CONTRACT.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            match = NOTEBOOK_HEADING.match(line)
            current = match["notebook"] if match else None
            if match:
                assert current not in sections, f"docs/contract.md: two sections for {current}"
                sections[current] = (match["week"], [])
            continue
        row = ROW.match(line)
        if row:
            if current is None:
                stray.append(row["id"])
            else:
                sections[current][1].append((row["id"], line))
    return sections, stray


def test_contract_names_every_item_of_course_yml_and_nothing_else():
    """Does docs/contract.md have one section per notebook of course.yml (under its week), listing exactly that
    notebook's items (auto-graded, quizzes and checkpoints alike), each once, and no item anywhere else?"""
    sections, stray = contract_rows()
    assert not stray, f"docs/contract.md: item rows outside a notebook's section: {stray}"
    problems = []
    for nb in COURSE.notebooks:
        if nb.id not in sections:
            problems.append(f"no section for {nb.path}")
            continue
        week, rows = sections[nb.id]
        if week != nb.week:
            problems.append(f"{nb.id} is listed under {week}, course.yml has it in {nb.week}")
        listed = [item_id for item_id, _ in rows]
        expected = [item.id for item in nb.items]
        if missing := [i for i in expected if i not in listed]:
            problems.append(f"{nb.id}: items of course.yml missing from docs/contract.md: {missing}")
        if extra := [i for i in listed if i not in expected]:
            problems.append(f"{nb.id}: docs/contract.md lists items course.yml does not have: {extra}")
        if len(set(listed)) != len(listed):
            problems.append(f"{nb.id}: an item is listed twice: {listed}")
    if unknown := sorted(set(sections) - {nb.id for nb in COURSE.notebooks}):
        problems.append(f"docs/contract.md has sections for notebooks course.yml does not have: {unknown}")
    assert not problems, "\n".join(problems)


def _without_self(args: ast.arguments) -> str:
    text = ast.unparse(args)
    return text.removeprefix("self, ").removeprefix("self")


def signatures(source: str, item_id: str) -> list[str]:
    """What the contract must write of the item's signature: `name(parameters)` of the function, or of the
    class's __init__ (as `Class(...)`) and of each method students write (public names)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == item_id:
            return [f"{item_id}({ast.unparse(node.args)})"]
        if isinstance(node, ast.ClassDef) and node.name == item_id:
            out = []
            for method in node.body:
                if not isinstance(method, ast.FunctionDef):
                    continue
                if method.name == "__init__":
                    out.insert(0, f"{item_id}({_without_self(method.args)})")
                elif not method.name.startswith("_"):
                    out.append(f"{method.name}({_without_self(method.args)})")
            return out
    return []


@pytest.mark.parametrize("nb", COURSE.notebooks, ids=lambda nb: nb.id)
def test_contract_signatures_are_the_solutions(nb):
    """Does each row give the item's signature exactly as its solution cell defines it (parameter names, order and
    defaults; a class's constructor and the methods students write), and say which items are checkpoints graded
    by hand and which are extra credit?"""
    sections, _ = contract_rows()
    rows = dict(sections.get(nb.id, ("", []))[1])
    sources = reference.solution_sources(nb)
    problems = []
    for item in nb.items:
        row = rows.get(item.id)
        if row is None:
            continue  # reported by the test above
        if item.manual and "checkpoint" not in row:
            problems.append(f"{item.id}: a checkpoint graded by hand; its row should say so")
        if item.extra_credit and "extra credit" not in row:
            problems.append(f"{item.id}: extra credit in course.yml; its row should say so")
        for signature in signatures(sources.get(item.id, ""), item.id):
            if f"`{signature}" not in row and f" {signature}" not in row:
                problems.append(f"{item.id}: the solution defines {signature}, not written so in docs/contract.md")
    assert not problems, "\n".join(problems)


def test_repository_stands_alone():
    """Do the README and the contract refer only to files of this repository (no design notes outside it)?"""
    for path in (ROOT / "README.md", CONTRACT):
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "/work/shared" not in text and "COURSE_SPEC" not in text, path
    assert "docs/contract.md" in (ROOT / "README.md").read_text(encoding="utf-8")
