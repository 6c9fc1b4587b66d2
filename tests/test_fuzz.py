"""Fuzzing the trust boundary (issue 12): a few hundred random mutations of a real submission, graded in
ONE batch beside honest students.

Everything is generated from one seeded RNG (`SEED`), so a failure reproduces. Two families, both built
from the Days 6-7 notebook as an untouched student submits it (every exercise still a stub, so every
point it gets is unearned):

- notebook files: byte-level mutations of the saved file (truncation, random bytes, other encodings,
  deep nesting, oversized numbers, ...) and structure-level ones of its JSON (wrong types in cells,
  metadata, source and grade_id, duplicate ids, huge strings within the 32 MiB limit, nbformat 3, ...);
- event streams: the same stub notebook with one extra cell (or one stub function, run while its item
  is graded) that finds the sandbox's event pipe among its fds and writes frames of its own: random
  bytes, absurd lengths, broken wire messages, and well-formed `wire.encode` messages with forged events
  (unknown kinds, case names that do not exist, huge or list indexes, a forged "done" or "sandbox"
  record, floods of tiny events, 16 MiB outputs for many cases, the public key's expected outputs
  claimed for items that are not being graded, cell errors carrying the hidden cases' inputs).

The batch runs in a subprocess (`grade_all`, 2 workers, the fast course) so that the grader's own peak
memory can be measured; the honest students are also graded alone the same way (while the batch's files
are written). Each test reads the outputs of those two runs.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import students as demo_students
from conftest import fast_course_file

from autograder.config import ROOT, load_course

SEED = 12_2024
"""The one seed every mutation and every frame is drawn from."""
N_NOTEBOOK_MUTATIONS = 150
N_EVENT_ATTACKS = 80

GRADER_PEAK_BOUND_MB = 1536
"""The grading process itself (reads every notebook, decodes every result, writes the outputs). Measured
(VmHWM) on a 2-core machine: about 100 MB for the honest students alone, 400-510 MB for this batch (two
32 MiB notebooks parsed at once, a job result holding the 128 MiB of case outputs a notebook may keep).
1.5 GiB leaves that three times over, and is far below what an unbounded stream from a sandbox reaches."""
WORKER_PEAK_BOUND_MB = 1536
"""A grading worker itself (torch imported), not its sandboxes: measured about 250 MB for the honest
students alone and 640 MB for this batch; it holds one job and one bounded result at a time."""
BATCH_TIMEOUT = 900
"""Seconds before a batch subprocess is called hung (this one takes one to two minutes)."""

D06 = "day06_scaled_dot_product_attention"
D01 = "day01_rnn_limitations"
AUTO_ITEMS = ["scaled_dot_product_attention", "causal_mask", "padding_mask", "attention_flops", "quiz_sqrt_dk"]
FUNCTION_ITEMS = AUTO_ITEMS[:4]
"""Items whose stub can be replaced by a function that runs an attack when it is graded, in grading order."""
RUN_CELLS = [1, 5, 10, 12, 17, 21]
"""Indexes of the stub notebook's cells the grader runs (no demos, tests or markdown)."""
ATTACK_CELL = 25
"""Index of the cell an event attack adds at the end of the notebook."""
FORGED = "AGW-FORGED"
"""Marks every forged "sandbox" record."""
NO_PIPE = "AGW-NO-PIPE"
"""Raised by an attack that found no pipe to write to (the harness, not the grader, would be broken)."""
PROTOCOL_PHRASE = "broke the grader's protocol"
GRADER_FAILURES = ("the grader could not grade this notebook", "the grader could not run this notebook",
                   "the grading worker failed", "the grading worker died")
"""What a result says when the grader itself failed on it (an exception of its own, a dead worker)."""
MAX_NOTEBOOK = 32 * 2**20
MAX_MESSAGE = 256 * 2**20
"""wire.MAX_MESSAGE today; used only to pick absurd lengths around it."""

BATCH_SCRIPT = r"""
import json, resource, sys, traceback
from pathlib import Path
from autograder.config import load_course
from autograder.grade import grade_all
summary, error = None, None
try:
    summary = grade_all(load_course(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]), workers=int(sys.argv[4]),
                        progress=None)
except BaseException:
    error = traceback.format_exc()
finally:
    # VmHWM is this process's own peak; ru_maxrss would also count the parent it was forked from (Linux keeps
    # the larger of the two across exec), here pytest with torch imported.
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
    print("AGW-BATCH " + json.dumps({"summary": summary, "error": error, "grader_peak_mb": hwm,
                                     "grader_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                     "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024},
                                    default=str), flush=True)
"""

# ---------------------------------------------------------------------------------------------------
# The attack library, run by student code inside the sandbox (prepended to every attacking cell).

