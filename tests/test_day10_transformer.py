"""Days 10-12 (the complete Transformer): its demo students, its property checks, and its runners."""
from __future__ import annotations

import html
import time

import numpy as np
import pytest
import torch

import students as demo_students
from autograder import compare, notebook, wire
from autograder.config import ROOT
from autograder.exercise import StudentError
from autograder.exercises import day10_transformer as ex
from autograder.hidden import day10_transformer as hidden
from conftest import gradebook_rows, results_of, solution_namespace, grade_students

D10 = "day10_transformer"
SOLUTION = ROOT / "solutions" / "week2" / f"{D10}.ipynb"
EXERCISES = {e.id: e for e in ex.EXERCISES}


@pytest.fixture(scope="module")
def reference_ns():
    """The notebook's solution cells (no demos, no checks) executed in one namespace."""
    return solution_namespace(SOLUTION)


def mistake(item, name):
    return next(m.impl for m in hidden.MISTAKES[item] if m.name == name)


def failed_outputs(tests: dict, item: str, case_prefix: str = "") -> list[str]:
    return [t["output"] for name, t in tests.items()
            if name.startswith(f"{item}: {case_prefix}") and t["status"] == "failed"]


# --- the demo class ----------------------------------------------------------------

@pytest.mark.parametrize("student,item,title", [
    ("ivy_d10_pe_halves", "sinusoidal_positional_encoding", "concatenated instead of interleaved"),
    ("lea_d10_unbiased_var", "layer_norm", "the variance is the unbiased one"),
    ("mia_d10_cross_causal", "DecoderLayer", "the causal mask (tgt_mask) is applied to the cross-attention"),
    ("kai_d10_unscaled_embed", "Transformer", "the embeddings are not multiplied by sqrt(d_model)"),
])
def test_realistic_students_lose_points_on_their_item_only(course, graded_demo, student, item, title):
    """Does each Days 10-12 demo student lose points on the item they got wrong and only there (the later
    items get the reference pieces), with their mistake named in every failing case and in the feedback?"""
    _, out = graded_demo
    row = gradebook_rows(out)[student]
    for it in course.notebook(D10).auto_items:
        if it.id == item:
            assert float(row[it.id]) < it.points
        else:
            assert float(row[it.id]) == it.points, f"{student} lost points on {it.id}"
    failed = failed_outputs(results_of(out, student), item)
    assert failed and all(title in o for o in failed), failed[:2]
    assert html.escape(title) in (out / "feedback" / f"{student}.html").read_text()


# --- students written for these tests, graded by the real grader ------------------------

def _replace(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new)


