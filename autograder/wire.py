"""Plain data across the trust boundary: JSON plus raw array buffers, never pickle.

`to_plain` runs in the sandbox and accepts only exact plain types
(`type(x) is torch.Tensor`, `numpy.ndarray`, `int`, `float`, `bool`, `str`,
`None`, lists, tuples and str-keyed dicts of those). `encode` / `decode` frame
such values as bytes; `decode` runs in the trusted process and checks every
length, dtype and shape before it builds an array, so a malformed or hostile
message is rejected instead of trusted. Its `Limits` (message and header bytes,
nesting, elements, buffers, bytes per array) are checked on the raw bytes before
the header is parsed, so a hostile message costs little memory or time; every
violation raises WireError, and nothing else escapes.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"AGW1"
MAX_DEPTH = 8
"""Nesting `to_plain` accepts in a student's value."""
MAX_ELEMENTS = 10_000
"""Longest list `to_plain` accepts in a student's value."""

# What `decode` accepts by default (`Limits()`); each is checked before anything is allocated.
# The largest answer key (Days 10-12, hidden cases and mistakes included) is about 6 MB: a
# 0.2 MiB header of 16k elements, nesting 11, 2k buffers of at most 0.5 MiB. The defaults leave
# at least 30 times that, and keep what one message can cost the trusted side to about 100 MB.
MAX_MESSAGE = 256 * 1024 * 1024
"""Bytes in one message: header, buffer sizes and buffers."""
MAX_HEADER_BYTES = 8 * 1024 * 1024
"""Bytes of the JSON header (the structure; arrays travel as raw buffers beside it)."""
MAX_HEADER_DEPTH = 32
"""Nesting of the JSON header, counted in brackets (an array adds two: its dict and its shape)."""
MAX_HEADER_ELEMENTS = 250_000
"""Containers and scalars in the header (about 90 bytes each once parsed, at worst, and again once built)."""
MAX_BUFFERS = 65_536
"""Raw array buffers in one message."""
MAX_ARRAY_BYTES = 64 * 1024 * 1024
"""Bytes of one array (also the limit `to_plain` applies to a student's value)."""
DTYPES = {
    "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128",
}


class NotPlain(TypeError):
    """A value that may not cross the boundary; the message says what it was."""


class WireError(ValueError):
    """A message from the sandbox that does not follow the format."""