PRELUDE = r'''
import fcntl as _agw_fcntl, gc as _agw_gc, os as _agw_os, random as _agw_random, stat as _agw_stat
import struct as _agw_struct
_AGW_ONCE = []


def _agw_fds():
    """Every writable pipe or socket among fds 3-63: where the sandbox's events go."""
    found = []
    for fd in range(3, 64):
        try:
            mode = _agw_os.fstat(fd).st_mode
            flags = _agw_fcntl.fcntl(fd, _agw_fcntl.F_GETFL)
        except OSError:
            continue
        if (_agw_stat.S_ISFIFO(mode) or _agw_stat.S_ISSOCK(mode)) and flags & _agw_os.O_ACCMODE != _agw_os.O_RDONLY:
            found.append(fd)
    if not found:
        raise RuntimeError("AGW-NO-PIPE: no writable pipe among fds 3-63")
    return found


def _agw_write(data):
    for fd in _agw_fds():
        view = memoryview(data)
        while view:
            view = view[_agw_os.write(fd, view[:1 << 20]):]


def _agw_frame(payload):
    return _agw_struct.pack("<Q", len(payload)) + payload


def _agw_value(v):
    """Literal data to plain data: {"__agw_array__": [dtype, shape], "tensor": bool} becomes an array."""
    import numpy as np
    from autograder import wire
    if isinstance(v, dict) and "__agw_array__" in v:
        dtype, shape = v["__agw_array__"]
        arr = np.zeros(shape, dtype=dtype)
        return wire.Tensor(arr) if v.get("tensor") else arr
    if isinstance(v, dict) and "__agw_float__" in v:
        return float(v["__agw_float__"])
    if isinstance(v, dict):
        return {k: _agw_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_agw_value(x) for x in v]
    return v


def _agw_msg(v):
    from autograder import wire
    return _agw_frame(wire.encode(_agw_value(v)))


def _agw_cases():
    """Every case (a dict with a name and inputs) this process holds: the job's, hidden ones included."""
    found, seen = [], set()
    for o in _agw_gc.get_objects():
        try:
            if type(o) is dict and type(o.get("name")) is str and type(o.get("inputs")) is dict and id(o) not in seen:
                seen.add(id(o))
                found.append(o)
        except Exception:
            pass
    return found


def _agw_leak_text(case):
    parts = ["LEAK[" + case["name"] + "]"]
    for k, v in case["inputs"].items():
        parts.append(k + "=" + (v.tobytes()[:16].hex() if hasattr(v, "tobytes") else repr(v)[:40]))
    return " ".join(parts)


def _agw_leak(indexes, targets):
    """Forged cell errors (and case errors for `targets`) whose text is the inputs of every case found."""
    texts = {c["name"]: _agw_leak_text(c) for c in _agw_cases()}
    frames = []
    for i, text in enumerate(texts.values()):
        frames.append(_agw_msg({"ev": "cell", "index": indexes[i % len(indexes)], "status": "error",
                                "error": "NameError: " + text[:900]}))
    for key, name in targets:
        text = texts.get(name, "") + " | " + " | ".join(texts.values())
        frames.append(_agw_msg({"ev": "case", "key": key, "case": name, "outputs": None,
                                "error": "ValueError: " + text[:900], "error_type": "ValueError"}))
    _agw_write(b"".join(frames))


def _agw_public(notebook, items, with_items, done):
    """Claim the public key's expected outputs (shipped with the release) for `items`."""
    import autograder
    from autograder import wire
    path = _agw_os.path.join(_agw_os.path.dirname(autograder.__file__), "public", notebook + ".agw")
    key = wire.decode(open(path, "rb").read())
    frames = []
    for item in items:
        if with_items:
            frames.append(_agw_msg({"ev": "item", "key": item, "status": "start"}))
        for case in key[item]["cases"]:
            if case.get("expected") is not None:
                frames.append(_agw_frame(wire.encode({"ev": "case", "key": item, "case": case["name"],
                                                      "outputs": case["expected"], "error": ""})))
        if with_items:
            frames.append(_agw_msg({"ev": "item", "key": item, "status": "end"}))
    if done:
        frames.append(_agw_msg({"ev": "done", "stdout": ""}))
    _agw_write(b"".join(frames))


def _agw_big(key, names, mib, output):
    """Forged case events, each with an output of `mib` MiB (under the 64 MiB per-array limit); `names` may be
    a number of made-up case names."""
    import numpy as np
    from autograder import wire
    arr = wire.Tensor(np.zeros(int(mib * 2**18), dtype=np.float32))
    for name in (["big%d" % i for i in range(names)] if type(names) is int else names):
        _agw_write(_agw_frame(wire.encode({"ev": "case", "key": key, "case": name, "outputs": {output: arr}, "error": ""})))


def _agw_flood_cases(key, count):
    """`count` tiny case events, each for a different (made-up) case name."""
    batch = []
    for i in range(count):
        batch.append(_agw_msg({"ev": "case", "key": key, "case": "f%d" % i, "outputs": {}, "error": ""}))
        if len(batch) == 5000:
            _agw_write(b"".join(batch))
            batch = []
    _agw_write(b"".join(batch))


def _agw_run(ops):
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "raw":
            _agw_write(_agw_random.Random(args[1]).randbytes(args[0]))
        elif kind == "len":
            _agw_write(_agw_struct.pack("<Q", args[0]) + _agw_random.Random(args[2]).randbytes(args[1]))
        elif kind == "payload":
            _agw_write(_agw_frame(args[0]))
        elif kind == "msg":
            _agw_write(_agw_msg(args[0]))
        elif kind == "flood":
            frame = _agw_msg(args[0])
            for start in range(0, args[1], 20000):
                _agw_write(frame * min(20000, args[1] - start))
        elif kind == "flood_cases":
            _agw_flood_cases(*args)
        elif kind == "big":
            _agw_big(*args)
        elif kind == "public":
            _agw_public(*args)
        elif kind == "leak":
            _agw_leak(*args)
        elif kind == "exit":
            _agw_os._exit(args[0])
'''


def attack_cell(ops: list) -> str:
    return PRELUDE + f"\n_agw_run({ops!r})\n"


def attack_in_function(item: str, ops: list) -> str:
    """The stub of `item`, which runs the attack the first time it is called (while its item is graded)."""
    return (PRELUDE + f"\n\ndef {item}(*args, **kwargs):\n    if not _AGW_ONCE:\n        _AGW_ONCE.append(1)\n"
            f"        _agw_run({ops!r})\n    raise NotImplementedError()\n")


# ---------------------------------------------------------------------------------------------------
# Event-stream attacks: (label, edits of the stub notebook, certainly breaks the protocol).

def _wire_payload(header: bytes, sizes: bytes = b"[]", buffers: bytes = b"", n_header=None, n_sizes=None) -> bytes:
    """A message in today's wire layout (MAGIC, two lengths, JSON header, JSON sizes, buffers), lengths forgeable."""
    return (b"AGW1" + struct.pack("<QQ", len(header) if n_header is None else n_header,
                                  len(sizes) if n_sizes is None else n_sizes) + header + sizes + buffers)


def _arr(dtype: str, shape: list, tensor: bool = True) -> dict:
    return {"__agw_array__": [dtype, shape], "tensor": tensor}


BROKEN_PAYLOADS = [
    b"", b"AGW1", b"AGW1" + bytes(16), b'{"ev": "done"}', b"\x00" * 64,
    _wire_payload(b"{}", n_header=2**60), _wire_payload(b"{}", n_sizes=2**63),
    _wire_payload(b"[" * 100_000 + b"]" * 100_000), _wire_payload(b'{"ev": "cell", "index": 1' + b"0" * 5000 + b"}"),
    _wire_payload(b"NaN"), _wire_payload(b'{"ev": "done", "stdout": "\\ud800"}'),
    _wire_payload(b'{"ev": "case", "outputs": {"$a": 0, "dtype": "float64", "shape": [1000000000, 1000000000]}}', b"[8]", bytes(8)),
    _wire_payload(b'{"ev": "case", "outputs": {"$a": 0, "dtype": "object", "shape": [1]}}', b"[8]", bytes(8)),
    _wire_payload(b'{"ev": "case", "outputs": {"$a": -1, "dtype": "float64", "shape": [1]}}', b"[8]", bytes(8)),
    _wire_payload(b'{"ev": "case", "outputs": {"$a": 0, "dtype": "float64", "shape": [-1]}}', b"[8]", bytes(8)),
    _wire_payload(b'{"ev": "case", "outputs": {"$t": 5}}'), _wire_payload(b'{"ev": "case", "outputs": {"$f": "1e5"}}'),
    _wire_payload(b'{"$d": [1]}'), _wire_payload(b"{}", b"[-1]"), _wire_payload(b"{}", b"[1.5]"),
    _wire_payload(b"{}", b"[1000000]", b"x"), _wire_payload(b'{"ev": "sandbox", "features": {"user": "' + FORGED.encode() + b'"}}', b"{}"),
]