def _adhoc_students(course) -> dict[str, dict[str, str]]:
    nb = course.notebook(D10)
    sol = demo_students.solution_sources(nb)
    mha = demo_students.solution_sources(course.notebook("day08_multi_head_attention"))["MultiHeadAttention"]
    enc, dec, tr = sol["EncoderLayer"], sol["DecoderLayer"], sol["Transformer"]
    enc_body = ("        attended, _ = self.self_attn(x, x, x, src_mask)  # (B, S, D)\n"
                "        x = self.norm1(x + self.dropout(attended))\n"
                "        x = self.norm2(x + self.dropout(self.feed_forward(x)))\n")
    pe_line = "        x = self.dropout(x + self.positional_encoding[: src.size(1)])  # (S, D) broadcasts over B\n"
    return {
        "t10_pre_norm": {"*": "solution", "EncoderLayer": _replace(enc, enc_body, (
            "        h = self.norm1(x)\n"
            "        x = x + self.dropout(self.self_attn(h, h, h, src_mask)[0])\n"
            "        x = x + self.dropout(self.feed_forward(self.norm2(x)))\n"))},
        "t10_encoder_ignores_mask": {"*": "solution", "EncoderLayer": _replace(
            enc, "self.self_attn(x, x, x, src_mask)", "self.self_attn(x, x, x)")},
        "t10_decoder_unmasked": {"*": "solution", "DecoderLayer": _replace(
            dec, "self.self_attn(x, x, x, tgt_mask)", "self.self_attn(x, x, x)")},
        "t10_no_pe": {"*": "solution", "Transformer": _replace(_replace(
            tr, pe_line, "        x = self.dropout(x)\n"),
            "        x = self.dropout(x + self.positional_encoding[: tgt.size(1)])\n", "        x = self.dropout(x)\n")},
        "t10_cross_unmasked": {"*": "solution", "Transformer": _replace(
            tr, "x = layer(x, memory, src_mask, tgt_mask)", "x = layer(x, memory, None, tgt_mask)")},
        "t10_counts_by_building": {"*": "solution", "transformer_parameter_count": (
            "def transformer_parameter_count(src_vocab_size, tgt_vocab_size, d_model, num_heads, num_layers, d_ff):\n"
            "    model = Transformer(src_vocab_size, tgt_vocab_size, d_model, num_heads, num_layers, d_ff)\n"
            "    return sum(p.numel() for p in model.parameters())\n")},
        "t10_quiz_one_wrong": {"*": "solution", "quiz_architecture_for_task": (
            "quiz_architecture_for_task = {'translation': 'Encoder-Decoder', 'sentiment': 'encoder-only ',\n"
            "    'pos_tagging': 'decoder-only', 'story_continuation': 'decoder-only', 'code_completion': 'decoder-only'}\n")},
        # Nothing from Days 6 and 8 (the imported pieces deleted): the graded items must not suffer (reference
        # pieces are injected).
        "t10_no_earlier_pieces": {"*": "solution", "+no_earlier": "del MultiHeadAttention, causal_mask, padding_mask\n"},
        # A Day 8 bug (no output projection) pasted in over the import: it must not cost points again here.
        "t10_buggy_mha": {"*": "solution", "+buggy_mha": _replace(
            mha, "output = self.W_o(merge_heads(context))", "output = merge_heads(context)")},
    }


@pytest.fixture(scope="module")
def adhoc(course, fast_course, tmp_path_factory):
    """The students above, graded once: (students, output folder)."""
    students = _adhoc_students(course)
    return students, grade_students(fast_course, D10, students, tmp_path_factory)[1]


@pytest.mark.parametrize("student,item,cases,title", [
    ("t10_pre_norm", "EncoderLayer", "padded", "the layer is pre-norm"),
    ("t10_encoder_ignores_mask", "EncoderLayer", "padding-invariance", "src_mask is not passed"),
    ("t10_decoder_unmasked", "DecoderLayer", "causality", "the self-attention has no mask"),
    ("t10_no_pe", "Transformer", "permutation", "the positional encoding is missing"),
    ("t10_cross_unmasked", "Transformer", "padding-invariance", None),
])
def test_property_cases_catch_their_mistakes(course, adhoc, student, item, cases, title):
    """Does a student with a masking or positional mistake fail the property cases that expose it (public and
    hidden: causality, padding invariance, permutation), lose points on that item only, and, where the
    mistake is a known one, see it named?"""
    _, out = adhoc
    row = gradebook_rows(out)[student]
    for it in course.notebook(D10).auto_items:
        assert (float(row[it.id]) < it.points) == (it.id == item), (student, it.id, row[it.id])
    tests = results_of(out, student)
    prop = [name for name in tests if name.startswith(f"{item}: {cases}")]
    failed = failed_outputs(tests, item, cases)
    assert len(failed) == len(prop), (student, prop)
    assert any("(public" in o for o in failed) and any("(hidden)" in o for o in failed)
    if title:
        assert all(title in o for o in failed_outputs(tests, item)), failed[:1]


def test_earlier_days_cost_points_once(course, adhoc):
    """With the Days 6/8 pieces deleted, or a Day 8 bug pasted in, are the layers, the Transformer and the
    parameter count still graded full marks (the reference attention is injected, declared in `needs`)?"""
    _, out = adhoc
    rows = gradebook_rows(out)
    for student in ("t10_no_earlier_pieces", "t10_buggy_mha"):
        for it in course.notebook(D10).auto_items:
            assert float(rows[student][it.id]) == it.points, (student, it.id)
    attention = {"scaled_dot_product_attention", "split_heads", "merge_heads", "MultiHeadAttention"}
    for item in ("EncoderLayer", "DecoderLayer", "Transformer", "transformer_parameter_count"):
        assert attention | {"PositionwiseFeedForward"} <= set(EXERCISES[item].needs)
    assert {"sinusoidal_positional_encoding", "EncoderLayer", "DecoderLayer"} <= set(EXERCISES["Transformer"].needs)