@dataclass(frozen=True)
class Tensor:
    """A torch tensor as it crossed the boundary: its values, and that it was a tensor."""

    array: np.ndarray
    requires_grad: bool = False

    @property
    def dtype(self) -> str:
        return str(self.array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def to_plain(value, depth: int = 0):
    """Copy a student's value into plain data, refusing anything but exact plain types."""
    if depth > MAX_DEPTH:
        raise NotPlain("is nested too deeply")
    t = type(value)
    if value is None or t in (bool, int, str):
        return value
    if t is float:
        return value
    if t is np.ndarray:
        if str(value.dtype) not in DTYPES:
            raise NotPlain(f"is a numpy array of dtype {value.dtype}")
        _check_size(value.nbytes)
        return np.array(value, copy=True, order="C")
    if t.__module__ == "numpy" and t.__name__ in ("float64", "float32", "int64", "int32", "bool_"):
        return value.item()
    if t in (list, tuple):
        if len(value) > MAX_ELEMENTS:
            raise NotPlain("is a list that is too long")
        return [to_plain(v, depth + 1) for v in value]
    if t is dict:
        if len(value) > MAX_ELEMENTS:
            raise NotPlain("is a dict that is too long")
        if not all(type(k) is str for k in value):
            raise NotPlain("is a dict with non-string keys")
        return {k: to_plain(v, depth + 1) for k, v in value.items()}
    torch = _torch()
    if torch is not None and t is torch.Tensor:
        if value.layout is not torch.strided or value.is_quantized or value.device.type != "cpu":
            raise NotPlain("is a tensor that is not a plain CPU tensor")
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise NotPlain(f"is a tensor of dtype {value.dtype}")
        _check_size(torch.Tensor.numel(value) * torch.Tensor.element_size(value))
        data = torch.Tensor.detach(value)
        array = np.array(torch.Tensor.numpy(torch.Tensor.contiguous(data)), copy=True)
        return Tensor(array, bool(value.requires_grad))
    if torch is not None and isinstance(value, torch.Tensor):
        raise NotPlain(f"is a {t.__module__}.{t.__qualname__} (a subclass of torch.Tensor); return a plain torch.Tensor")
    raise NotPlain(f"is a {t.__module__}.{t.__qualname__}")


def _check_size(nbytes: int) -> None:
    if nbytes > MAX_ARRAY_BYTES:
        raise NotPlain(f"is {nbytes / 2**20:.0f} MiB, far larger than any expected output")


def _torch():
    import sys

    return sys.modules.get("torch")


def describe(value) -> str:
    """A short description of a plain value: what a message to a student shows."""
    if isinstance(value, Tensor):
        return f"tensor {list(value.shape)} {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"numpy array {list(value.shape)} {value.dtype}"
    if isinstance(value, list):
        return f"list of {len(value)}"
    if value is None:
        return "None"
    return f"{type(value).__name__} {value!r}"[:80]


def encode(value) -> bytes:
    """Frame plain data (as produced by `to_plain`) as bytes."""
    buffers: list[bytes] = []

    def walk(v):
        if isinstance(v, Tensor):
            return {"$t": walk(v.array), "grad": v.requires_grad}
        if isinstance(v, np.ndarray):
            buffers.append(v.tobytes(order="C"))
            return {"$a": len(buffers) - 1, "dtype": str(v.dtype), "shape": list(v.shape)}
        if isinstance(v, float) and not math.isfinite(v):
            return {"$f": repr(v)}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if any(k.startswith("$") for k in v):
                return {"$d": {k: walk(x) for k, x in v.items()}}
            return {k: walk(x) for k, x in v.items()}
        return v

    header = json.dumps(walk(value)).encode()
    sizes = [len(b) for b in buffers]
    head = json.dumps(sizes).encode()
    return b"".join([MAGIC, struct.pack("<QQ", len(header), len(head)), header, head, *buffers])


@dataclass(frozen=True)
class Limits:
    """How much one message may hold; `decode` checks each limit before it allocates anything.

    `Limits()` holds the module's defaults; a caller that knows what it expects passes tighter
    ones, e.g. `decode(payload, Limits(message_bytes=2**20, elements=20_000))`.
    """

    message_bytes: int = MAX_MESSAGE
    header_bytes: int = MAX_HEADER_BYTES
    depth: int = MAX_HEADER_DEPTH
    elements: int = MAX_HEADER_ELEMENTS
    buffers: int = MAX_BUFFERS
    array_bytes: int = MAX_ARRAY_BYTES


DEFAULT = Limits()
TRUSTED = Limits(message_bytes=1024 * 1024 * 1024, header_bytes=64 * 1024 * 1024, depth=64,
                 elements=2_000_000, buffers=1_000_000)
"""For data the grader's own processes made (answer keys, jobs and replies between the grader and its
workers), never for a message from a sandbox."""

_PREFIX = struct.Struct("<QQ")
_SCAN_CHUNK = 64 * 1024
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


def decode(data: bytes, limits: Limits | None = None):
    """Parse bytes from the sandbox into plain data, checking everything.

    Sizes, nesting and element counts are checked on the raw bytes before the header is
    parsed; any violation, and any malformed message, raises WireError and nothing else.
    """
    limits = limits or DEFAULT
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"a message must be bytes, not {type(data).__name__}")
    if len(data) > limits.message_bytes:
        raise WireError(f"message too large ({len(data)} bytes; the limit is {limits.message_bytes})")
    if len(data) < 4 + _PREFIX.size or bytes(data[:4]) != MAGIC:
        raise WireError("not a grader message")
    n_header, n_sizes = _PREFIX.unpack_from(data, 4)
    pos = 4 + _PREFIX.size
    if n_header > limits.header_bytes:
        raise WireError(f"header too large ({n_header} bytes; the limit is {limits.header_bytes})")
    if n_sizes > 24 * limits.buffers + 2:
        raise WireError(f"too many buffers (the limit is {limits.buffers})")
    if pos + n_header + n_sizes > len(data):
        raise WireError("truncated message")
    sizes_text = bytes(data[pos + n_header:pos + n_header + n_sizes])
    if sizes_text.count(b",") >= max(1, limits.buffers):  # a flat list: one comma fewer than sizes
        raise WireError(f"too many buffers (the limit is {limits.buffers})")
    tree = _parse(bytes(data[pos:pos + n_header]), limits.depth, limits.elements)
    sizes = _parse(sizes_text, 1, limits.buffers + 1)
    if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes):
        raise WireError("bad buffer sizes")
    if len(sizes) > limits.buffers:
        raise WireError(f"too many buffers ({len(sizes)}; the limit is {limits.buffers})")
    if any(s > limits.array_bytes for s in sizes):
        raise WireError(f"an array larger than {limits.array_bytes} bytes")
    pos += n_header + n_sizes
    if pos + sum(sizes) != len(data):
        raise WireError("buffer sizes do not add up")
    offsets = []
    for s in sizes:
        offsets.append(pos)
        pos += s
    used: set[int] = set()

    def build(v):
        if isinstance(v, list):
            return [build(x) for x in v]
        if isinstance(v, dict):
            if "$t" in v:
                arr = build(v["$t"])
                if not isinstance(arr, np.ndarray) or type(v.get("grad", False)) is not bool:
                    raise WireError("bad tensor")
                return Tensor(arr, v.get("grad", False))
            if "$a" in v:
                return _array(v, sizes, offsets, used, data, limits)
            if "$f" in v:
                if v["$f"] not in ("nan", "inf", "-inf"):
                    raise WireError("bad float")
                return float(v["$f"])
            if "$d" in v:
                v = v["$d"]
                if not isinstance(v, dict):
                    raise WireError("bad dict")
            return {k: build(x) for k, x in v.items()}
        if v is None or type(v) in (bool, int, float, str):
            return v
        raise WireError("unexpected value")

    try:
        value = build(tree)
    except RecursionError:
        raise WireError("header nested too deeply") from None
    if len(used) != len(sizes):
        raise WireError("a buffer that no array uses")
    return value