ABSURD_LENGTHS = [2**64 - 1, 2**63, 2**40, MAX_MESSAGE + 1, MAX_MESSAGE, 2**31, 0]
UNKNOWN_KINDS = ["pwn", "", 1, None, ["cell"], {"ev": "cell"}, "CELL", "done ", True, 1.5, "sandbox\x00"]
NON_DICTS = [[], "done", 5, None, [{"ev": "done", "stdout": ""}], 1.5, True]
BAD_INDEXES = [10**30, -1, -(10**30), [1], {"i": 1}, "1", 1.5, True, None, 24, 3, 6, 10**6]
BAD_STATUSES = ["start", "ok", "error", "killed", "not run", None, 5, ["ok"], "x" * 1000, "end"]
BAD_TEXTS = ["", "x" * 10**6, 12345, None, ["e"], {"a": 1}, "\x00" * 10]
BAD_ITEM_KEYS = AUTO_ITEMS + ["quiz_sqrt_dk:guess", "nonexistent", ["causal_mask"], None, 10**30, "", "checkpoint_sdpa"]
ITEM_STATUSES = ["start", "end", "missing", "done", "killed", "retry", None, 1, ["end"]]
FAKE_CASES = ["nope", "", "x" * 10000, 5, None, ["size-1"], "f0", "size-1 ", "SIZE-1"]
BAD_OUTPUTS = [None, {}, [], 5, "x", {"mask": _arr("bool", [3, 3])}, {"mask": _arr("float64", [2**12, 2**10])},
               {"output": [[[[[[[[1]]]]]]]]}, {"flops": 10**40}, {"answer": 5}, {"mask": {"__agw_float__": "nan"}}]
FORGED_FEATURES = [
    {"pid_namespace": False, "network": False, "mounts": False, "user": FORGED},
    {"pid_namespace": True, "network": True, "mounts": True, "user": "nobody", FORGED: True},
    FORGED, [FORGED], {"user": FORGED * 100_000}, {"nested": [[[[FORGED]]]]},
]


def _case_names(cases: dict) -> dict[str, tuple[list[str], list[str]]]:
    """{item: (public case names, hidden case names)}, from `reference.build_cases`."""
    return {item: ([c["name"] for c in v if c["public"]], [c["name"] for c in v if not c["public"]])
            for item, v in cases.items()}


def _random_event(rng: random.Random, names: dict) -> dict:
    """One well-formed wire message holding a random (usually forged or malformed) event."""
    kind = rng.choice(["cell", "item", "case", "case", "done", "sandbox", "need", "unknown", "extra"])
    if kind == "cell":
        index = rng.choice(BAD_INDEXES + RUN_CELLS + [ATTACK_CELL])
        return {"ev": "cell", "index": index, "status": rng.choice(BAD_STATUSES), "error": rng.choice(BAD_TEXTS)}
    if kind == "item":
        return {"ev": "item", "key": rng.choice(BAD_ITEM_KEYS), "status": rng.choice(ITEM_STATUSES),
                "error": rng.choice(BAD_TEXTS)}
    if kind == "need":  # ask for reference pieces (of any item), or say "ready" again
        return rng.choice([{"ev": "need", "key": rng.choice(BAD_ITEM_KEYS)}, {"ev": "ready"}])
    if kind == "case":
        item = rng.choice(AUTO_ITEMS)
        public, hidden = names[item]
        case = rng.choice(FAKE_CASES + public + hidden)
        return {"ev": "case", "key": rng.choice([item, item, rng.choice(BAD_ITEM_KEYS)]), "case": case,
                "outputs": rng.choice(BAD_OUTPUTS), "error": rng.choice(BAD_TEXTS + [""] * 4),
                "error_type": rng.choice(["", "ValueError", None, ["x"], "x" * 10**4])}
    if kind == "done":
        return {"ev": "done", "stdout": rng.choice(BAD_TEXTS)}
    if kind == "sandbox":
        return {"ev": "sandbox", "features": rng.choice(FORGED_FEATURES)}
    if kind == "unknown":
        return {"ev": rng.choice(UNKNOWN_KINDS), "index": 1, "status": "ok"}
    return {"ev": rng.choice(["cell", "case", "item"]), "index": 1, "key": "causal_mask", "extra": "x" * rng.choice([10, 10**5]),
            "case": "size-1", "status": "ok", "outputs": {"mask": _arr("bool", [1, 1])}}


def _random_op(rng: random.Random, names: dict, host: str | None) -> tuple:
    """One cheap op of any family (floods and big outputs are placed deliberately, not at random)."""
    others = [i for i in FUNCTION_ITEMS if i != host]
    family = rng.choice(["raw", "len", "payload", "msg", "msg", "msg", "msg", "public", "leak", "smallflood"])
    if family == "raw":
        return ("raw", rng.choice([1, 7, 8, 9, 100, 4096, 70_000]), rng.randrange(2**32))
    if family == "len":
        return ("len", rng.choice(ABSURD_LENGTHS + [rng.randrange(2**64)]), rng.choice([0, 8, 100]), rng.randrange(2**32))
    if family == "payload":
        return ("payload", rng.choice(BROKEN_PAYLOADS))
    if family == "msg":
        return ("msg", rng.choice([_random_event(rng, names)] * 5 + [rng.choice(NON_DICTS)]))
    if family == "public":
        return ("public", D06, rng.sample(others, rng.randint(1, len(others))), rng.random() < 0.7, rng.random() < 0.5)
    if family == "leak":
        return ("leak", RUN_CELLS, [(i, n) for i in others for n in names[i][1][:2]])
    return ("flood", _random_event(rng, names), rng.choice([100, 1000, 10_000]))


def _breaks(op: tuple) -> bool:
    """Whether an op, as the first thing an attack writes, certainly breaks the protocol."""
    kind = op[0]
    if kind == "raw":
        return op[1] >= 8 and struct.unpack("<Q", random.Random(op[2]).randbytes(8))[0] > 2**40
    if kind == "len":
        return op[1] > MAX_MESSAGE
    if kind == "payload":
        return True
    if kind == "msg":
        v = op[1]
        return not isinstance(v, dict) or v.get("ev") in UNKNOWN_KINDS or (v.get("ev") == "cell" and isinstance(v.get("index"), list))
    return False