def test_count_by_building_the_model_passes_in_time(adhoc):
    """Does a parameter count that builds the model (base size included) pass within the item's time limit?"""
    _, out = adhoc
    assert float(gradebook_rows(out)["t10_counts_by_building"]["transformer_parameter_count"]) == 1


def test_quiz_gives_partial_credit_and_ignores_case(adhoc):
    """Is the architecture quiz graded per task (one wrong task of five costs a fifth), with answers compared
    without regard to case and surrounding spaces?"""
    _, out = adhoc
    assert float(gradebook_rows(out)["t10_quiz_one_wrong"]["quiz_architecture_for_task"]) == pytest.approx(0.8)
    tests = results_of(out, "t10_quiz_one_wrong")
    failed = [n for n, t in tests.items() if n.startswith("quiz_architecture_for_task") and t["status"] == "failed"]
    assert failed == ["quiz_architecture_for_task: pos_tagging"]


# --- the property runners, in process ---------------------------------------------------

PROPERTY_FLIPS = [
    # item, case builder, output, value for the reference, mistake that flips it
    ("EncoderLayer", lambda r, dt: ex.layer_inputs(r, 2, 6, 16, 2, 32, dt, lengths=[6, 3], check="padding"),
     "real_positions_unchanged", True, "mask_ignored"),
    ("DecoderLayer", lambda r, dt: ex.decoder_inputs(r, 2, 5, 4, 16, 2, 32, dt, src_lengths=[4, 4], check="causal",
                                                     split=2),
     "earlier_positions_unchanged", True, "self_attention_unmasked"),
    ("DecoderLayer", lambda r, dt: ex.decoder_inputs(r, 2, 4, 6, 16, 2, 32, dt, src_lengths=[6, 2], check="padding"),
     "outputs_unchanged", True, "cross_attention_unmasked"),
    ("Transformer", lambda r, dt: ex.transformer_inputs(r, 2, 5, 6, 16, 2, 1, 32, dt, check="causal", split=3),
     "earlier_logits_unchanged", True, "decoder_unmasked"),
    ("Transformer", lambda r, dt: ex.transformer_inputs(r, 2, 6, 4, 16, 2, 2, 32, dt, check="permutation"),
     "memory_just_permutes", False, "no_positional_encoding"),
    ("Transformer", lambda r, dt: ex.transformer_inputs(r, 2, 6, 4, 16, 2, 1, 32, dt, check="whole_source"),
     "first_position_sees_last_token", True, "causal_mask_in_encoder"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("item,build,output,expected,flipper", PROPERTY_FLIPS)
def test_property_runners_flip_on_the_mistake(reference_ns, item, build, output, expected, flipper, dtype):
    """Does each property hold for the reference in float64 and float32, and fail for the mistake that breaks
    it (causal mask missing, padding mask missing, positional encoding missing, causal encoder)?"""
    inputs = build(np.random.default_rng(7), dtype)
    run = EXERCISES[item].run
    assert run(reference_ns[item], inputs) == {output: expected}
    assert run(mistake(item, flipper), inputs) == {output: not expected}


def test_padding_property_is_blind_to_real_positions(reference_ns):
    """Does the padding case change only padded positions (so that the reference passes), while the same check
    on a real position does see the change?"""
    inputs = ex.layer_inputs(np.random.default_rng(1), 2, 6, 16, 2, 32, "float64", lengths=[6, 3], check="padding")
    real = inputs["src_mask"][:, 0, :]
    assert (inputs["x_changed"][real] == inputs["x"][real]).all() and (inputs["x_changed"][~real] != inputs["x"][~real]).all()
    inputs["x_changed"][0, 0] += 1.0
    assert ex.run_encoder_layer(reference_ns["EncoderLayer"], inputs) == {"real_positions_unchanged": False}


# --- the other runners ---------------------------------------------------------------------

def test_property_runners_refuse_nan(reference_ns):
    """Can an output full of NaN not pass a property case by accident (NaN makes "did it change?" come out
    either way), and does its author learn why?"""
    class NaNMemory(reference_ns["Transformer"]):
        def encode(self, src, src_mask):
            return super().encode(src, src_mask) * float("nan")

    for check in ("permutation", "whole_source"):
        inputs = ex.transformer_inputs(np.random.default_rng(2), 1, 5, 3, 16, 2, 1, 32, "float64", check=check)
        with pytest.raises(StudentError, match="NaN"):
            ex.run_transformer(NaNMemory, inputs)


def test_pe_runner_wants_a_value_error_for_odd_widths(reference_ns):
    """For an odd d_model, is a ValueError right, a silent result wrong (False), and any other exception turned
    into a message that asks for a ValueError?"""
    case = {"max_len": 4, "d_model": 5, "expect_error": True}
    assert ex.run_pe(reference_ns["sinusoidal_positional_encoding"], case) == {"raises_value_error": True}
    assert ex.run_pe(mistake("sinusoidal_positional_encoding", "odd_width_truncated"), case) == {
        "raises_value_error": False}
    with pytest.raises(StudentError, match="raise a ValueError"):
        ex.run_pe(mistake("sinusoidal_positional_encoding", "no_value_error"), case)


def test_module_runner_explains_structure_problems(reference_ns):
    """Does a Transformer with a persistent positional encoding, or a layer that returns a tuple, get a message
    saying what to change (instead of a bare load_state_dict or comparison error)?"""
    Transformer = reference_ns["Transformer"]

    class Persistent(Transformer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("positional_encoding", self.positional_encoding.clone(), persistent=True)

    inputs = ex.transformer_inputs(np.random.default_rng(0), 1, 4, 3, 16, 2, 1, 32, "float64")
    with pytest.raises(StudentError, match="persistent=False"):
        ex.run_transformer(Persistent, inputs)

    class Pair(reference_ns["EncoderLayer"]):
        def forward(self, x, src_mask=None):
            return super().forward(x, src_mask), None

    with pytest.raises(StudentError, match="one tensor"):
        ex.run_encoder_layer(Pair, ex.layer_inputs(np.random.default_rng(0), 1, 3, 16, 2, 32, "float64"))


def test_float32_implementations_pass_every_case(keys, reference_ns):
    """Are the tolerances loose enough for correct implementations written differently in float32 (the usual
    exp/log positional encoding, layer norm with torch.var(unbiased=False) and rsqrt), on every case?"""
    import math

    def pe_float32(max_len, d_model):
        if d_model % 2:
            raise ValueError("odd")
        position = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        return pe

    def ln_rsqrt(x, gamma, beta, eps=1e-5):
        mean = x.mean(-1, keepdim=True)
        return (x - mean) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * gamma + beta

    for item, fn in (("sinusoidal_positional_encoding", pe_float32), ("layer_norm", ln_rsqrt)):
        ik = keys[D10][item]
        raw = {c["name"]: {"outputs": {n: wire.to_plain(v) for n, v in EXERCISES[item].run(fn, c["inputs"]).items()},
                           "error": "", "error_type": ""} for c in ik["cases"]}
        results = compare.judge_item(item, ik, raw, 1.0)
        assert all(r.passed for r in results), [r.text() for r in results if not r.passed][:2]


def test_cases_are_small_and_fast(keys, reference_ns):
    """Are the module cases small (d_model 8-32, at most 2 layers), do their weights cover exactly the
    reference module's state_dict, and does the reference run every item's cases well under a second (single
    thread, as in the sandbox)?"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_cases_small_and_fast(keys, reference_ns)
    finally:
        torch.set_num_threads(threads)


def _check_cases_small_and_fast(keys, reference_ns):
    for item in ("PositionwiseFeedForward", "EncoderLayer", "DecoderLayer", "Transformer"):
        init = {"PositionwiseFeedForward": ("d_model", "d_ff", "dropout"),
                "Transformer": ex.TRANSFORMER_INIT}.get(item, ex.LAYER_INIT)
        cases = keys[D10][item]["cases"]
        started = time.perf_counter()
        for c in cases:
            inputs = c["inputs"]
            assert 8 <= inputs["d_model"] <= 32 and inputs.get("num_layers", 1) <= 2, (item, c["name"])
            module = reference_ns[item](**{k: inputs[k] for k in init if inputs.get(k) is not None})
            assert set(module.state_dict()) == {k for k in inputs if "." in k}, (item, c["name"])
            EXERCISES[item].run(reference_ns[item], inputs)
        assert time.perf_counter() - started < 1.0, item


# --- the label-the-diagram item (the architecture from memory) -------------------------------

def _judge_diagram(item_key: dict, answer) -> list[compare.CaseResult]:
    """Each case (one per box) run on `answer` as the sandbox runs it, then judged against `item_key`."""
    raw = {}
    for c in item_key["cases"]:
        try:
            outputs = {k: wire.to_plain(v) for k, v in EXERCISES["diagram_labels"].run(answer, c["inputs"]).items()}
            raw[c["name"]] = {"outputs": outputs, "error": "", "error_type": ""}
        except StudentError as exc:
            raw[c["name"]] = {"outputs": None, "error": f"StudentError: {exc}", "error_type": "StudentError"}
    return compare.judge_item("diagram_labels", item_key, raw, 2.0 / len(item_key["cases"]))


def test_diagram_labels_graded_in_full(course, keys, reference_ns):
    """Is the diagram graded box by box on the full key: the solution 2 of 2; a student who swaps the encoder's
    self-attention and the decoder's cross-attention 1.6, both failing boxes named as that mistake with its
    hint; the released placeholder (no label) 0, told that each box has no answer yet and what it needs? And is every named mistake built on the
    solution's own labels?"""
    item_key = keys[D10]["diagram_labels"]
    solution = reference_ns["diagram_labels"]
    assert solution == hidden.DIAGRAM and course.item("diagram_labels")[1].points == 2
    assert len(item_key["cases"]) == 10 and not any(c["public"] for c in item_key["cases"])
    assert sum(r.score for r in _judge_diagram(item_key, solution)) == pytest.approx(2.0)

    swapped = {**solution, 3: solution[7], 7: solution[3]}  # cross-attention in the encoder, and back
    results = _judge_diagram(item_key, {str(box): label.upper() for box, label in swapped.items()})
    assert sum(r.score for r in results) == pytest.approx(1.6)
    failed = [r for r in results if not r.passed]
    assert [r.case for r in failed] == ["box-3", "box-7"]
    assert all(r.mistake and r.mistake["name"] == "self_and_cross_attention_swapped" for r in failed)
    assert "swapped" in failed[0].text() and "keys and values from the encoder" in failed[0].text()

    release = notebook.read(ROOT / "weeks" / course.notebook(D10).path)
    stub_source = next(c["source"] for c in release.cells if notebook.grade_id(c) == "diagram_labels")
    stub: dict = {}
    exec(stub_source, stub)  # the placeholder runs (Run All goes on) and answers nothing
    results = _judge_diagram(item_key, stub["diagram_labels"])
    assert sum(r.score for r in results) == 0 and all(not r.passed for r in results)
    assert "no answer yet (still None) for box 1: give one of" in results[0].text() and results[0].mistake is None

    for m in hidden.MISTAKES["diagram_labels"]:
        changed = {box for box in solution if m.impl[box] != solution[box]}
        assert 2 <= len(changed) <= 3 and set(m.impl) == set(solution), m.name
        named = [r.mistake["name"] for r in _judge_diagram(item_key, m.impl) if not r.passed]
        assert named == [m.name] * len(changed), (m.name, named)


def test_diagram_check_records_the_form_only(keys, reference_ns):
    """Does the student's check (public key) record any well-formed answer, right or wrong, without judging it,
    and fail a label that is not one of the listed names, saying which are allowed? Does the public key hold no
    label?"""
    from autograder import reference

    public = reference.public_part(keys[D10])["diagram_labels"]
    assert all(c["expected"] is None and not c["mistakes"] for c in public["cases"])
    mistake = hidden.MISTAKES["diagram_labels"][0].impl
    for answer in (reference_ns["diagram_labels"], mistake):
        assert all(r.recorded and "RECORDED" in r.text() for r in _judge_diagram(public, answer))
    misspelt = {**reference_ns["diagram_labels"], 4: "feedforward"}
    results = _judge_diagram(public, misspelt)
    assert [r.case for r in results if not r.passed] == ["box-4"]
    assert "should be one of" in next(r for r in results if not r.passed).text()
