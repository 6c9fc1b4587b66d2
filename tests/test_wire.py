"""The trust boundary's data format: exact plain types in, checked bytes out."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autograder import wire


def test_round_trip_keeps_values_dtypes_and_tensorness():
    """Do arrays, tensors, numbers, strings and NaN survive encode/decode exactly?"""
    value = {"t": wire.to_plain(torch.arange(6, dtype=torch.float32).reshape(2, 3)),
             "a": wire.to_plain(np.array([[True, False]])), "n": 3, "f": float("nan"), "s": "B",
             "l": [1, 2.5, None], "$odd": 1}
    back = wire.decode(wire.encode(value))
    assert isinstance(back["t"], wire.Tensor) and back["t"].dtype == "float32"
    np.testing.assert_array_equal(back["t"].array, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert back["a"].dtype == bool and back["n"] == 3 and np.isnan(back["f"])
    assert back["s"] == "B" and back["l"] == [1, 2.5, None] and back["$odd"] == 1


def test_tensor_subclass_is_refused():
    """Can a Tensor subclass (which may lie about equality) cross the boundary?"""
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    with pytest.raises(wire.NotPlain, match="subclass of torch.Tensor"):
        wire.to_plain(torch.zeros(2).as_subclass(Liar))


def test_arbitrary_objects_are_refused():
    """Is an object whose __eq__ always says yes refused, whatever it claims?"""
    class Yes:
        def __eq__(self, other):
            return True

    with pytest.raises(wire.NotPlain):
        wire.to_plain(Yes())
    with pytest.raises(wire.NotPlain):
        wire.to_plain([1, Yes()])


def test_requires_grad_tensor_is_copied_detached():
    """Is a tensor that needs grad copied as values (no graph, no shared memory)?"""
    t = torch.ones(3, requires_grad=True)
    plain = wire.to_plain(t * 2)
    assert plain.requires_grad and plain.array.flags.writeable
    plain.array[0] = 7
    assert t[0].item() == 1


@pytest.mark.parametrize("corrupt", [
    lambda b: b[:-1],                         # truncated buffer
    lambda b: b"XXXX" + b[4:],                # wrong magic
    lambda b: b.replace(b'"float64"', b'"object"'),  # dtype not allowed
    lambda b: b.replace(b"[2, 3]", b"[3, 3]"),      # shape disagrees with buffer
])
def test_malformed_messages_are_rejected(corrupt):
    """Does the trusted side refuse a message whose header and buffers disagree?"""
    data = wire.encode({"x": np.zeros((2, 3))})
    with pytest.raises(wire.WireError):
        wire.decode(corrupt(data))
