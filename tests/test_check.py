"""The student's check: in the notebook and from the shell, on public cases only."""
from __future__ import annotations

import io
import json
import linecache
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest

import students as demo
from autograder import check, compare
from autograder.check import CheckError, CheckFailed, check_notebook
from autograder.config import ROOT, load_course
from autograder.exercise import exercises
from conftest import solution_namespace

D06 = "day06_scaled_dot_product_attention"
AUTO06 = load_course().notebook(D06).auto_items
QUIZZES06 = [item for item in AUTO06 if exercises(D06)[item.id].kind == "quiz"]
"""Day 6's auto-graded items (course.yml) and, among them, its quizzes."""
SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)


@pytest.fixture(scope="module")
def reference_ns():
    """The Days 6-7 solution cells executed in a namespace (the reference objects, for these tests)."""
    ns: dict = {}
    nb = nbformat.read(ROOT / "solutions" / "week1" / f"{D06}.ipynb", as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or cell.source.startswith("import")):
            exec(SOLUTION.sub("", cell.source).replace("from autograder import check, demo", ""), ns)
    return ns


def test_correct_function_passes(reference_ns, capsys):
    """Does check() on a correct function pass quietly and say so?"""
    assert check(reference_ns["scaled_dot_product_attention"]) is None
    assert "PASS scaled_dot_product_attention: 6/6 public cases passed" in capsys.readouterr().out


def card(capsys, obj, item=None) -> str:
    """What check(obj) shows (outside Jupyter: the card's text, printed); it returns None, pass or fail."""
    capsys.readouterr()
    assert check(obj, item=item) is None
    return capsys.readouterr().out