def event_attacks(rng: random.Random, cases: dict) -> list[tuple[str, dict, bool]]:
    names = _case_names(cases)
    sdpa_public, sdpa_hidden = names["scaled_dot_product_attention"]
    all_hidden = [(i, n) for i in FUNCTION_ITEMS for n in names[i][1]]
    named: list[tuple[str, list, str | None]] = [  # (label, ops, host item or None for a cell)
        ("random_bytes", [("raw", 4096, 1)], None),
        ("length_2_64", [("len", 2**64 - 1, 100, 2)], None),
        ("length_over_limit", [("len", MAX_MESSAGE + 1, 100, 3)], None),
        ("length_2_63_in_item", [("len", 2**63, 8, 4)], "causal_mask"),
        ("unknown_kind", [("msg", {"ev": "pwn"})], None),
        ("not_a_dict", [("msg", [{"ev": "done", "stdout": ""}])], None),
        ("index_list", [("msg", {"ev": "cell", "index": [1], "status": "error", "error": "x"})], None),
        ("index_huge", [("msg", {"ev": "cell", "index": 10**30, "status": "error", "error": "x"})], None),
        ("index_dict", [("msg", {"ev": "cell", "index": {"i": 1}, "status": "start"})], None),
        ("case_unknown_name", [("msg", {"ev": "case", "key": "causal_mask", "case": "nope", "outputs": {}, "error": ""})], None),
        ("case_unknown_item", [("msg", {"ev": "case", "key": "nonexistent", "case": "size-1", "outputs": {}, "error": ""})], None),
        ("case_name_list", [("msg", {"ev": "case", "key": "causal_mask", "case": ["size-1"], "outputs": {}, "error": ""})], None),
        ("forged_done", [("msg", {"ev": "done", "stdout": "All tests passed"})], None),
        ("forged_done_in_item", [("msg", {"ev": "done", "stdout": ""}), ("exit", 0)], "scaled_dot_product_attention"),
        ("forged_sandbox", [("msg", {"ev": "sandbox", "features": FORGED_FEATURES[0]})], None),
        ("forged_sandbox_nested", [("msg", {"ev": "sandbox", "features": FORGED_FEATURES[1]})], None),
        ("forged_sandbox_in_item", [("msg", {"ev": "sandbox", "features": FORGED_FEATURES[0]})], "padding_mask"),
        ("forged_cell_ok", [("msg", {"ev": "cell", "index": i, "status": "ok", "error": ""}) for i in RUN_CELLS], None),
        ("forged_item_end", [("msg", {"ev": "item", "key": i, "status": "end"}) for i in AUTO_ITEMS], None),
        ("forged_item_missing", [("msg", {"ev": "item", "key": i, "status": "missing"}) for i in AUTO_ITEMS], None),
        ("forged_need_for_later_item", [("msg", {"ev": "need", "key": i}) for i in AUTO_ITEMS[1:]], AUTO_ITEMS[0]),
        ("forged_ready", [("msg", {"ev": "ready"})], None),
        ("forged_item_killed_with_text", [("msg", {"ev": "item", "key": "padding_mask", "status": "killed",
                                                   "error": "forged kill reason"})], "causal_mask"),
        ("public_outputs_then_done", [("public", D06, FUNCTION_ITEMS, True, True)], None),
        ("public_outputs_no_items", [("public", D06, FUNCTION_ITEMS, False, False)], None),
        ("public_outputs_for_done_items", [("public", D06, FUNCTION_ITEMS[:3], True, False)], "attention_flops"),
        ("public_outputs_for_later_items", [("public", D06, FUNCTION_ITEMS[1:], True, True), ("exit", 0)],
         "scaled_dot_product_attention"),
        ("hidden_case_outputs", [("msg", {"ev": "case", "key": "scaled_dot_product_attention", "case": n,
                                          "outputs": {"output": _arr("float32", [2, 2]), "weights": _arr("float32", [2, 2])},
                                          "error": ""}) for n in sdpa_hidden], None),
        ("hidden_case_outputs_in_item", [("msg", {"ev": "case", "key": "causal_mask", "case": n,
                                                  "outputs": {"mask": _arr("bool", [16, 16])}, "error": ""})
                                         for n in names["causal_mask"][1]], "attention_flops"),
        ("leak_hidden_inputs", [("leak", RUN_CELLS, all_hidden)], None),
        ("leak_hidden_inputs_in_item", [("leak", RUN_CELLS, [t for t in all_hidden if t[0] != "padding_mask"])], "padding_mask"),
        ("flood_tiny_cases", [("flood_cases", "causal_mask", 700_000)], None),  # about 72 MB, as in the issue
        ("flood_cell_start", [("flood", {"ev": "cell", "index": 1, "status": "start"}, 200_000)], None),
        ("flood_empty_dicts", [("flood", {}, 300_000)], None),
        ("flood_item_start_in_item", [("flood", {"ev": "item", "key": "causal_mask", "status": "start"}, 100_000)], "causal_mask"),
        ("big_outputs_fake_cases", [("big", "scaled_dot_product_attention", 6400, 0.25, "output")], None),  # 1.6 GB, if
        # nothing stops it, in frames small enough to be read fast
        ("big_outputs_real_cases", [("big", "scaled_dot_product_attention", sdpa_public + sdpa_hidden, 16, "output")],
         "causal_mask"),
    ]
    attacks = []
    for label, ops, host in named:
        edits = {host: attack_in_function(host, ops)} if host else {"+attack": attack_cell(ops)}
        attacks.append((f"ev_{label}", edits, _breaks(ops[0])))
    # Ordinary outputs of 16 MiB (and 48 MiB) per case, under the 64 MiB per-array limit, through the real protocol.
    big = ("import torch\ndef scaled_dot_product_attention(query, key, value, mask=None):\n"
           "    return torch.zeros(4, 1024, 1024), torch.zeros(1)\n")
    attacks.append(("ev_big_outputs_returned", {"scaled_dot_product_attention": big}, False))
    huge = big.replace("torch.zeros(4, 1024, 1024)", "torch.zeros(12, 1024, 1024)")  # 48 MiB a case: 0.8 GB in all
    attacks.append(("ev_huge_outputs_returned", {"scaled_dot_product_attention": huge}, False))
    while len(attacks) < N_EVENT_ATTACKS:
        host = rng.choice([None, None] + FUNCTION_ITEMS)
        ops = [_random_op(rng, names, host) for _ in range(rng.choice([1, 1, 2, 3, 5]))]
        if rng.random() < 0.15:
            ops.append(("exit", rng.choice([0, 1, 70])))
        edits = {host: attack_in_function(host, ops)} if host else {"+attack": attack_cell(ops)}
        attacks.append((f"ev_random{len(attacks):03d}", edits, _breaks(ops[0])))
    return attacks


# ---------------------------------------------------------------------------------------------------
# Notebook-file mutations of the stub notebook: (label, file bytes).