def _parse(text: bytes, depth: int, elements: int):
    """JSON text, after checking on the bytes that it nests at most `depth` and holds at most `elements`."""
    if not text.isascii():
        raise WireError("bad header: not ASCII")
    problem = json_shape_problem(text, depth, elements)
    if problem:
        raise WireError(f"header {problem}")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError, MemoryError) as exc:
        raise WireError(f"bad header: {exc}"[:200]) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def json_shape_problem(text: bytes, depth: int, elements: int) -> str | None:
    """What makes JSON text too deep or too large, checked in linear time without parsing it; None if nothing.

    For hostile text, before `json.loads` allocates anything: every value is the whole
    text, the first in its container or follows a comma, so commas + opening brackets + 1
    bounds the number of elements. Strings are skipped: brackets and commas inside them
    are text. Works on ASCII or UTF-8 bytes; syntax errors are left to the parser.
    """
    def count(t: bytes) -> tuple[int, int]:
        return t.count(b"[") + t.count(b"{"), t.count(b",")

    too_many = f"holds more than {elements} elements"
    opens, commas = count(text)
    if opens <= depth and opens + commas + 1 <= elements:
        return None  # the common case: even counting inside strings, within the limits
    if b"\\" in text:  # drop escaped backslashes, then escaped quotes: every quote left delimits a string
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    if text.count(b'"') > 2 * (2 * elements + 1):  # a string is a value or a key: two per element at most
        return too_many
    opens = commas = level = deepest = 0
    inside = False
    for start in range(0, len(text), _SCAN_CHUNK):  # chunks keep the memory the scan uses small
        parts = text[start:start + _SCAN_CHUNK].split(b'"')
        outside = b"".join(parts[1::2] if inside else parts[0::2])
        inside ^= len(parts) % 2 == 0
        o, c = count(outside)
        opens, commas = opens + o, commas + c
        if opens + commas + 1 > elements:
            return too_many
        brackets = outside.translate(None, _NOT_BRACKETS)
        if brackets:
            path = np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int64)
            deepest = max(deepest, level + int(path.max()))
            level += int(path[-1])
            if deepest > depth:
                return f"nests deeper than {depth} levels"
    return None


def _array(v, sizes, offsets, used, data, limits: Limits) -> np.ndarray:
    index, dtype, shape = v.get("$a"), v.get("dtype"), v.get("shape")
    if type(index) is not int or not 0 <= index < len(sizes):
        raise WireError("bad buffer index")
    if index in used:
        raise WireError("a buffer used twice")
    used.add(index)
    if type(dtype) is not str or dtype not in DTYPES:
        raise WireError(f"dtype {str(dtype)[:40]!r} not allowed")
    if (not isinstance(shape, list) or len(shape) > 16
            or not all(type(s) is int and 0 <= s <= limits.array_bytes for s in shape)):
        raise WireError("bad shape")
    dt = np.dtype(dtype)
    count = math.prod(shape)
    if count * dt.itemsize != sizes[index]:
        raise WireError("shape and buffer size disagree")
    start = offsets[index]
    try:
        if dt == np.bool_:  # any byte but 0 or 1 would make a bool array that compares oddly
            return (np.frombuffer(data, dtype=np.uint8, count=count, offset=start) != 0).reshape(shape)
        return np.frombuffer(data, dtype=dt, count=count, offset=start).reshape(shape).copy()
    except (ValueError, OverflowError, MemoryError) as exc:
        raise WireError(f"bad array: {exc}") from None


def write_frame(fd: int, payload: bytes) -> None:
    """Write one length-prefixed frame to a file descriptor."""
    import os

    view = memoryview(struct.pack("<Q", len(payload)) + payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]
