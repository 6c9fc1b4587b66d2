"""Compare a student's outputs with the answer key, and name the mistake when one fits.

Runs only in the trusted process, on plain data decoded by `wire`. A case
passes when every expected output is there with the right kind (tensor or
array), dtype and shape, the same NaN positions, and values within the
tolerance of its dtype, and the student's code left its inputs as they were.
A known mistake is named (with its hint) only when it explains every failing
case of the item: on each, the student raised what it raises, or returned what
it returns (same dtypes and shapes, values within tolerance). A public quiz
case is never judged, only its form: its answer is recorded, graded later.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .exercise import DEFAULT_TOLERANCE, MUTATED, UNANSWERED
from .wire import Tensor, describe

IN_PLACE_HINT = ("an in-place operation (x /= ..., x += ..., x[...] = ..., x.unsqueeze_(...), x.masked_fill_(...)) "
                 "changed a tensor autograd needs, often one of the inputs: compute a new tensor instead "
                 "(query = query / math.sqrt(d_k); a new mask from mask.unsqueeze(1))")
MUTATION_HINT = ("your code changed its inputs in place; the caller's tensors and arrays must stay as they were "
                 "(use query = query / math.sqrt(d_k), x = x - x.max(...), a new mask from mask.unsqueeze(1); not "
                 "mask.unsqueeze_(1), query /= ..., x -= ...)")


@dataclass
class CaseResult:
    """The verdict on one case of one item."""

    item: str
    case: str
    public: bool
    note: str
    passed: bool
    score: float
    max_score: float
    problems: list[str] = field(default_factory=list)
    mistake: dict | None = None
    samples: dict = field(default_factory=dict)
    """For a failing public case: small slices of the student's and the expected outputs
    ({name: {"got": nested list, "expected": nested list}}), for pictures in the feedback.
    Never filled for hidden cases: their inputs and outputs are not shown."""
    recorded: bool = False
    """A public quiz case: the answer has the right form and is recorded; whether it is right is
    graded later (the public key has no answers). Such a case counts as passed, never shown as PASS."""

    def text(self) -> str:
        """The feedback for this case, as the student reads it."""
        visibility = "public" if self.public else "hidden"
        head = f"{self.item}: case {self.case} ({visibility}{', ' + self.note if self.note else ''})"
        if self.recorded:
            return f"RECORDED {head}: answer recorded (graded later)"
        if self.passed:
            return f"PASS {head}"
        lines = [f"FAIL {head}"] + [f"    {p}" for p in self.problems]
        if self.mistake:
            lines.append(f"    Likely mistake: {self.mistake['title']}.")
            lines.append(f"    Hint: {self.mistake['hint']}.")
        return "\n".join(lines)


def _array(value):
    if isinstance(value, Tensor):
        return value.array, True
    if isinstance(value, np.ndarray):
        return value, False
    return None, False


def compare_value(name: str, expected, got, tolerance=None) -> list[str]:
    """Problems with one output (empty when it matches)."""
    exp_arr, exp_tensor = _array(expected)
    if exp_arr is not None:
        got_arr, got_tensor = _array(got)
        if got_arr is None:
            return [f"{name}: got {describe(got)}, expected {describe(expected)}"]
        if exp_tensor and not got_tensor:
            return [f"{name}: got a numpy array, expected a torch tensor (use torch operations throughout)"]
        problems = []
        if got_arr.dtype != exp_arr.dtype:
            hint = ("keep the input dtype: avoid torch.tensor(...)/float literals that create float32, "
                    "or convert with .to(x.dtype)") if exp_arr.dtype.kind == "f" else ""
            if exp_arr.dtype == bool:
                hint = "return a boolean tensor (dtype=torch.bool)"
            problems.append(f"{name}: dtype {got_arr.dtype}, expected {exp_arr.dtype}" + (f" ({hint})" if hint else ""))
        if got_arr.shape != exp_arr.shape:
            problems.append(f"{name}: shape {list(got_arr.shape)}, expected {list(exp_arr.shape)}")
            return problems
        if exp_arr.dtype == bool or got_arr.dtype == bool or exp_arr.dtype.kind in "iu":
            wrong = int(np.count_nonzero(got_arr.astype(exp_arr.dtype) != exp_arr)) if not problems else 0
            if wrong:
                problems.append(f"{name}: {wrong} of {exp_arr.size} entries differ")
            return problems
        g = got_arr.astype(np.float64) if got_arr.dtype.kind in "fiub" else got_arr
        e = exp_arr.astype(np.float64)
        rtol, atol = tolerance or DEFAULT_TOLERANCE.get(str(exp_arr.dtype), DEFAULT_TOLERANCE["float32"])
        if got_arr.dtype != exp_arr.dtype:
            rtol, atol = max(rtol, 1e-4), max(atol, 1e-5)
        g_nan, e_nan = np.isnan(g), np.isnan(e)
        if g_nan.sum() != e_nan.sum() or (g_nan != e_nan).any():
            problems.append(f"{name}: {int(g_nan.sum())} NaN values, expected {int(e_nan.sum())}")
        both = ~(g_nan | e_nan)
        if both.any():
            g_inf, e_inf = np.isinf(g) & both, np.isinf(e) & both
            if (g_inf != e_inf).any() or (g[g_inf] != e[g_inf]).any():
                problems.append(f"{name}: {int(g_inf.sum())} infinite values, expected {int(e_inf.sum())}")
            finite = both & ~g_inf & ~e_inf
            diff = np.abs(g - e)
            bad = finite & (diff > atol + rtol * np.abs(e))
            if bad.any():
                worst = np.unravel_index(np.argmax(np.where(finite, diff, -1)), diff.shape)
                problems.append(
                    f"{name}: {int(bad.sum())} of {e.size} values differ; largest difference "
                    f"{diff[worst]:.3g} (got {g[worst]:.6g}, expected {e[worst]:.6g}; tolerance {atol:g} + {rtol:g}*|expected|)"
                )
        return problems
    if isinstance(expected, bool) or isinstance(got, bool):
        return [] if got is expected else [f"{name}: got {describe(got)}, expected {describe(expected)}"]
    if isinstance(expected, int):
        if type(got) is not int:
            return [f"{name}: got {describe(got)}, expected an int"]
        return [] if got == expected else [f"{name}: got {got}, expected a different number"]
    if isinstance(expected, float):
        if type(got) not in (int, float):
            return [f"{name}: got {describe(got)}, expected a float"]
        rtol, atol = tolerance or DEFAULT_TOLERANCE["float64"]
        if np.isnan(expected) and np.isnan(got):
            return []
        if not abs(got - expected) <= atol + rtol * abs(expected):
            return [f"{name}: got {got:.6g}; off by {abs(got - expected):.3g}"]
        return []
    if isinstance(expected, str):
        if type(got) is not str:
            return [f"{name}: got {describe(got)}, expected a string"]
        if name == "answer":  # a quiz: never print the right answer
            return [] if got.strip().upper() == expected.strip().upper() else [f"{name}: not the expected answer"]
        return [] if got == expected else [f"{name}: got {got[:60]!r}, expected {expected[:60]!r}"]
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{name}: got {describe(got)}, expected a list of {len(expected)}"]
        return [p for i, (e, g) in enumerate(zip(expected, got)) for p in compare_value(f"{name}[{i}]", e, g, tolerance)]
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{name}: got {describe(got)}, expected a dict"]
        return [p for k in expected for p in compare_value(f"{name}[{k!r}]", expected[k], got.get(k), tolerance)]
    return [] if got == expected else [f"{name}: got {describe(got)}"]


def compare_outputs(expected: dict, got: dict, tolerance=None) -> list[str]:
    problems = []
    for name, value in expected.items():
        if name not in got:
            problems.append(f"{name}: missing")
            continue
        problems += compare_value(name, value, got[name], tolerance)
    return problems


NAN_MODES = ("strict", "mistake_nan", "any_nan")
"""How NaN positions count when matching a mistake, tried in this order: they must agree;
the mistake's NaN matches anything; any NaN matches anything. A mistake shows up the same
whether a student then zeroes, keeps or never produces the NaN rows it causes, but an
exact match always wins."""


def _matches(mistake_out: dict, got: dict, tolerance=None, mode: str = "strict") -> bool:
    """Whether the student's outputs equal a mistake's, NaN positions counting as `mode` says.

    Arrays must agree in kind (tensor or array), dtype and shape first: a mistake's values
    say nothing about an output whose dtype or shape is already wrong in another way. Outside
    "strict", an output that is NaN everywhere in the mistake is no evidence either way; at
    least one value compared must agree.
    """
    evidence = mode == "strict"
    for name, value in mistake_out.items():
        if name not in got:
            return False
        m_arr, m_tensor = _array(value)
        g_arr, g_tensor = _array(got[name])
        if m_arr is None or g_arr is None:
            if compare_value(name, value, got[name], tolerance):
                return False
            evidence = True
            continue
        if m_arr.shape != g_arr.shape or m_arr.dtype != g_arr.dtype or m_tensor != g_tensor:
            return False
        if m_arr.dtype.kind not in "fc" or g_arr.dtype.kind not in "fc":
            if m_arr.dtype != g_arr.dtype or (m_arr != g_arr).any():
                return False
            evidence = True
            continue
        m, g = m_arr.astype(np.float64), g_arr.astype(np.float64)
        if mode == "strict":
            if (np.isnan(m) != np.isnan(g)).any():
                return False
            known = ~np.isnan(m)
        elif mode == "mistake_nan":
            known = ~np.isnan(m)
        else:
            known = ~(np.isnan(m) | np.isnan(g))
        if mode != "strict" and m.size and not known.any():
            continue  # nothing left to compare in this output
        evidence = True
        rtol, atol = tolerance or DEFAULT_TOLERANCE["float32"]
        with np.errstate(invalid="ignore"):
            close = np.isclose(g[known], m[known], rtol=rtol, atol=atol)
        if not close.all():
            return False
    return evidence


def explains(case_key: dict, got: dict, mistake: dict) -> bool | None:
    """Does `mistake` explain the student's failure on this case? None when the key has no output of it here.

    It does when the student raised the error type it raises, or returned what it returns
    (in some NaN mode) where that differs from the expected outputs.
    """
    out = case_key.get("mistakes", {}).get(mistake["name"])
    if out is None:
        return None
    if got.get("error"):
        return "$error" in out and out["$error"] == got.get("error_type", "")
    if "$error" in out:
        return False
    if not mistake_fails(case_key, mistake["name"]):
        return False  # the mistake passes this case; the student does not
    outputs = got.get("outputs") or {}
    return any(_matches(out, outputs, case_key.get("tolerance"), mode) for mode in NAN_MODES)


def mistake_fails(case_key: dict, name: str) -> bool:
    """Does the mistake `name` fail this case: raise, or give outputs the case does not accept?

    Only a mistake that fails a case can be named there (`explains`, `diagnose`); one that fails no case
    of its item gives the reference's outputs, and `build` refuses it. False when the key has no output
    of the mistake on this case.
    """
    out = case_key.get("mistakes", {}).get(name)
    if out is None:
        return False
    return "$error" in out or bool(compare_outputs(case_key["expected"], out, case_key.get("tolerance")))


def diagnose(case_key: dict, got: dict | None, error_type: str, mistakes: list[dict]) -> dict | None:
    """The first known mistake whose output on this case equals the student's."""
    tolerance = case_key.get("tolerance")
    for mode in NAN_MODES:
        for m in mistakes:
            out = case_key.get("mistakes", {}).get(m["name"])
            if out is None:
                continue
            if "$error" in out:
                if got is None and error_type == out["$error"]:
                    return m
                continue
            if got is not None and mistake_fails(case_key, m["name"]) and _matches(out, got, tolerance, mode):
                return m
    return None