def _nest(depth: int, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def _cells_with_nbgrader(nb):
    return [c for c in nb["cells"] if isinstance(c, dict) and "nbgrader" in c.get("metadata", {})]


def _pick_cell(rng, nb):
    return rng.choice(nb["cells"])


def _insert_in_strings(rng, data: bytes, piece: bytes) -> bytes:
    """Insert `piece` inside a random "YOUR CODE HERE" (a JSON string), or anywhere when there is none."""
    spots = [m.start() + 4 for m in re.finditer(rb"YOUR CODE HERE", data)] or [rng.randrange(max(1, len(data)))]
    at = rng.choice(spots)
    return data[:at] + piece + data[at:]


def _byte_mutations(rng: random.Random, base: bytes):
    """name -> (rng, bytes) -> bytes."""
    text = base.decode()

    def flip(r, b):
        b = bytearray(b)
        for _ in range(r.randint(1, 32)):
            b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b)

    def flip_bit(r, b):
        b = bytearray(b)
        i = r.randrange(len(b))
        b[i] ^= 1 << r.randrange(8)
        return bytes(b)

    def insert(r, b):
        i = r.randrange(len(b))
        return b[:i] + r.randbytes(r.randint(1, 200)) + b[i:]

    def delete(r, b):
        i = r.randrange(len(b))
        return b[:i] + b[i + r.randint(1, 2000):]

    def duplicate(r, b):
        i, j = sorted(r.sample(range(len(b)), 2))
        k = r.randrange(len(b))
        return b[:k] + b[i:j] + b[k:]

    def deep(r, b, depth=None, kind=None, top=None):
        nest = _nest(depth or r.choice([1000, 5000, 100_000]), kind or r.choice(["list", "object"])).encode()
        if top if top is not None else r.random() < 0.5:
            return b"{" + b'"agw": ' + nest + b", " + b.lstrip()[1:]
        return b.replace(b'"metadata": {', b'"metadata": {"agw": ' + nest + b", ", 1)

    def big_number(r, b):
        number = r.choice([b"1" + b"0" * 5000, b"1e999", b"-1e999", b"1" + b"0" * 400, b"4" + b"0" * 4400])
        where = r.choice([b'"nbformat": 4', b'"nbformat_minor": 5', b'"execution_count": null'])
        return b.replace(where, where.split(b":")[0] + b": " + number, 1)

    def nan_literal(r, b):
        return b.replace(b'"execution_count": null', b'"execution_count": ' + r.choice([b"NaN", b"Infinity", b"-Infinity"]))

    def dup_key(r, b):
        extra = r.choice([b'"cells": "agw"', b'"nbformat": 3', b'"cells": []', b'"cells": [1]', b'"metadata": 5'])
        return b.rstrip()[:-1] + b", " + extra + b"}"

    return {
        "truncate": lambda r, b: b[:r.randrange(len(b))],
        "truncate_tail": lambda r, b: b[:len(b) - r.randint(1, 50)],
        "flip_bytes": flip,
        "flip_bit": flip_bit,
        "insert_random": insert,
        "delete_range": delete,
        "duplicate_range": duplicate,
        "random_file": lambda r, b: r.randbytes(r.choice([1, 100, 10_000, 1_000_000])),
        "empty_file": lambda r, b: b"",
        "whitespace_only": lambda r, b: b" \n\t" * r.choice([1, 1000]),
        "cp1252": lambda r, b: text.encode("cp1252", errors="replace"),
        "utf16": lambda r, b: text.encode(r.choice(["utf-16", "utf-16-le", "utf-32"])),
        "utf8_bom": lambda r, b: b"\xef\xbb\xbf" + b,
        "invalid_utf8": lambda r, b: _insert_in_strings(r, b, r.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                                         b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"])),
        "raw_control_char": lambda r, b: _insert_in_strings(r, b, r.choice([b"\x00", b"\x01", b"\x1b", b"\n"])),
        "escaped_nul": lambda r, b: _insert_in_strings(r, b, b"\\u0000"),
        "lone_surrogate_escape": lambda r, b: _insert_in_strings(r, b, r.choice([b"\\ud800", b"\\udfff", b"\\ud83d"])),
        "oversize": lambda r, b: b + b" " * (MAX_NOTEBOOK + 1 - len(b)),
        "exactly_max_size": lambda r, b: b.rstrip() + b" " * (MAX_NOTEBOOK - len(b.rstrip())),
        "deep_nesting": deep,
        "deep_list_top_level": lambda r, b: deep(r, b, 100_000, "list", True),
        "deep_object_in_cell_metadata": lambda r, b: deep(r, b, 1_000_000, "object", False),
        "deep_list_just_too_deep": lambda r, b: deep(r, b, 1000, "list", False),
        "big_number": big_number,
        "nan_literal": nan_literal,
        "duplicate_key": dup_key,
        "trailing_garbage": lambda r, b: b + r.choice([b"garbage", b"{}", b"\x00", b"]"]),
    }


def _structure_mutations(base_nb: dict):
    """name -> (rng, nb dict) -> nb (mutated in place or replaced)."""
    item_ids = AUTO_ITEMS + ["checkpoint_sdpa"]

    def set_top(r, nb):
        return r.choice([[], "x", 1, None, True, {"cells": nb["cells"]}, {"worksheets": 5}, {"cells": {}, "nbformat": 4},
                         {"worksheets": [{"cells": [1, 2]}], "nbformat": 3}, {"nbformat": 4}])

    def cells_type(r, nb):
        nb["cells"] = r.choice([{}, "cells", None, 5, [1, 2], [[]], [None], [{"cell_type": "code"}] * 3, True, []])

    def cell_wrong(r, nb):
        nb["cells"][r.randrange(len(nb["cells"]))] = r.choice([[], "x", None, 5, 1.5, True, [{"cell_type": "code"}]])

    def cell_type(r, nb):
        _pick_cell(r, nb)["cell_type"] = r.choice([["code"], None, 5, "raw", "code", "markdown", "", "CODE", {"a": 1}])

    def markdown_to_code(r, nb):
        for c in nb["cells"]:
            if c["cell_type"] == "markdown" and r.random() < 0.5:
                c["cell_type"] = "code"
                c.setdefault("outputs", [])
                c.setdefault("execution_count", None)

    def del_key(r, nb):
        cell = _pick_cell(r, nb)
        cell.pop(r.choice(["cell_type", "source", "metadata", "id", "outputs", "execution_count"]), None)

    def metadata(r, nb):
        _pick_cell(r, nb)["metadata"] = r.choice([[], "m", None, 5, [["nbgrader"]], {"nbgrader": None}, {"tags": "demo"}])

    def nbgrader(r, nb):
        cell = r.choice(_cells_with_nbgrader(nb))
        cell["metadata"]["nbgrader"] = r.choice([[], "x", None, 5, ["grade_id"], {"grade_id": [1]}, {}, {"grade": True}])

    def grade_id(r, nb):
        cell = r.choice(_cells_with_nbgrader(nb))
        cell["metadata"]["nbgrader"]["grade_id"] = r.choice(
            [["checkpoint_sdpa"], ["causal_mask"], {"a": 1}, 5, None, 1.5, True, "", "x" * 100_000,
             "test_causal_mask", r.choice(item_ids), "checkpoint_sdpa", "\ud800"])

    def grade_id_list_on_manual(r, nb):
        for c in nb["cells"]:
            if c.get("id") == "checkpoint_sdpa":
                c["metadata"]["nbgrader"]["grade_id"] = r.choice([["checkpoint_sdpa"], {"checkpoint_sdpa": 1}, [[1]]])
                c["source"] = "my answer"

    def nbgrader_flags(r, nb):
        meta = r.choice(_cells_with_nbgrader(nb))["metadata"]["nbgrader"]
        meta[r.choice(["grade", "solution", "locked", "points", "task", "schema_version", "cell_type"])] = r.choice(
            ["yes", [1], None, {"a": 1}, 10**30, -1, 1.5, "", float("nan")])

    def tags(r, nb):
        cell = _pick_cell(r, nb)
        cell.setdefault("metadata", {})["tags"] = r.choice(["demo", {"demo": 1}, [["demo"]], ["demo"], [None], 5, None,
                                                            ["demo"] * 10_000])

    def untag_demos(r, nb):
        for c in nb["cells"]:
            c["metadata"].pop("tags", None)

    def source(r, nb):
        _pick_cell(r, nb)["source"] = r.choice([5, None, {"a": 1}, [1, 2], ["a", None], [["x"]], 1.5, True,
                                                ["pass\n"] * 3000, "\ud800", "\x00", "x" * 10**6, ""])

    def cell_id(r, nb):
        cell = _pick_cell(r, nb)
        cell["id"] = r.choice([5, [1], None, "", "x" * 100_000, r.choice(nb["cells"]).get("id"), "test_causal_mask",
                               "\ud800", {"a": 1}, "causal_mask"])

    def same_ids(r, nb):
        for c in nb["cells"]:
            c["id"] = r.choice(["same", "causal_mask", "test_causal_mask"])

    def swap_ids(r, nb):
        item = r.choice(AUTO_ITEMS)
        cells = {c["id"]: c for c in nb["cells"]}
        cells[item]["id"], cells["test_" + item]["id"] = "test_" + item, item

    def outputs(r, nb):
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        r.choice(code)["outputs"] = r.choice(["x", 5, [None], [{"output_type": ["x"]}],
                                              [{"output_type": "stream", "name": "stdout", "text": "x" * 10**7}]])

    def execution_count(r, nb):
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        r.choice(code)["execution_count"] = r.choice(["1", [1], 1.5, 10**30, -1, {"a": 1}])

    def delete_cells(r, nb):
        nb["cells"] = [c for c in nb["cells"] if r.random() < 0.5]

    def shuffle_cells(r, nb):
        r.shuffle(nb["cells"])

    def duplicate_cells(r, nb):
        nb["cells"] = [c for c in nb["cells"] for _ in range(r.choice([1, 1, 2, 5]))]

    def many_cells(r, nb):
        nb["cells"] += [{"cell_type": "code", "id": f"many-{i}", "metadata": {}, "outputs": [], "execution_count": None,
                         "source": r.choice(["", "pass", "x = 1"])} for i in range(3000)]

    def nbformat_version(r, nb):
        nb["nbformat"] = r.choice([3, 2, 1, 5, "4", None, -1, 4.0, 10**30, [4], 4.5, True])

    def nbformat_minor(r, nb):
        nb["nbformat_minor"] = r.choice([None, "5", 10**9, -1, [5], 4.5])

    def top_metadata(r, nb):
        nb["metadata"] = r.choice([[], "x", None, {"kernelspec": 5}, {"language_info": [1]}, {"nbgrader": [1]}])

    def huge_markdown(r, nb):
        nb["cells"][0]["source"] = "x" * (MAX_NOTEBOOK - 200_000)

    def huge_code_comment(r, nb):
        cell = next(c for c in nb["cells"] if c.get("id") == r.choice(FUNCTION_ITEMS))
        cell["source"] += "\n# " + "a" * (6 * 2**20)

    def huge_metadata_string(r, nb):
        _pick_cell(r, nb)["metadata"]["agw"] = "a" * (20 * 2**20)

    def huge_list(r, nb):
        nb["metadata"]["agw"] = [0] * 3_000_000

    def many_keys(r, nb):
        nb["metadata"]["agw"] = {f"k{i}": i for i in range(200_000)}

    def surrogate_text(r, nb):
        cell = r.choice([c for c in nb["cells"] if c.get("id") in ("checkpoint_sdpa", "causal_mask", "2de63b84")])
        cell["source"] = r.choice(["\ud800", "answer \udfff here", "=HYPERLINK(\"x\")\ud83d"]) + cell["source"]
        if r.random() < 0.3:
            cell["metadata"]["\ud800"] = "\udfff"

    def manual_answer_types(r, nb):
        for c in nb["cells"]:
            if c.get("id") == "checkpoint_sdpa":
                c["source"] = r.choice([["a", 1], 5, None, {"a": 1}, ["x" * 10**6], [""] * 10_000])

    def attachments(r, nb):
        nb["cells"][0]["attachments"] = r.choice([5, "x", {"a.png": {"image/png": 5}}, [None]])

    return {name: fn for name, fn in locals().items() if callable(fn) and not name.startswith("_")}


def notebook_mutations(rng: random.Random, base: bytes) -> list[tuple[str, bytes]]:
    """Every byte and structure mutator once, then random draws (some chaining several) up to N_NOTEBOOK_MUTATIONS."""
    byte_muts = _byte_mutations(rng, base)
    struct_muts = _structure_mutations(json.loads(base))

    def structure(names: list[str], r: random.Random) -> bytes:
        nb = json.loads(base)
        for cell in nb["cells"]:
            cell["source"] = "".join(cell["source"])  # nbformat saves lines; Jupyter reads either
        for name in names:
            try:
                result = struct_muts[name](r, nb)
            except (AttributeError, IndexError, KeyError, TypeError, StopIteration):
                continue  # an earlier mutation left nothing this one applies to
            if result is not None:
                nb = result
        return json.dumps(nb).encode()  # no indent: the C encoder

    out = []
    for name, fn in byte_muts.items():
        out.append((f"nb_{name}", fn(rng, base)))
    for name in struct_muts:
        out.append((f"nb_{name}", structure([name], rng)))
    nb3 = nbformat.convert(nbformat.reads(base.decode(), as_version=4), 3)
    v3 = nbformat.writes(nb3, version=nbformat.NO_CONVERT)
    out.append(("nb_nbformat3", v3.encode()))
    v3_bad = json.loads(v3)
    v3_bad["worksheets"][0]["cells"][3]["input"] = [1, None]
    v3_bad["worksheets"][0]["cells"][5]["metadata"] = ["x"]
    out.append(("nb_nbformat3_malformed", json.dumps(v3_bad).encode()))
    out.append(("nb_nbformat3_v4_body", base.replace(b'"nbformat": 4', b'"nbformat": 3', 1)))
    cheap_bytes = [n for n in byte_muts if n not in ("oversize", "exactly_max_size") and not n.startswith("deep_")]
    cheap_bytes.append("deep_nesting")
    cheap_structs = [n for n in struct_muts if not n.startswith("huge") and n not in ("many_keys", "many_cells")]
    while len(out) < N_NOTEBOOK_MUTATIONS:
        i = len(out)
        if rng.random() < 0.45:
            out.append((f"nb_random{i:03d}_bytes", byte_muts[rng.choice(cheap_bytes)](rng, base)))
        else:
            names = rng.sample(cheap_structs, rng.choice([1, 1, 2, 3]))
            data = structure(names, rng)
            if rng.random() < 0.2:
                data = byte_muts[rng.choice(["flip_bytes", "flip_bit", "truncate_tail", "invalid_utf8"])](rng, data)
            out.append((f"nb_random{i:03d}_struct", data))
    return out


# ---------------------------------------------------------------------------------------------------
# The class, the two batches, and what they wrote.

def honest_students() -> dict[str, dict]:
    """Honest work on the same notebook (complete, partly wrong, untouched) and one on another notebook."""
    demo = demo_students.load_students()
    honest = {"honest_complete": {D06: {"*": "solution"}}, "honest_untouched": {D06: {}},
              "honest_day01": {D01: {"*": "solution"}}}
    for name in ("cleo_no_scaling", "dev_inverted_mask", "eli_query_softmax", "fay_minus_1e9", "gus_mask_shifted"):
        honest[f"honest_{name}"] = {D06: demo[name][D06]}
    return honest


def start_batch(submitted: Path, out: Path, course_file: Path, workers: int = 2):
    """Start grading SUBMITTED into OUT in a subprocess; `finish_batch` waits for it and reads what it wrote."""
    proc = subprocess.Popen([sys.executable, "-c", BATCH_SCRIPT, str(course_file), str(submitted), str(out), str(workers)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out, time.monotonic()


def finish_batch(batch) -> dict:
    proc, out, started = batch
    try:
        stdout, stderr = proc.communicate(timeout=BATCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr = f"timed out after {BATCH_TIMEOUT} s\n{stderr}"
    lines = [ln for ln in stdout.splitlines() if ln.startswith("AGW-BATCH ")]
    report = json.loads(lines[-1][len("AGW-BATCH "):]) if lines else {"summary": None, "error": None}
    report.update(returncode=proc.returncode, stderr=stderr[-4000:], wall=time.monotonic() - started)
    if report["error"] is None and proc.returncode != 0:
        report["error"] = f"exit code {proc.returncode}\n{stderr[-4000:]}"
    db_path = out / "gradebook.db"
    report["details"], report["integrity"] = {}, None
    if db_path.exists():
        db = sqlite3.connect(db_path)
        try:
            report["integrity"] = db.execute("PRAGMA integrity_check").fetchone()[0]
            report["details"] = {s: json.loads(d) for s, d in db.execute("SELECT student_id, detail FROM submissions")}
        except sqlite3.DatabaseError as exc:
            report["integrity"] = f"{type(exc).__name__}: {exc}"
        finally:
            db.close()
    return report


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    from autograder import reference

    course = load_course()
    cases = reference.build_cases(course, course.notebook(D06))  # names, inputs, public or hidden: no solution run
    rng = random.Random(SEED)
    tmp = tmp_path_factory.mktemp("fuzz")
    course_file = fast_course_file(tmp)
    honest = honest_students()
    base = nbformat.writes(demo_students.make_notebook(course.notebook(D06), {})).encode()
    nb_mutants = notebook_mutations(rng, base)
    attacks = event_attacks(rng, cases)
    entries = ([("honest", label, edits) for label, edits in honest.items()]
               + [("notebook", label, data) for label, data in nb_mutants]
               + [("events", label, edits) for label, edits, _ in attacks])
    rng.shuffle(entries)  # honest students spread through the batch (graded in name order), beside every kind of attack
    names = {label: f"fz{i:03d}_{label}" for i, (_, label, _) in enumerate(entries)}
    kinds = {names[label]: kind for kind, label, _ in entries}

    alone = tmp / "alone"
    demo_students.write_class(alone, {names[label]: edits for label, edits in honest.items()})
    alone_run = start_batch(alone, tmp / "alone-out", course_file, workers=1)  # one worker: the same grading, less to start

    submitted = tmp / "submitted"  # written while the honest students are graded alone
    for kind, label, payload in entries:
        student = names[label]
        if kind == "notebook":
            path = submitted / student / course.notebook(D06).path
            path.parent.mkdir(parents=True)
            path.write_bytes(payload)
        else:
            demo_students.write_class(submitted, {student: payload if kind == "honest" else {D06: payload}})
    baseline = finish_batch(alone_run)
    batch = finish_batch(start_batch(submitted, tmp / "out", course_file))
    shutil.rmtree(submitted)  # 160 MiB of notebooks, a few of them near the size limit: no test reads them again
    return {"alone": baseline, "batch": batch, "names": names, "kinds": kinds, "cases": cases, "out": tmp / "out",
            "breakers": [names[label] for label, _, breaks in attacks if breaks],
            "honest": [names[label] for label in honest]}


def _require_complete(run: dict) -> None:
    if run["error"]:
        pytest.fail(f"the batch did not complete:\n{run['error'][-3000:]}", pytrace=False)


def _scores(detail: dict) -> dict[str, float]:
    return {item["id"]: item["score"] for item in detail["items"]}


def _attackers(fuzz) -> list[str]:
    return [s for s, kind in fuzz["kinds"].items() if kind != "honest"]


# ---------------------------------------------------------------------------------------------------

def test_honest_students_alone(fuzz):
    """Harness check: the honest students alone are graded in full, as expected."""
    alone = fuzz["alone"]
    _require_complete(alone)
    assert set(alone["details"]) == set(fuzz["honest"])
    assert sum(_scores(alone["details"][fuzz["names"]["honest_complete"]]).values()) == 8
    assert alone["integrity"] == "ok"


def test_batch_completes_and_records_everyone(fuzz):
    """Does the batch exit 0 with every submission, honest or hostile, recorded in the gradebook?"""
    batch = fuzz["batch"]
    _require_complete(batch)
    assert batch["returncode"] == 0, batch["stderr"]
    assert batch["summary"]["graded"] == len(fuzz["kinds"])
    missing = sorted(set(fuzz["kinds"]) - set(batch["details"]))
    assert not missing, f"{len(missing)} submissions not recorded: {missing[:20]}"


def test_honest_students_graded_as_alone(fuzz):
    """Is every honest student graded exactly as when graded without the attackers (scores and mistakes)?"""
    _require_complete(fuzz["alone"])
    details = fuzz["batch"]["details"]
    differ = {}
    for student in fuzz["honest"]:
        if student not in details:
            differ[student] = "not recorded"
            continue
        alone = fuzz["alone"]["details"][student]
        got = {i["id"]: (i["score"], i["mistake"]) for i in details[student]["items"]}
        want = {i["id"]: (i["score"], i["mistake"]) for i in alone["items"]}
        if got != want:
            messages = {i["id"]: i["message"] for i in details[student]["items"] if i["message"]}
            differ[student] = {"beside attackers": got, "alone": want, "messages": messages}
    if fuzz["batch"]["error"] and not differ:
        _require_complete(fuzz["batch"])
    assert not differ, json.dumps(differ, indent=1)[:5000]


def test_attackers_earn_nothing(fuzz):
    """Does no mutated stub notebook, and no forged event, earn a single point?"""
    details = fuzz["batch"]["details"]
    earned = {s: {k: v for k, v in _scores(details[s]).items() if v} for s in _attackers(fuzz) if s in details}
    earned = {s: v for s, v in earned.items() if v}
    if fuzz["batch"]["error"] and not earned:
        _require_complete(fuzz["batch"])
    assert not earned, f"unearned points: {json.dumps(earned, indent=1)[:4000]}"


def test_gradebook_integrity(fuzz):
    """Does the gradebook pass SQLite's integrity check after the batch?"""
    assert fuzz["batch"]["integrity"] == "ok"
    _require_complete(fuzz["batch"])


def test_forged_sandbox_record_never_stored(fuzz):
    """Is the stored "sandbox" field always what the worker set up, never a record the sandbox sent?"""
    _require_complete(fuzz["alone"])
    honest_record = fuzz["alone"]["details"][fuzz["names"]["honest_complete"]]["sandbox"]
    bad = {}
    for student, detail in fuzz["batch"]["details"].items():
        record = detail.get("sandbox")
        if FORGED in json.dumps(record) or record not in ({}, honest_record):
            bad[student] = record
    if fuzz["batch"]["error"] and not bad:
        _require_complete(fuzz["batch"])
    assert not bad, f"sandbox records not set up by the worker: {json.dumps(bad)[:3000]}"


def _hidden_fingerprints(cases: dict) -> list[str]:
    """What the attacks' leak text would contain of each hidden case: its marker, and its arrays' first bytes."""
    marks = []
    for item in cases.values():
        for case in item:
            if case["public"]:
                continue
            marks.append(f"LEAK[{case['name']}]")
            for value in case["inputs"].values():
                if hasattr(value, "tobytes") and value.nbytes >= 8:
                    marks.append(value.tobytes()[:16].hex())
    return marks


def test_no_hidden_input_in_any_output(fuzz):
    """Does no hidden case's input (sent back by forged cell or case errors) reach any result, page or CSV?"""
    marks = _hidden_fingerprints(fuzz["cases"])
    found = {}
    for student, detail in fuzz["batch"]["details"].items():
        text = json.dumps(detail)
        hits = [m for m in marks if m in text]
        if hits:
            found[f"gradebook:{student}"] = hits[:5]
    out = fuzz["out"]
    for path in list(out.glob("results/*.json")) + list(out.glob("feedback/*.html")) + list(out.glob("*.csv")) + list(out.glob("*.html")):
        text = path.read_text(errors="replace")
        hits = [m for m in marks if m in text]
        if hits:
            found[str(path.relative_to(out))] = hits[:5]
    if fuzz["batch"]["error"] and not found:
        _require_complete(fuzz["batch"])
    assert not found, f"hidden-case inputs leaked into: {json.dumps(found, indent=1)[:4000]}"


def test_protocol_breaks_are_named(fuzz):
    """Does every attack that certainly breaks the protocol (garbage bytes, absurd lengths, unknown kinds, a list
    index, ...) end with "the submission broke the grader's protocol" in that student's result?"""
    details = fuzz["batch"]["details"]
    unnamed = [s for s in fuzz["breakers"] if s in details and PROTOCOL_PHRASE not in json.dumps(details[s])]
    if fuzz["batch"]["error"] and not unnamed:
        _require_complete(fuzz["batch"])
    assert not unnamed, (f"{len(unnamed)} of {len(fuzz['breakers'])} protocol breakers not named as such, e.g. "
                         f"{unnamed[0]}: {json.dumps(details[unnamed[0]])[:1500]}")


def test_attacks_reached_the_pipe(fuzz):
    """Harness check: every event attack found a pipe to write to (else it would prove nothing)."""
    details = fuzz["batch"]["details"]
    blind = [s for s, d in details.items() if NO_PIPE in json.dumps(d)]
    assert not blind, blind


def test_no_grader_internal_failures(fuzz):
    """Is every hostile submission judged by the grader's rules (unreadable, a limit, a broken protocol), never
    by the safety net that records a grader's own exception or a dead worker as that submission's result?"""
    details = fuzz["batch"]["details"]
    failed = {s: d["message"][:300] for s, d in details.items()
              if any(phrase in json.dumps(d) for phrase in GRADER_FAILURES)}
    if fuzz["batch"]["error"] and not failed:
        _require_complete(fuzz["batch"])
    assert not failed, json.dumps(failed, indent=1)[:4000]


def test_grader_peak_memory(fuzz):
    """Does the grading process itself stay under GRADER_PEAK_BOUND_MB, whatever the sandboxes send?"""
    batch, alone = fuzz["batch"], fuzz["alone"]
    note = (f"grader peak: honest alone {alone.get('grader_peak_mb', 0):.0f} MB, fuzz batch {batch.get('grader_peak_mb', 0):.0f} MB; "
            f"largest child (workers and sandboxes): {alone.get('children_peak_mb', 0):.0f} / {batch.get('children_peak_mb', 0):.0f} MB; "
            f"batch {batch['wall']:.0f} s, alone {alone['wall']:.0f} s")
    print(note)
    assert "grader_peak_mb" in batch, f"the batch printed no memory report:\n{batch.get('stderr', '')}"
    assert batch["grader_peak_mb"] < GRADER_PEAK_BOUND_MB, note
    _require_complete(batch)


def test_worker_peak_memory(fuzz):
    """Does every grading worker itself (not its sandboxes) stay under WORKER_PEAK_BOUND_MB?"""
    _require_complete(fuzz["batch"])
    summary = fuzz["batch"]["summary"]
    if "worker_peak_mb" not in summary:
        pytest.skip("grade_all's summary has no 'worker_peak_mb' yet (the largest peak RSS of a worker process itself)")
    alone = (fuzz["alone"]["summary"] or {}).get("worker_peak_mb")
    print(f"worker peak: honest alone {alone} MB, fuzz batch {summary['worker_peak_mb']} MB")
    assert summary["worker_peak_mb"] < WORKER_PEAK_BOUND_MB, f"worker peak {summary['worker_peak_mb']} MB (alone: {alone} MB)"
