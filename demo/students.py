"""The demo class: students written as edits to the released notebooks.

Each student is a dict {notebook id: {cell grade_id or "+name": source}}; a
grade_id replaces that exercise cell, a "+name" key adds a new code cell at
the end. `write_class(dest)` writes dest/<student>/<week>/<notebook>.ipynb in
nbgrader's submitted layout, from the current weeks/ notebooks, so the demo
always matches the course. Run: python demo/students.py [DEST] (default
demo/submitted).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.config import load_course  # noqa: E402

SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)

D06 = "day06_scaled_dot_product_attention"

# Attention written the way students often write it, with one deliberate slip each.
ATTENTION = '''def scaled_dot_product_attention(query, key, value, mask=None):
    d_k = query.shape[-1]
    scores = torch.matmul(query, key.transpose(-2, -1)){scale}
    if mask is not None:
        scores = scores.masked_fill({masked}, {fill})
    weights = F.softmax(scores, dim={dim})
    if mask is not None:
        weights = torch.nan_to_num(weights)
    return torch.matmul(weights, value), weights
'''


def attention(scale=" / math.sqrt(d_k)", masked="mask == 0", fill='float("-inf")', dim=-1):
    return ATTENTION.format(scale=scale, masked=masked, fill=fill, dim=dim)


HOSTILE_CELLS = {
    # Patch the comparison functions a notebook-kernel grader would trust.
    "+patch": "import numpy as np\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
              "np.allclose = lambda *a, **k: True\nnp.testing.assert_allclose = lambda *a, **k: None\n"
              "print('All tests passed! Score: 100/100')\n",
    # A tensor that claims to equal anything.
    "scaled_dot_product_attention": (
        "class Liar(torch.Tensor):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def allclose(self, *a, **k):\n        return True\n"
        "def scaled_dot_product_attention(query, key, value, mask=None):\n"
        "    z = torch.zeros(*query.shape[:-1], value.shape[-1], dtype=query.dtype).as_subclass(Liar)\n"
        "    w = torch.zeros(*query.shape[:-1], key.shape[-2], dtype=query.dtype).as_subclass(Liar)\n"
        "    return z, w\n"
    ),
    # An endless loop inside a graded function.
    "attention_flops": "def attention_flops(n_queries, n_keys, d_k, d_v):\n    while True:\n        pass\n",
    # Leaves the process the moment it is called.
    "causal_mask": "import os\ndef causal_mask(size, device=None):\n    os._exit(0)\n",
    # A correct answer, to show the rest of the notebook is still graded.
    "padding_mask": "def padding_mask(tokens, pad_id):\n    return (tokens != pad_id).unsqueeze(1)\n",
    # Tries to end the run early, twice.
    "+exit": "import sys\nsys.exit(0)\n",
    "+hard_exit": "import os\nos._exit(0)\n",
}

STUDENTS: dict[str, dict[str, dict[str, str]]] = {
    "ada_complete": {D06: {"*": "solution"}},
    "ben_untouched": {D06: {}},
    "cleo_no_scaling": {D06: {"*": "solution", "scaled_dot_product_attention": attention(scale="")}},
    "dev_inverted_mask": {D06: {"*": "solution", "scaled_dot_product_attention": attention(masked="mask")}},
    "eli_query_softmax": {D06: {"*": "solution", "scaled_dot_product_attention": attention(dim=-2)}},
    "fay_minus_1e9": {D06: {"*": "solution", "scaled_dot_product_attention": (
        "def scaled_dot_product_attention(query, key, value, mask=None):\n"
        "    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))\n"
        "    if mask is not None:\n"
        "        scores = scores.masked_fill(~mask, -1e9)\n"
        "    weights = scores.softmax(-1)\n"
        "    return weights @ value, weights\n")}},
    "gus_mask_shifted": {D06: {"*": "solution", "causal_mask": (
        "def causal_mask(size, device=None):\n"
        "    return torch.ones(size, size, device=device).tril(diagonal=-1).bool()\n"),
        "padding_mask": "def padding_mask(tokens, pad_id):\n    return (tokens != pad_id).unsqueeze(-1)\n"}},
    "hal_hostile": {D06: dict(HOSTILE_CELLS, **{"*": "solution"})},
}


def solution_sources(course_nb) -> dict[str, str]:
    """The solution of each exercise cell, markers removed (what a complete student writes)."""
    src = nbformat.read(ROOT / "solutions" / course_nb.path, as_version=4)
    out = {}
    for cell in src.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            out[meta["grade_id"]] = SOLUTION.sub("", cell.source)
    return out


def make_notebook(course_nb, edits: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "weeks" / course_nb.path, as_version=4)
    replacements = dict(solution_sources(course_nb)) if edits.get("*") == "solution" else {}
    replacements.update({k: v for k, v in edits.items() if not k.startswith(("+", "*"))})
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and gid in replacements:
            cell.source = replacements[gid]
    for name, source in edits.items():
        if name.startswith("+"):
            new = nbformat.v4.new_code_cell(source)
            new["id"] = f"student-{name[1:]}"
            nb.cells.append(new)
    return nb


def write_class(dest: Path, students=STUDENTS) -> list[Path]:
    course = load_course()
    written = []
    for student, notebooks in students.items():
        for nb_id, edits in notebooks.items():
            course_nb = course.notebook(nb_id)
            path = Path(dest) / student / course_nb.path
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(make_notebook(course_nb, edits), path)
            written.append(path)
    return written


if __name__ == "__main__":
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "demo" / "submitted"
    print(f"wrote {len(write_class(dest))} notebooks of {len(STUDENTS)} students to {dest}")
