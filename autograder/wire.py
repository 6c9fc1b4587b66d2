"""Plain data across the trust boundary: JSON plus raw array buffers, never pickle.

`to_plain` runs in the sandbox and accepts only exact plain types
(`type(x) is torch.Tensor`, `numpy.ndarray`, `int`, `float`, `bool`, `str`,
`None`, lists, tuples and str-keyed dicts of those). `encode` / `decode` frame
such values as bytes; `decode` runs in the trusted process and checks every
length, dtype and shape before it builds an array, so a malformed or hostile
message is rejected instead of trusted.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"AGW1"
MAX_MESSAGE = 256 * 1024 * 1024
MAX_DEPTH = 8
MAX_ELEMENTS = 10_000
MAX_ARRAY_BYTES = 64 * 1024 * 1024
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


def decode(data: bytes):
    """Parse bytes from the sandbox into plain data, checking everything."""
    if len(data) > MAX_MESSAGE:
        raise WireError("message too large")
    if data[:4] != MAGIC or len(data) < 20:
        raise WireError("not a grader message")
    n_header, n_sizes = struct.unpack("<QQ", data[4:20])
    pos = 20
    if pos + n_header + n_sizes > len(data):
        raise WireError("truncated message")
    try:
        tree = json.loads(data[pos:pos + n_header])
        sizes = json.loads(data[pos + n_header:pos + n_header + n_sizes])
    except (ValueError, RecursionError) as exc:
        raise WireError(f"bad header: {exc}") from None
    if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes):
        raise WireError("bad buffer sizes")
    pos += n_header + n_sizes
    if pos + sum(sizes) != len(data):
        raise WireError("buffer sizes do not add up")
    offsets = []
    for s in sizes:
        offsets.append(pos)
        pos += s

    def build(v, depth=0):
        if depth > MAX_DEPTH + 2:
            raise WireError("nested too deeply")
        if isinstance(v, list):
            return [build(x, depth + 1) for x in v]
        if isinstance(v, dict):
            if "$t" in v:
                arr = build(v["$t"], depth + 1)
                if not isinstance(arr, np.ndarray):
                    raise WireError("tensor without array")
                return Tensor(arr, bool(v.get("grad", False)))
            if "$a" in v:
                return _array(v, sizes, offsets, data)
            if "$f" in v:
                if v["$f"] not in ("nan", "inf", "-inf"):
                    raise WireError("bad float")
                return float(v["$f"])
            if "$d" in v:
                v = v["$d"]
                if not isinstance(v, dict):
                    raise WireError("bad dict")
            return {str(k): build(x, depth + 1) for k, x in v.items()}
        if v is None or type(v) in (bool, int, float, str):
            return v
        raise WireError("unexpected value")

    return build(tree)


def _array(v, sizes, offsets, data) -> np.ndarray:
    index, dtype, shape = v.get("$a"), v.get("dtype"), v.get("shape")
    if type(index) is not int or not 0 <= index < len(sizes):
        raise WireError("bad buffer index")
    if dtype not in DTYPES:
        raise WireError(f"dtype {dtype!r} not allowed")
    if not isinstance(shape, list) or len(shape) > 16 or not all(type(s) is int and s >= 0 for s in shape):
        raise WireError("bad shape")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != sizes[index]:
        raise WireError("shape and buffer size disagree")
    start = offsets[index]
    return np.frombuffer(data, dtype=dt, count=math.prod(shape), offset=start).reshape(shape).copy()


def write_frame(fd: int, payload: bytes) -> None:
    """Write one length-prefixed frame to a file descriptor."""
    import os

    view = memoryview(struct.pack("<Q", len(payload)) + payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]