SAMPLE_LIMIT = 4096


def _samples(expected: dict, got: dict) -> dict:
    """The first 1-D or 2-D slice of each array output, student's and expected, when small enough."""
    out = {}
    for name, value in expected.items():
        e, _ = _array(value)
        g, _ = _array(got.get(name))
        if e is None or g is None or e.shape != g.shape or e.ndim == 0:
            continue
        while e.ndim > 2:
            e, g = e[0], g[0]
        if e.size <= SAMPLE_LIMIT and e.dtype.kind in "fbiu" and g.dtype.kind in "fbiu":
            out[name] = {"got": np.where(np.isfinite(g.astype(float)), g.astype(float), np.nan).tolist(),
                         "expected": e.astype(float).tolist()}
    return out


def judge_item(item_id: str, item_key: dict, raw_cases: dict, share: float) -> list[CaseResult]:
    """Judge every case of an item, naming only a mistake that explains every failing case.

    A mistake is not considered when, on some case, the student raised where the
    mistake returns, or returned where the mistake raises; nor when, on some case the
    student fails (wrong outputs, or an error), the mistake does not explain the failure
    (`explains`). A mistake that explains only some failing cases points the wrong way
    on the others: then none is named.
    """
    def consistent(m: dict) -> bool:
        for ck in item_key["cases"]:
            out = ck.get("mistakes", {}).get(m["name"])
            got = raw_cases.get(ck["name"]) or {}
            if out is not None and ("$error" in out) != bool(got.get("error")):
                return False
        return True

    choices = item_key["choices"] if item_key["kind"] == "quiz" else None
    undiagnosed = [judge_case(item_id, ck, raw_cases.get(ck["name"]), [], share, choices) for ck in item_key["cases"]]
    failing = [(ck, raw_cases[ck["name"]]) for ck, r in zip(item_key["cases"], undiagnosed)
               if not r.passed and raw_cases.get(ck["name"]) is not None and _value_failure(ck, raw_cases[ck["name"]])]

    def explains_all(m: dict) -> bool:
        verdicts = [explains(ck, got, m) for ck, got in failing]
        return all(v is not False for v in verdicts) and any(verdicts)

    mistakes = [m for m in item_key["mistakes"] if consistent(m) and explains_all(m)]
    if not mistakes:
        return undiagnosed
    return [judge_case(item_id, ck, raw_cases.get(ck["name"]), mistakes, share, choices) for ck in item_key["cases"]]


