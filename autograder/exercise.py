"""What an exercise is: its cases, how to run them, and the mistakes it knows.

An `Exercise` is public: it ships with the student release and runs inside the
sandbox. Hidden cases and `Mistake` implementations live in
`autograder/hidden/<notebook>.py` and never leave the instructor's machine; the
release carries only their outputs on public cases, as data.
"""
from __future__ import annotations

import importlib
import linecache
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

Inputs = dict[str, Any]
Outputs = dict[str, Any]


UNANSWERED = "no answer yet (still None)"
"""How a message about an answer left as the released placeholder (None) starts; the class report counts it
as not attempted."""


class StudentError(Exception):
    """The student's object was called but answered in the wrong form.

    Raised by `Exercise.run`; the message is shown to the student as is.
    """


@dataclass(frozen=True)
class Case:
    """One set of inputs for one item. Inputs are plain data (arrays, numbers, strings, None)."""

    name: str
    inputs: Inputs
    note: str = ""
    """What the case exercises, shown to the student (never the inputs themselves)."""
    tolerance: tuple[float, float] | None = None
    """(rtol, atol) for this case, when the dtype's default is too tight (e.g. huge scores in float32)."""


@dataclass(frozen=True)
class Exercise:
    """A graded item, as the grader sees it.

    `run(obj, inputs)` calls the student's object (function, class or quiz
    answer) on one case and returns its outputs as a flat dict of tensors,
    arrays, numbers or strings. It runs in the sandbox for students, and in a
    trusted process for the reference solution and the known mistakes.
    """

    id: str
    run: Callable[[Any, Inputs], Outputs]
    public_cases: Callable[[np.random.Generator], list[Case]]
    kind: str = "function"
    """function, class or quiz."""
    choices: tuple[str, ...] = ()
    """For quizzes: the allowed answers."""
    needs: tuple[str, ...] = ()
    """Earlier items this one uses; the grader substitutes their reference versions."""
    tolerance: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per-dtype (rtol, atol) overriding DEFAULT_TOLERANCE."""

    def __post_init__(self):
        # Every caller of `run` (the sandbox, the notebook's check, check_all) gets the input check.
        if not getattr(self.run, "_checks_inputs", False):
            object.__setattr__(self, "run", checking_inputs(self.run))


@dataclass(frozen=True)
class Mistake:
    """A mistake students really make, as a working implementation of it.

    When a student's output fails a case and equals this implementation's
    output on the same case, the feedback names `title` and gives `hint`.
    """

    name: str
    title: str
    hint: str
    impl: Any
    """A drop-in replacement for the student's object that makes this mistake."""


DEFAULT_TOLERANCE = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
}


def exercise_module(notebook_id: str):
    """The public exercise module of a notebook."""
    return importlib.import_module(f"autograder.exercises.{notebook_id}")


def hidden_module(notebook_id: str):
    """The instructor-only module of a notebook: hidden cases and mistakes."""
    return importlib.import_module(f"autograder.hidden.{notebook_id}")


def exercises(notebook_id: str) -> dict[str, Exercise]:
    return {ex.id: ex for ex in exercise_module(notebook_id).EXERCISES}


# Helpers for `Exercise.run` functions: they run in the sandbox, on case inputs.

_made: list | None = None
"""While a case runs: (case input given to as_tensor, a pristine copy of it, the tensor made from it)."""


def as_tensor(array, requires_grad: bool = False):
    """A fresh torch tensor holding a case input, in the input's dtype.

    While a case runs (`checking_inputs`), the tensor is remembered with a pristine
    copy, so that a student's in-place change of it (`mask.unsqueeze_(1)`,
    `query /= ...`) is found after the call.
    """
    import torch

    t = torch.from_numpy(np.array(array, copy=True))
    if _made is not None:
        _made.append((array, np.array(array, copy=True), t))
    return t.requires_grad_(True) if requires_grad else t