def no_scaling(reference_ns):
    torch = reference_ns["torch"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        scores = query @ key.transpose(-2, -1) / query.size(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, -1).nan_to_num()
        return w @ value, w

    return scaled_dot_product_attention


def test_mistake_is_named_without_showing_inputs(reference_ns, capsys):
    """Does check() on a known mistake show the case, the numbers and the named mistake, without raising?"""
    text = card(capsys, no_scaling(reference_ns))
    assert text.startswith("FAIL scaled_dot_product_attention") and "case 2d-float64" in text
    assert "largest difference" in text and "divided by d_k instead of sqrt(d_k)" in text
    assert "array(" not in text and "tensor(" not in text  # inputs are described, never printed


def test_failing_check_raises_under_nbgrader_only(reference_ns, monkeypatch, capsys):
    """Does a failing check raise CheckFailed (shown as its card, no traceback) only while nbgrader runs the
    notebook (NBGRADER_EXECUTION set, for its Validate button), and return after showing the card otherwise?"""
    wrong = no_scaling(reference_ns)
    assert "FAIL scaled_dot_product_attention" in card(capsys, wrong)
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    with pytest.raises(CheckFailed) as err:
        check(wrong)
    assert err.value._render_traceback_()[0].startswith("FAIL scaled_dot_product_attention")
    assert check(reference_ns["scaled_dot_product_attention"]) is None  # a passing check never raises


def test_wrong_return_form_is_explained(reference_ns, capsys):
    """Is returning only the output (not the pair) explained as such?"""
    torch = reference_ns["torch"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        return torch.softmax(query @ key.transpose(-2, -1), -1) @ value

    assert re.search(r"should return a tuple \(output, weights\)", card(capsys, scaled_dot_product_attention))


def test_quiz_check_accepts_any_valid_letter_but_not_others(capsys):
    """Does the public quiz check only validate the form (it must not reveal the answer)?"""
    assert card(capsys, "C", item="quiz_sqrt_dk").startswith("RECORDED quiz_sqrt_dk")
    assert card(capsys, "b", item="quiz_sqrt_dk").startswith("RECORDED quiz_sqrt_dk")
    assert "not one of A, B, C, D" in card(capsys, "Z", item="quiz_sqrt_dk")


def test_wrong_quiz_answer_is_recorded_never_pass(capsys):
    """Does a wrong quiz answer (quiz_sqrt_dk = "D"; "sentiment": "decoder-only") show "answer recorded (graded
    later)" and never PASS, in text and in the HTML card?"""
    from autograder.check import _check

    text = card(capsys, "D", item="quiz_sqrt_dk")
    assert text.strip() == ("RECORDED quiz_sqrt_dk: answer recorded (graded later); this check only confirms its "
                            "form, not whether it is right")
    architecture = {"translation": "encoder-decoder", "sentiment": "decoder-only", "pos_tagging": "encoder-only",
                    "story_continuation": "decoder-only", "code_completion": "decoder-only"}
    text = card(capsys, architecture, item="quiz_architecture_for_task")
    assert text.startswith("RECORDED quiz_architecture_for_task: answer recorded (graded later)")
    for report in (_check("D", "quiz_sqrt_dk"), _check(architecture, "quiz_architecture_for_task")):
        assert report.passed and report.recorded  # Run All goes on; nbgrader's Validate does not fail it
        assert "PASS" not in report.text() + report._repr_html_()
        assert "RECORDED" in report._repr_html_() and "answer recorded (graded later)" in report._repr_html_()


def test_unknown_object_suggests_the_item():
    """Does checking a function whose name is not an item suggest the closest id?"""
    def casual_mask(size):
        return None

    with pytest.raises(Exception, match="did you mean 'causal_mask'"):
        check(casual_mask)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "autograder", "check", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_check_complete_notebook(demo_class):
    """Does the shell check pass a complete notebook, with exit code 0 and valid JSON, its quiz answer
    recorded (graded later), never shown as PASS?"""
    path = demo_class / "ada_complete" / "week1" / f"{D06}.ipynb"
    res = run_cli(path, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["passed"] and data["notebook"] == D06
    res = run_cli(path)
    assert res.returncode == 0, res.stderr
    assert "RECORDED quiz_sqrt_dk: answer recorded (graded later)" in res.stdout and "PASS quiz" not in res.stdout
    n, quizzes = len(AUTO06) - len(QUIZZES06), len(QUIZZES06)
    assert (f"{n}/{n} items pass their public cases; {quizzes} quiz answer{'s' if quizzes != 1 else ''} recorded "
            "(graded later).") in res.stdout


def test_cli_check_names_mistake(demo_class):
    """Does the shell check of a buggy notebook exit 1 and name the mistake, in short plain text?"""
    res = run_cli(demo_class / "cleo_no_scaling" / "week1" / f"{D06}.ipynb")
    assert res.returncode == 1
    assert "FAIL scaled_dot_product_attention" in res.stdout and "the scores are not scaled" in res.stdout
    assert "PASS causal_mask" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert "hidden" not in res.stdout.split("items pass")[0].replace("(hidden", "")  # only public cases run


def code_cell_number(path, grade_id: str) -> int:
    """The number Jupyter's Run All gives a cell: its place among the code cells (In [n])."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return next(n for n, c in enumerate(cells, 1) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_cli_check_stub_notebook():
    """Does checking the untouched release notebook fail cleanly, saying what is missing (the quiz: no answer
    yet), and name the function and the code cell (numbered as Jupyter's In [n], markdown cells not counted) where each error came from?"""
    path = ROOT / "weeks" / "week1" / f"{D06}.ipynb"
    res = run_cli(path)
    assert res.returncode == 1 and "NotImplementedError" in res.stdout and "Traceback" not in res.stderr
    for item in ("scaled_dot_product_attention", "causal_mask", "padding_mask", "attention_flops"):
        assert f"raised NotImplementedError (in {item}, code cell {code_cell_number(path, item)}, line " in res.stdout
    # The quiz cell is its placeholder (quiz_sqrt_dk = None), which runs: unanswered, not an error.
    assert "no answer yet (still None): give one of A, B, C, D" in res.stdout
    assert f"code cell {code_cell_number(path, 'quiz_sqrt_dk')}" not in res.stdout
    assert not re.search(r"\bcell \d+", res.stdout.replace("code cell", "")), res.stdout


def test_cli_check_unknown_notebook(tmp_path):
    """Does checking a file that is not a course notebook say which names are expected?"""
    path = tmp_path / "day6.ipynb"
    path.write_text("{}")
    res = run_cli(path)
    assert res.returncode == 2 and "not a notebook of this course" in res.stderr


def copy_of_release(folder, mutate=None):
    """The Days 6-7 release notebook, changed by `mutate(data)`, under its own name in `folder`."""
    data = json.loads((ROOT / "weeks" / "week1" / f"{D06}.ipynb").read_text())
    if mutate:
        mutate(data)
    path = folder / f"{D06}.ipynb"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_cli_check_unreadable_notebook_is_a_message(tmp_path):
    """Does checking a notebook whose JSON nests 100,000 deep exit 2 with a message naming it, no traceback?"""
    path = tmp_path / f"{D06}.ipynb"
    path.write_text("[" * 100_000)
    res = run_cli(path)
    assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr
    assert str(path) in res.stderr and "nests deeper than" in res.stderr and "save it from Jupyter" in res.stderr


def test_cli_check_names_a_failed_cell_by_its_jupyter_number(tmp_path):
    """When an exercise cell fails at the top level (so its item is never defined), do the note and the item's
    message name that cell as Jupyter's In [n] does (code cells only), the one that really failed?"""
    def mutate(data):
        for cell in data["cells"]:
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "causal_mask":
                cell["source"] = "raise RuntimeError('this cell is broken')\n"

    path = copy_of_release(tmp_path, mutate)
    number = code_cell_number(path, "causal_mask")
    all_cells = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nbformat.read(path, 4).cells]
    assert all_cells.index("causal_mask") + 1 != number  # markdown cells come before it: the two numberings differ
    res = run_cli(path)
    assert f"note: code cell {number}: RuntimeError: this cell is broken" in res.stdout, res.stdout
    assert "causal_mask is not defined after running the notebook" in res.stdout
    assert f"(code cell {number} failed: RuntimeError: this cell is broken" in res.stdout


def test_cli_check_grade_id_list_is_no_crash(tmp_path):
    """Does the shell check of a notebook whose grade_ids are a list and a dict judge it, without a traceback?"""
    def mutate(data):
        data["cells"] = [c for c in data["cells"] if c["cell_type"] != "code"]  # nothing to execute: fast
        for cell in data["cells"]:
            if cell["id"] == "checkpoint_sdpa":
                cell["metadata"]["nbgrader"]["grade_id"] = ["checkpoint_sdpa"]
        data["cells"][0]["metadata"]["nbgrader"] = {"grade_id": {"id": "checkpoint_sdpa"}}

    res = run_cli(copy_of_release(tmp_path, mutate))
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr
    assert "scaled_dot_product_attention is not defined" in res.stdout and f"0/{len(AUTO06)} items pass" in res.stdout


def test_check_notebook_internal_error_is_a_message(tmp_path, monkeypatch, capsys):
    """When the checker itself fails, is it exit 2 and a message naming the file and whose problem it is?"""
    def broken(notebook_id):
        raise RuntimeError("the key is gone")

    monkeypatch.setattr("autograder.reference.load_public", broken)
    path = copy_of_release(tmp_path)
    out = io.StringIO()
    assert check_notebook(path, as_json=True, out=out) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "the key is gone" in err and "tell the instructor" in err and "Traceback" not in err
    assert json.loads(out.getvalue())["passed"] is False


def test_check_internal_error_shows_no_traceback(reference_ns, monkeypatch):
    """In a notebook, does a failure of the checker itself raise CheckError, shown as its message only?"""
    def broken(*args):
        raise KeyError("cases")

    monkeypatch.setattr("autograder.compare.judge_item", broken)
    with pytest.raises(CheckError) as err:
        check(reference_ns["causal_mask"])
    assert "check(causal_mask) could not run (KeyError" in str(err.value) and "tell the instructor" in str(err.value)
    assert err.value._render_traceback_() == str(err.value).splitlines()
    with pytest.raises(CheckError, match="needs a function or class"):
        check(3)


# --- what the check says on the cases of issue 13 ------------------------------------------------------------

@pytest.fixture
def fresh_public(monkeypatch, keys):
    """check() against the public part of freshly computed keys: the committed autograder/public/*.agw are
    rebuilt by `python -m autograder build` and may predate a mistake these tests name."""
    from autograder import reference

    monkeypatch.setattr(reference, "load_public", lambda nb_id: reference.public_part(keys[nb_id]))


def namespace(notebook_id: str, **replace: tuple[str, str]) -> dict:
    """The solution objects of a notebook, with some cells' sources edited: {grade_id: (old, new)}."""
    nb = load_course().notebook(notebook_id)
    ns = solution_namespace(ROOT / "solutions" / nb.path)
    sources = demo.solution_sources(nb)
    for grade_id, (old, new) in replace.items():
        assert old in sources[grade_id], old
        exec(compile(sources[grade_id].replace(old, new), f"<edited {grade_id}>", "exec"), ns)
    return ns


def failing_cases(text: str) -> list[str]:
    """The failing cases of a card, each with its lines."""
    return re.split(r"\n(?=FAIL \w+: case )", text)[1:]


def test_swapped_cross_attention_is_named_on_every_case(fresh_public, capsys):
    """Is DecoderLayer's cross_attn(memory, x, x, src_mask) named as the swapped query and keys/values on every
    failing case (it raises where the lengths differ), never as "the causal mask is applied to the cross-attention"?"""
    ns = namespace("day10_transformer", DecoderLayer=(
        "self.cross_attn(x, memory, memory, src_mask)", "self.cross_attn(memory, x, x, src_mask)"))
    text = card(capsys, ns["DecoderLayer"])
    cases = failing_cases(text)
    assert len(cases) == 5, text
    for case in cases:
        assert "Likely mistake: in the cross-attention, the query and the keys/values are swapped" in case, case
    assert "causal mask" not in text


def test_float32_arithmetic_on_float64_gets_no_nan_diagnosis(reference_ns, fresh_public, capsys):
    """Does float32 arithmetic on float64 inputs get the dtype message only, no "fully masked rows come out as
    NaN" or "softmax overflows" on an output without NaN?"""
    torch, math = reference_ns["torch"], reference_ns["math"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        q, k, v = query.float(), key.float(), value.float()
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, -1)
        if mask is not None:
            weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return weights @ v, weights

    text = card(capsys, scaled_dot_product_attention)
    assert "dtype float32, expected float64" in text and "case 3d-padding-float32" not in text
    assert "Likely mistake" not in text and "NaN" not in text and "overflow" not in text


def test_untransposed_W_in_gradient_norms_is_named(fresh_public, capsys):
    """Is hidden_gradient_norms with W_hh untransposed (J = W_hh.T scaled by column, i.e. W_hh where W_hh.T belongs
    and the factors in the other order) named on every failing case?"""
    ns = namespace("day01_rnn_limitations", hidden_gradient_norms=(
        "(1.0 - hs[t + 1] ** 2)[:, None] * W_hh.T", "W_hh.T * (1.0 - hs[t + 1] ** 2)"))
    cases = failing_cases(card(capsys, ns["hidden_gradient_norms"]))
    assert len(cases) == 3
    assert all("Likely mistake: W_hh is used where the Jacobian needs W_hh.T, and the factors are multiplied in the "
               "other order" in c for c in cases)


def test_relu_after_second_linear_is_named(fresh_public, capsys):
    """Is PositionwiseFeedForward with the ReLU after the second linear layer named as such?"""
    ns = namespace("day10_transformer", PositionwiseFeedForward=(
        "self.linear2(self.dropout(torch.relu(self.linear1(x))))",
        "torch.relu(self.linear2(self.dropout(self.linear1(x))))"))
    cases = failing_cases(card(capsys, ns["PositionwiseFeedForward"]))
    assert len(cases) == 2
    assert all("Likely mistake: the ReLU is applied after the second linear layer, not between the two" in c
               for c in cases)


def test_attention_without_dropout_fails_the_seeded_dropout_case(fresh_public, capsys):
    """Does a MultiHeadAttention that never applies dropout fail the dropout=0.5 training-mode case (compared under
    seeded dropout), with that mistake named, and pass the others?"""
    ns = namespace("day08_multi_head_attention", MultiHeadAttention=(
        "context = self.dropout(weights) @ v", "context = weights @ v"))
    text = card(capsys, ns["MultiHeadAttention"])
    assert text.startswith("FAIL MultiHeadAttention: 7/8 public cases passed"), text
    (case,) = failing_cases(text)
    assert "case weights-before-dropout-float64" in case and "output:" in case
    assert "Likely mistake: dropout is never applied" in case


def test_in_place_edits_of_the_inputs_are_reported(reference_ns, fresh_public, capsys):
    """Is `query /= math.sqrt(d_k)` reported as a change of the input (and, where autograd refuses it, the
    in-place operation explained), and MultiHeadAttention's `mask.unsqueeze_(1)` as a change of the mask's shape?"""
    torch, math = reference_ns["torch"], reference_ns["math"]

    def scaled_dot_product_attention(query, key, value, mask=None):
        query /= math.sqrt(query.size(-1))
        scores = query @ key.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, -1)
        if mask is not None:
            weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return weights @ value, weights

    text = card(capsys, scaled_dot_product_attention)
    cases = failing_cases(text)
    assert text.startswith("FAIL scaled_dot_product_attention: 0/6") and len(cases) == 6
    for case in cases[:5]:
        assert re.search(r"input query: \d+ of \d+ values changed", case) and "changed its inputs in place" in case
        assert "output:" not in case and "weights:" not in case  # the outputs themselves are right
    assert "leaf Variable that requires grad is being used in an in-place operation" in cases[5]
    assert "an in-place operation (x /= ..." in cases[5]

    ns = namespace("day08_multi_head_attention", MultiHeadAttention=(
        "mask = mask.unsqueeze(1)", "mask.unsqueeze_(1)"))
    text = card(capsys, ns["MultiHeadAttention"])
    assert "input mask: its shape changed from [3, 4, 4] to [3, 1, 4, 4]" in text
    assert "input mask: its shape changed from [2, 1, 5] to [2, 1, 1, 5]" in text
    assert "case mask-4d-float64" not in text and "case causal-no-bias-float32" not in text  # unchanged masks


def test_input_changed_then_error_names_the_change_without_input_details():
    """When code changes an input in place and then fails (mask.unsqueeze_(1), then a shape error), does the error
    say which input changed and how, and where it then raised, quoting no input's shape nor the error's message
    (the text is shown on hidden cases too)?"""
    from autograder.exercise import StudentError, as_tensor, checking_inputs

    def run(fn, inputs):
        return {"o": fn(as_tensor(inputs["mask"]))}

    shape_error = "The size of tensor a (7) must match the size of tensor b (5)"

    def layer(mask):
        mask.unsqueeze_(1)
        raise RuntimeError(shape_error)

    with pytest.raises(StudentError) as err:
        checking_inputs(run)(layer, {"mask": np.ones((2, 5, 5), dtype=bool)})
    message = str(err.value)
    assert message.startswith("changed its inputs in place (mask (shape)), then raised RuntimeError (in ")
    assert "(in test_input_changed_then_error_names_the_change_without_input_details.layer, " in message
    assert "line" in message and "[2, 5, 5]" not in message and "size of tensor" not in message


def test_input_change_on_a_hidden_case_names_the_input_only():
    """On a hidden case, is an input changed in place named without what changed (its shape would tell the
    hidden inputs)?"""
    from autograder.exercise import MUTATED
    from autograder.wire import Tensor

    key = {"name": "c", "public": False, "expected": {"o": Tensor(np.ones(1))}, "mistakes": {}}
    got = {"outputs": {"o": Tensor(np.ones(1)), MUTATED: ["mask: its shape changed from [2, 5, 5] to [2, 1, 5, 5]"]},
           "error": ""}
    result = compare.judge_case("x", key, got, [], 1.0)
    assert not result.passed and result.problems[0] == "input mask: changed in place"
    assert "[2, 5, 5]" not in result.text()


def test_in_place_edit_of_a_numpy_input_is_reported(capsys):
    """Is a NumPy softmax that does `x -= x.max(...)` on its input told that it changed its input?"""
    def softmax(x, axis=-1):
        x -= x.max(axis=axis, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=axis, keepdims=True)

    text = card(capsys, softmax)
    assert re.search(r"input x: \d+ of \d+ values changed", text) and "x = x - x.max(...)" in text


def test_error_from_a_pasted_stub_names_the_function(fresh_public, capsys):
    """Does an error raised in a pasted stub (Day 8's MultiHeadAttention in the Days 10-12 notebook) name that
    function, and the item's function it was called from, not only "line 2"?"""
    release = nbformat.read(ROOT / "weeks" / "week2" / "day08_multi_head_attention.ipynb", as_version=4)
    pasted = next(c.source for c in release.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                  == "MultiHeadAttention")
    ns = namespace("day10_transformer")
    linecache.cache["<pasted>"] = (len(pasted), None, pasted.splitlines(True), "<pasted>")  # as IPython does
    exec(compile(pasted, "<pasted>", "exec"), ns)
    text = card(capsys, ns["EncoderLayer"])
    line = pasted.splitlines().index("        raise NotImplementedError()") + 1
    assert (f"raised NotImplementedError (in MultiHeadAttention.forward, line {line}: raise NotImplementedError(); "
            "called from EncoderLayer.forward, line ") in text


def test_describe_error_names_function_and_cell(tmp_path):
    """Does describe_error name the student's function and the cell Jupyter shows ("cell In [7]") or the file?"""
    import importlib.util

    from autograder.exercise import describe_error

    def raised(fn):
        try:
            fn(3)
        except NotImplementedError as exc:
            return exc

    ns: dict = {}
    exec(compile("def causal_mask(size):\n    raise NotImplementedError()\n", "<cell-7>", "exec"), ns)
    error = raised(ns["causal_mask"])
    labelled = describe_error(error, lambda filename: "cell In [7]" if filename == "<cell-7>" else None)
    assert labelled.startswith("NotImplementedError (in causal_mask, cell In [7], line 2; called from ")
    assert describe_error(error).startswith("NotImplementedError (in causal_mask, line 2; ")
    (tmp_path / "helpers.py").write_text("def padding_mask(tokens):\n    raise NotImplementedError('not yet')\n")
    spec = importlib.util.spec_from_file_location("helpers", tmp_path / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert describe_error(raised(module.padding_mask)).startswith(
        "NotImplementedError: not yet (in padding_mask, file helpers.py, line 2: raise NotImplementedError('not yet'); ")


def test_run_all_shows_every_card(tmp_path, monkeypatch):
    """Does "Run All" of a notebook whose checks fail run every cell in a Jupyter kernel (the project's
    attention-course kernel), showing each failing card, the quiz answer recorded, and an error's function and
    cell as Jupyter numbers it ("cell In [n]")?"""
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    nb = load_course().notebook(D06)
    sdpa = demo.solution_sources(nb)["scaled_dot_product_attention"]
    notebook = demo.make_notebook(nb, {
        "*": "solution",
        "scaled_dot_product_attention": sdpa.replace("math.sqrt(d_k)", "d_k"),
        "quiz_sqrt_dk": 'quiz_sqrt_dk = "D"\n',
        "+stub": "def causal_mask(size, device=None):\n    raise NotImplementedError()\n",
        "+check": "check(causal_mask)\n",
    })
    assert "math.sqrt(d_k)" in sdpa
    client = NotebookClient(notebook, kernel_name="attention-course", timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError if any cell raises
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    shown = {c.source: "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in c.outputs)
             for c in code}
    assert shown["check(scaled_dot_product_attention)"].startswith("FAIL scaled_dot_product_attention")
    assert shown['check(quiz_sqrt_dk, item="quiz_sqrt_dk")'].startswith(
        "RECORDED quiz_sqrt_dk: answer recorded (graded later)")
    assert "PASS causal_mask" not in shown["check(causal_mask)\n"]
    stub_number = len(code) - 1
    assert (f"raised NotImplementedError (in causal_mask, cell In [{stub_number}], line 2: "
            "raise NotImplementedError())") in shown["check(causal_mask)\n"]