def _value_failure(case_key: dict, got: dict) -> bool:
    """Did the student fail this case by an error or by wrong outputs (what a mistake could explain)?

    Not by the form of a quiz answer, nor only by changing the inputs in place.
    """
    if got.get("error"):
        return True
    if case_key.get("expected") is None:
        return False
    return bool(compare_outputs(case_key["expected"], got.get("outputs") or {}, case_key.get("tolerance")))


def still_stub(failures: list[dict]) -> bool:
    """Did every failing case (the stored form: {"problems": [...]}) raise NotImplementedError, as the released
    stub does?"""
    return bool(failures) and all(c["problems"] and c["problems"][0].startswith("raised ")
                                  and "NotImplementedError" in c["problems"][0] for c in failures)


def unanswered(failures: list[dict]) -> bool:
    """Did every failing case (the stored form: {"problems": [...]}) fail because the answer is still the released
    placeholder (None)?"""
    return bool(failures) and all(c["problems"] and UNANSWERED in c["problems"][0] for c in failures)


def judge_case(item_id: str, case_key: dict, got: dict, mistakes: list[dict], share: float,
               quiz_choices: list[str] | None = None) -> CaseResult:
    """Judge one case from the sandbox's answer `got` ({"outputs", "error", "error_type"})."""
    result = CaseResult(item_id, case_key["name"], case_key["public"], case_key.get("note", ""), False, 0.0, share)
    if got is None:
        result.problems.append("no result (the item stopped before this case)")
        return result
    if got.get("error"):
        result.problems.append(f"raised {got['error']}")
        error = got["error"]
        if "in-place operation" in error or "inplace operation" in error:
            result.problems.append(IN_PLACE_HINT)
        result.mistake = diagnose(case_key, None, got.get("error_type", ""), mistakes)
        return result
    outputs = got.get("outputs") or {}
    if quiz_choices is not None:
        answer = outputs.get("answer")
        allowed = [str(c).strip().upper() for c in quiz_choices]
        if "answer" in outputs and answer is None:  # the released cell's placeholder, left as it is
            result.problems.append(f"{UNANSWERED}: give one of {', '.join(quiz_choices)}")
            return result
        if allowed and (type(answer) is not str or answer.strip().upper() not in allowed):
            result.problems.append(f"answer {describe(answer)} is not one of {', '.join(quiz_choices)}")
            return result
        if case_key["expected"] is None:  # a public quiz check: the form is right, the answer is graded later
            result.passed, result.score, result.recorded = True, share, True
            return result
    mutated = outputs.get(MUTATED) if MUTATED not in (case_key["expected"] or {}) else None
    result.problems = compare_outputs(case_key["expected"], outputs, case_key.get("tolerance"))
    if mutated:
        changes = [str(c) for c in mutated] if type(mutated) is list else [str(mutated)]
        if not case_key["public"]:  # what changed would tell the hidden inputs' shapes: only which input
            changes = [f"{c.split(': ')[0]}: changed in place" for c in changes]
        result.problems[:0] = [f"input {c}" for c in changes[:6]] + [MUTATION_HINT]
    if result.problems:
        result.mistake = diagnose(case_key, outputs, "", mistakes)
        if case_key["public"]:
            result.samples = _samples(case_key["expected"], outputs)
    else:
        result.passed, result.score = True, share
    return result