MUTATED = "inputs changed in place"
"""The output a case gets when the student's code changed its inputs: a list of what changed.

Only ever present when something changed; `compare.judge_case` fails the case and says what."""


def checking_inputs(run: Callable[[Any, Inputs], Outputs]) -> Callable[[Any, Inputs], Outputs]:
    """`run`, also checking that the case's inputs (arrays, and the tensors made by `as_tensor`) are unchanged.

    The inputs it is given are already a private copy (sandbox `_fresh`); this
    compares them, after the call, with copies taken before it. When something
    changed, the outputs get a `MUTATED` entry ("name: what changed"); when the
    call raised after changing an input, it raises a StudentError saying both (the
    change is the likelier cause of an error such as a shape mismatch in a later
    layer). That message names the inputs and what kind of change, and the
    student's line, but quotes no input's shape or values, nor the error's own
    message: it is shown on hidden cases too.
    """
    def run_case(obj, inputs):
        global _made
        before = {k: np.array(v, copy=True) for k, v in inputs.items() if type(v) is np.ndarray}
        outer, _made = _made, []
        try:
            try:
                outputs = run(obj, inputs)
            except Exception as exc:
                changes = _changes(inputs, before, _made)
                if changes and not isinstance(exc, StudentError):
                    what = ", ".join(f"{c.split(': ')[0]} ({_kind(c)})" for c in changes)
                    raise StudentError(f"changed its inputs in place ({what}), then raised "
                                       f"{describe_error(exc, with_message=False)}") from exc
                raise
            changes = _changes(inputs, before, _made)
        finally:
            _made = outer
        if changes and type(outputs) is dict:
            outputs = dict(outputs, **{MUTATED: changes})
        return outputs

    run_case._checks_inputs = True
    run_case.__name__ = getattr(run, "__name__", "run_case")
    run_case.__doc__ = getattr(run, "__doc__", None)
    return run_case


def _changes(inputs: Inputs, before: dict, made: list) -> list[str]:
    """What the call changed in the case's inputs, one line per input (empty when nothing)."""
    out = []
    for name, old in before.items():
        what = _difference(old, inputs.get(name))
        if what:
            out.append(f"{name}: {what}")
    seen = set()
    for source, old, tensor in made:
        name = _input_name(inputs, source)
        what = _difference(old, tensor)
        if what and name not in seen:
            seen.add(name)
            out.append(f"{name}: {what}")
    return out


def _kind(change: str) -> str:
    """What kind of change a `_changes` line describes: its shape, dtype or values."""
    for kind in ("shape", "dtype", "values"):
        if kind in change.split(": ", 1)[-1]:
            return kind
    return "replaced"


def _input_name(inputs: Inputs, source) -> str:
    for name, value in inputs.items():
        if value is source:
            return name
    for name, value in inputs.items():
        if type(value) is np.ndarray and type(source) is np.ndarray and np.may_share_memory(value, source):
            return f"part of {name}"
    return "an input"


def _difference(old: np.ndarray, new) -> str:
    """How `new` (an array or a tensor) differs from the pristine `old`; "" when it does not."""
    try:
        if type(new) is not np.ndarray:
            import torch

            if not isinstance(new, torch.Tensor):
                return "replaced"
            shape, dtype = tuple(new.shape), str(new.dtype).removeprefix("torch.")
            if shape == old.shape and dtype == str(old.dtype):
                new = torch.Tensor.numpy(torch.Tensor.detach(new))
        else:
            shape, dtype = new.shape, str(new.dtype)
        if shape != old.shape:
            return f"its shape changed from {list(old.shape)} to {list(shape)}"
        if dtype != str(old.dtype):
            return f"its dtype changed from {old.dtype} to {dtype}"
        if not np.array_equal(new, old, equal_nan=old.dtype.kind in "fc"):
            return f"{int(np.count_nonzero(~_same(new, old)))} of {old.size} values changed"
    except Exception:  # noqa: BLE001 - a tensor mangled beyond reading has changed too
        return "it was changed"
    return ""


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    same = a == b
    if a.dtype.kind in "fc":
        same |= np.isnan(a) & np.isnan(b)
    return same


