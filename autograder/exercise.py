"""What an exercise is: its cases, how to run them, and the mistakes it knows.

An `Exercise` is public: it ships with the student release and runs inside the
sandbox. Hidden cases and `Mistake` implementations live in
`autograder/hidden/<notebook>.py` and never leave the instructor's machine; the
release carries only their outputs on public cases, as data.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Inputs = dict[str, Any]
Outputs = dict[str, Any]


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

def as_tensor(array, requires_grad: bool = False):
    """A fresh torch tensor holding a case input, in the input's dtype."""
    import torch

    t = torch.from_numpy(np.array(array, copy=True))
    return t.requires_grad_(True) if requires_grad else t


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
