"""The trust boundary's data format: exact plain types in, checked bytes out."""
from __future__ import annotations

import random
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch

from autograder import wire
from autograder.config import ROOT


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


def frame(header: bytes, sizes: bytes = b"[]", buffers: bytes = b"") -> bytes:
    """A message with the given raw header, buffer sizes and buffers (encode would refuse most of these)."""
    return wire.MAGIC + struct.pack("<QQ", len(header), len(sizes)) + header + sizes + buffers


def test_answer_keys_decode_within_the_default_limits():
    """Do the shipped public keys, and any cached full key, decode (exactly) within the default limits?"""
    paths = sorted((ROOT / "autograder" / "public").glob("*.agw")) + sorted((ROOT / ".cache" / "keys").glob("*.agw"))
    assert paths
    for path in paths:
        data = path.read_bytes()
        assert wire.encode(wire.decode(data)) == data, path


def test_many_small_containers_are_refused_quickly_in_little_memory():
    """Is a 7.7 MiB header of 2.7 million empty dicts (GBs once parsed) refused before parsing, fast and small?"""
    data = frame(b"[" + b"{}," * 2_700_000 + b"{}]")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(wire.WireError, match="more than 250000 elements"):
            wire.decode(data)
        seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1 and peak < 2 * len(data), (seconds, peak)


@pytest.mark.parametrize("header", [b"[" * 1_000_000 + b"]" * 1_000_000, b'{"a":' * 33 + b"1" + b"}" * 33])
def test_deep_nesting_is_refused(header):
    """Is a header nested deeper than the limit refused with WireError (never RecursionError), before parsing?"""
    with pytest.raises(wire.WireError, match="nests deeper than 32"):
        wire.decode(frame(header))
    assert wire.decode(frame(b'{"a":' * 32 + b"1" + b"}" * 32))  # 32 levels: within the limit


@pytest.mark.parametrize("limits,phrase", [
    (wire.Limits(message_bytes=200), "message too large"),
    (wire.Limits(header_bytes=50), "header too large"),
    (wire.Limits(depth=2), "nests deeper than 2"),
    (wire.Limits(elements=10), "more than 10 elements"),
    (wire.Limits(buffers=1), "too many buffers"),
    (wire.Limits(array_bytes=100), "larger than 100 bytes"),
])
def test_callers_can_set_tighter_limits(limits, phrase):
    """Does each limit a caller passes apply, with a message naming it, while the defaults accept the message?"""
    data = wire.encode({"x": np.zeros(20), "y": np.ones(2), "l": [[1, 2], [3, 4]], "s": "a b c d e f g h"})
    assert wire.decode(data)["l"] == [[1, 2], [3, 4]]
    with pytest.raises(wire.WireError, match=phrase):
        wire.decode(data, limits)


def test_brackets_and_commas_inside_strings_are_text():
    """Are brackets, commas, quotes and backslashes inside strings ignored by the depth and element limits?"""
    text = '[{,"\\' * 10_000
    assert wire.decode(wire.encode({"s": text}), wire.Limits(depth=1, elements=3)) == {"s": text}


@pytest.mark.parametrize("header,sizes,buffers", [
    (b'[{"$a": 0, "dtype": "uint8", "shape": [4]}, {"$a": 0, "dtype": "uint8", "shape": [4]}]', b"[4]", b"abcd"),
    (b'{"$a": 0, "dtype": "uint8", "shape": [4]}', b"[4, 4]", b"abcdefgh"),
    (b'{"$a": 0, "dtype": ["uint8"], "shape": [4]}', b"[4]", b"abcd"),
    (b'{"$a": 0, "dtype": "uint8", "shape": [0, 100000000000, 100000000000]}', b"[0]", b""),
    (b'{"$t": {"$a": 0, "dtype": "uint8", "shape": [4]}, "grad": [1]}', b"[4]", b"abcd"),
    (b"[NaN, Infinity]", b"[]", b""),
    (b'{"a": 1}', b'[{"a": 1}]', b""),
    (b'"\xc3\xa9"', b"[]", b""),
])
def test_arrays_and_values_that_break_the_format_are_refused(header, sizes, buffers):
    """Is a buffer used twice or never, a dtype or shape of the wrong type, or a bare NaN refused with WireError?"""
    with pytest.raises(wire.WireError):
        wire.decode(frame(header, sizes, buffers))


def test_bool_arrays_hold_only_true_and_false():
    """Does a bool array whose bytes are not 0 or 1 arrive as plain True/False (so comparisons behave)?"""
    back = wire.decode(frame(b'{"$a": 0, "dtype": "bool", "shape": [3]}', b"[3]", b"\x00\x02\xff"))
    assert back.tobytes() == b"\x00\x01\x01" and back.dtype == bool


def _fuzzed(rng: random.Random, valid: bytes):
    """Random bytes, a truncation, or a valid message with a few bytes changed, inserted or deleted."""
    kind = rng.random()
    if kind < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind < 0.2:
        return valid[:rng.randrange(len(valid))]
    data = bytearray(valid)
    for _ in range(rng.randint(1, 6)):
        i, op = rng.randrange(len(data)), rng.random()
        if op < 0.4:
            data[i] = rng.choice([rng.randrange(256), *b'[]{}",\\:0-e'])
        elif op < 0.8:
            junk = rng.choice([b"[", b"{", b'"', b"\\", b",", b"]", b"}", b"1e999", b"NaN", b'"$a"', b"\xff", b"-1"])
            data[i:i] = junk * rng.randint(1, 40)
        else:
            del data[i:i + rng.randint(1, 20)]
    if kind < 0.6:  # keep the lengths consistent, so that the header itself is what is broken
        n_header = len(data) - len(valid) + struct.unpack("<Q", valid[4:12])[0]
        data[4:12] = struct.pack("<Q", max(0, n_header))
    return bytes(data)


def test_random_and_mutated_messages_raise_only_wire_error():
    """On thousands of random, truncated and mutated messages, is WireError the only exception decode raises?"""
    rng = random.Random(12)
    valid = wire.encode({"ev": "case", "outputs": {
        "out": wire.to_plain(np.arange(6.0).reshape(2, 3)), "t": wire.Tensor(np.ones((2, 2), np.float32), True),
        "b": np.array([True, False]), "s": 'a"b\\c[{,', "n": [1, -2.5, None, float("nan")], "$x": {"y": [[], {}]}}})
    accepted = 0
    for _ in range(3000):
        data = _fuzzed(rng, valid)
        try:
            wire.decode(data)
            accepted += 1
        except wire.WireError:
            pass
    assert accepted < 3000