_PACKAGE = str(Path(__file__).resolve().parent)
_STDLIB = sysconfig.get_paths().get("stdlib", "/lib/python3")


def _graders_frame(filename: str) -> bool:
    return (filename.startswith(_PACKAGE) or filename.startswith(_STDLIB) or "site-packages" in filename
            or filename.startswith(("<frozen", "<reference")))


def describe_error(exc: BaseException, cell_label: Callable[[str], str | None] | None = None,
                   with_message: bool = True) -> str:
    """`Type: message (in function, cell, line N: code)`: the error and the student's code that raised it.

    The place is the innermost frame of the student's own code (not the
    grader's, not a library's): the function it is in, and where that function
    was written: `cell_label(filename)` (e.g. "cell In [7]" in Jupyter) or, for
    a file, its name.
    """
    try:
        name = type(exc).__name__[:80]
    except Exception:  # noqa: BLE001
        name = "Exception"
    try:
        message = str(exc)[:300] if with_message else ""
    except Exception:  # noqa: BLE001
        message = "(the exception's message could not be shown)"
    where = ""
    try:
        frames, tb = [], exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if not _graders_frame(code.co_filename):
                frames.append((code.co_filename, getattr(code, "co_qualname", code.co_name), tb.tb_lineno))
            tb = tb.tb_next
        def at(frame, with_code: bool) -> str:
            filename, function, lineno = frame
            parts = []
            if function and function != "<module>":
                parts.append(f"in {function.replace('.<locals>', '')}")
            place = cell_label(filename) if cell_label is not None else None
            if place is None and not filename.startswith("<"):
                place = f"file {Path(filename).name}"
            if place:
                parts.append(place)
            text = linecache.getline(filename, lineno).strip()[:100] if with_code else ""
            parts.append(f"line {lineno}" + (f": {text}" if text else ""))
            return ", ".join(parts)

        if frames:
            where = at(frames[-1], True)
            if frames[0][1] != frames[-1][1] and frames[0][1] not in (None, "<module>"):
                where += f"; called from {at(frames[0], False).removeprefix('in ')}"
            where = f" ({where})"
    except Exception:  # noqa: BLE001
        pass
    return f"{name}: {message}{where}" if message else f"{name}{where}"


def jupyter_cell_label() -> Callable[[str], str | None] | None:
    """In a running IPython: the label Jupyter shows for the cell a filename belongs to ("cell In [7]")."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    numbers = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if not isinstance(numbers, dict):
        return None

    def label(filename: str) -> str | None:
        number = numbers.get(filename)
        return f"cell In [{number}]" if isinstance(number, int) else None

    return label


def expect_tuple(result, names: tuple[str, ...]):
    """Unpack a student's returned tuple, or explain what came back instead."""
    if type(result) not in (tuple, list) or len(result) != len(names):
        what = type(result).__name__ if type(result) not in (tuple, list) else f"a {type(result).__name__} of {len(result)}"
        raise StudentError(f"should return a tuple ({', '.join(names)}), got {what}")
    return result


def load_weights(module, weights: dict, structure: str):
    """Load the case's weights into a student's module (strict), or say which entries do not fit.

    `structure` names the parameters the given __init__ makes, for the message.
    """
    have = set(module.state_dict())
    missing, unexpected = sorted(set(weights) - have), sorted(have - set(weights))
    if missing or unexpected:
        parts = []
        if unexpected:
            parts.append(f"has unexpected entries {', '.join(unexpected[:6])}")
        if missing:
            parts.append(f"lacks {', '.join(missing[:6])}")
        hint = " (register the positional encoding with persistent=False)" if "positional_encoding" in unexpected else ""
        raise StudentError(f"the module's state_dict {'; '.join(parts)}{hint}; keep the given __init__ ({structure})")
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise StudentError(f"the course's weights do not fit this module: {str(exc)[:300]}") from None
    return module
