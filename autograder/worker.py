"""The fork server: pay the torch import once, give every submission a fresh sandbox.

A worker (`python -m autograder.worker`) first locks itself in an allow-listed
root (`autograder.jail`), imports numpy, torch, IPython and matplotlib once,
then handles each job in a fresh fork of that clean process (so nothing of one
job, and no reference piece, is ever in the memory of the next job's
sandboxes). The job's fork starts a sandboxed child (`autograder.sandbox`),
reads its events, checks each against the protocol (`Protocol`), enforces the
CPU-time limits (with wall-clock backstops several times larger), and kills the
sandbox's whole PID namespace when it ends.

When a cell hits a limit the notebook is run again once; when it hits it
again, or kills its process, the worker records why and runs the notebook
without that cell, so one bad cell costs only what depends on it. A sandbox
that breaks the protocol is ended and costs that submission only.

The worker never keeps expected outputs: it holds the job (case inputs) and
returns the checked plain-data outputs. Reference pieces an item builds on stay
with the grader until that item's fork asks for them.
"""
from __future__ import annotations

import os
import resource
import select
import signal
import struct
import sys
import time

from . import jail, wire

READ_CHUNK = 1 << 20
POLL_SECONDS = 0.25
MAX_FRAME = wire.MAX_ARRAY_BYTES + (1 << 20)
"""Largest event: a case's outputs (one array at most MAX_ARRAY_BYTES) and a little JSON."""
MAX_SMALL_EVENT = 64 * 1024
"""Largest event of any other kind (the printed output of "done" is allowed its cap on top)."""
MAX_JOB_BYTES = 512 * 1024 * 1024
"""Most bytes one sandbox may send in all."""
MAX_OUTPUT_BYTES = 128 * 1024 * 1024
"""Most bytes of case outputs kept for one notebook; later cases beyond it are failed, not stored."""
WORKER_MEMORY_MB = 3072
"""Address space a worker may use beyond its sandboxes' own limit."""
PROTOCOL = "the submission broke the grader's protocol"
EVENT_LIMITS = wire.Limits(message_bytes=MAX_FRAME, header_bytes=1 << 20, depth=16, elements=40_000, buffers=4096)
"""Decoding limits for one event from a sandbox (a case's outputs are at most 10,000 values deep 8)."""


def preload(notebook_ids: list[str] | None = None) -> None:
    """Import what every notebook needs, once, before any fork."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import IPython.core.interactiveshell  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (the first optimizer step imports it: 1 s in every sandbox otherwise)
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401

    from . import exercise, sandbox

    sandbox.prepare_shell()
    if notebook_ids is None:
        from . import config

        notebook_ids = [nb.id for nb in config.load_course().notebooks]
    for nb_id in notebook_ids:
        try:
            exercise.exercise_module(nb_id)
        except ModuleNotFoundError:
            pass


class Violation(Exception):
    """The sandbox said something the protocol does not allow."""


class _Child:
    """One forked sandbox, its two pipes, and the bytes read from it so far."""

    def __init__(self, job: dict):
        from . import sandbox

        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid_ns = jail.MODE in ("root", "rootless")
        if pid_ns:
            jail.unshare(jail.CLONE_NEWPID, "a PID namespace for the sandbox")
        pid = os.fork()
        if pid == 0:
            os.close(up_r)
            os.close(down_w)
            sandbox.child_main(up_w, down_r, job)  # never returns
        if pid_ns:
            _restore_pid_namespace()
        os.close(up_w)
        os.close(down_r)
        self.pid, self.fd, self.down = pid, up_r, down_w
        self.buffer, self.eof, self.received = bytearray(), False, 0
        self.peak_mb = 0.0

    def frames(self, deadline_for):
        """Yield ("frame", payload), then ("timeout"|"dead"|"violation", detail) once and stop."""
        while True:
            while len(self.buffer) >= 8:
                (size,) = struct.unpack("<Q", self.buffer[:8])
                if size > MAX_FRAME:
                    yield "violation", f"an event of {size} bytes (at most {MAX_FRAME})"
                    return
                if len(self.buffer) < 8 + size:
                    break
                payload = bytes(self.buffer[8:8 + size])
                del self.buffer[:8 + size]
                yield "frame", payload
            if self.eof:
                yield "dead", None
                return
            remaining = deadline_for() - time.monotonic()
            if remaining <= 0:
                yield "timeout", None
                return
            ready, _, _ = select.select([self.fd], [], [], min(remaining, POLL_SECONDS))
            if ready:
                chunk = os.read(self.fd, READ_CHUNK)
                self.received += len(chunk)
                if self.received > MAX_JOB_BYTES:
                    yield "too much", None
                    return
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True
            else:
                yield "tick", None

    def send(self, value) -> None:
        try:
            wire.write_frame(self.down, wire.encode(value))
        except OSError:
            pass  # the sandbox is gone; its events say what happened

    def cpu_seconds(self) -> float:
        """CPU time of the sandbox process (all its threads, and the children it has reaped)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks = sum(int(x) for x in fields[11:15])
            return ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self) -> int | None:
        """Kill the child's whole tree and reap it; remember its peak memory.

        The child is the first process of its PID namespace (in a jail), so
        killing it ends every process in the namespace, whatever they did to
        their group or parent-death signal; outside a jail its group is killed.
        """
        for target in (lambda: os.kill(self.pid, signal.SIGKILL), lambda: os.killpg(self.pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (self.fd, self.down):
            os.close(fd)
        _, status, usage = os.wait4(self.pid, 0)
        self.peak_mb = usage.ru_maxrss / 1024
        return status


def _restore_pid_namespace() -> None:
    """Send this process's later children (and threads) back to its own PID namespace."""
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        if jail.libc().setns(fd, jail.CLONE_NEWPID) != 0:
            raise jail.JailError(0, "setns back to the worker's PID namespace failed")
    finally:
        os.close(fd)


def _text(event: dict, key: str, limit: int) -> str:
    value = event.get(key, "")
    if type(value) is not str:
        raise Violation(f"{key} is not text")
    return value[:limit]


class Protocol:
    """What a sandbox may send, in which order, checked on the trusted side.

    ready, then for each cell to run (in order) `cell start` and `cell ok|error`,
    then for each item (in order) `item start`, at most one `need`, each of its
    cases at most once, and `item end|missing|killed` (or `retry`, once, which
    starts the item again), then `done`. Anything else is a `Violation`.
    """

    KEYS = {
        "ready": {"ev"},
        "cell": {"ev", "index", "status", "error"},
        "item": {"ev", "key", "status", "error"},
        "need": {"ev", "key"},
        "case": {"ev", "key", "case", "outputs", "error", "error_type"},
        "done": {"ev", "stdout"},
    }

    def __init__(self, cells: list[int], items: list[dict], output_limit: int):
        self.cells, self.items = cells, items
        self.output_limit = output_limit
        self.state = "new"
        self.cell_at = self.item_at = 0
        self.open_cell: int | None = None
        self.open_item: dict | None = None
        self.seen_cases: set[str] = set()
        self.asked = False
        self.retried: set[str] = set()

    def check(self, payload: bytes) -> dict:
        """Decode and check one event; returns it, or raises Violation."""
        try:
            event = wire.decode(payload, EVENT_LIMITS)
        except wire.WireError as exc:
            raise Violation(f"an unreadable event ({exc})") from None
        if type(event) is not dict or type(event.get("ev")) is not str or event["ev"] not in self.KEYS:
            raise Violation("an event of an unknown kind")
        kind = event["ev"]
        extra = set(event) - self.KEYS[kind]
        if extra:
            raise Violation(f"a {kind} event with unknown fields")
        small = MAX_SMALL_EVENT + (4 * self.output_limit if kind == "done" else 0)
        if kind != "case" and len(payload) > small:
            raise Violation(f"a {kind} event of {len(payload)} bytes")
        getattr(self, f"_{kind}")(event)
        return event

    def _ready(self, event):
        if self.state != "new":
            raise Violation("a second ready")
        self.state = "cells"

    def _cell(self, event):
        index, status = event.get("index"), event.get("status")
        if self.state != "cells" or type(index) is not int:
            raise Violation("a cell event out of place")
        if status == "start":
            if self.open_cell is not None or index not in self.cells[self.cell_at:]:
                raise Violation(f"cell {index} started out of order")
            self.cell_at = self.cells.index(index, self.cell_at) + 1
            self.open_cell = index
        elif status in ("ok", "error"):
            if index != self.open_cell:
                raise Violation(f"cell {index} ended without starting")
            _text(event, "error", 4000)
            self.open_cell = None
        else:
            raise Violation("a cell event of an unknown status")

    def _item(self, event):
        key, status = event.get("key"), event.get("status")
        if self.state not in ("cells", "items") or self.open_cell is not None or type(key) is not str:
            raise Violation("an item event out of place")
        self.state = "items"
        if status == "start":
            if self.open_item is not None or self.item_at >= len(self.items) or self.items[self.item_at]["key"] != key:
                raise Violation(f"item {key[:80]!r} started out of order")
            self.open_item = self.items[self.item_at]
            self.item_at += 1
            self.seen_cases, self.asked = set(), False
            return
        if self.open_item is None or self.open_item["key"] != key:
            raise Violation(f"item {key[:80]!r} ended without starting")
        if status == "retry":
            if key in self.retried:
                raise Violation(f"item {key[:80]!r} retried twice")
            self.retried.add(key)
            self.item_at -= 1
        elif status == "killed":
            _text(event, "error", 1000)
        elif status not in ("end", "missing"):
            raise Violation("an item event of an unknown status")
        self.open_item = None

    def _need(self, event):
        item = self.open_item
        if item is None or event.get("key") != item["key"] or self.asked or not item.get("needs"):
            raise Violation("a request for reference pieces out of place")
        self.asked = True

    def _case(self, event):
        item, name = self.open_item, event.get("case")
        if item is None or event.get("key") != item["key"]:
            raise Violation("a case event outside its item")
        if type(name) is not str or name not in item["case_names"] or name in self.seen_cases:
            raise Violation("a case event for an unknown case, or twice for one case")
        self.seen_cases.add(name)
        _text(event, "error", 4000)
        _text(event, "error_type", 200)
        if event.get("outputs") is not None and type(event["outputs"]) is not dict:
            raise Violation("case outputs that are not a record")

    def _done(self, event):
        if self.open_cell is not None or self.open_item is not None or self.item_at != len(self.items):
            raise Violation("done before every item was graded")
        if self.state == "done":
            raise Violation("a second done")
        _text(event, "stdout", 4 * self.output_limit)
        self.state = "done"


def features() -> dict:
    """The protections this worker set up itself (never what a sandbox claims)."""
    if jail.MODE == "none":
        return {"mode": "none", "root": "host", "namespaces": [], "user": "same"}
    return {
        "mode": jail.MODE, "root": "allow-list", "namespaces": ["ipc", "mount", "net", "pid", "user", "uts"]
        if jail.MODE == "rootless" else ["ipc", "mount", "net", "pid", "uts"],
        "user": "nobody" if jail.MODE == "root" else "unprivileged (no capabilities)",
    }


def _output_size(outputs) -> int:
    if isinstance(outputs, dict):
        return sum(_output_size(v) for v in outputs.values())
    if isinstance(outputs, list):
        return sum(_output_size(v) for v in outputs)
    if isinstance(outputs, wire.Tensor):
        return outputs.array.nbytes
    nbytes = getattr(outputs, "nbytes", None)
    return nbytes if isinstance(nbytes, int) else len(str(outputs)) if isinstance(outputs, str) else 8


def run_job(job: dict, ask=None) -> dict:
    """Execute a job, restarting past cells and items that kill their process.

    `ask(item_key)` gives the reference pieces an item builds on (default: the
    job's own "inject"). Returns {"cells": {index: {"status", "error"}},
    "items": {key: {...}}, "stdout", "features", "seconds", "cpu_seconds", "peak_mb"}.
    """
    if ask is None:
        inject = job.get("inject", {})
        ask = lambda key: inject.get(key, {})  # noqa: E731
    limits = job["limits"]
    from .sandbox import backstop

    cells = {c["index"]: {"status": "not run", "error": ""} for c in job["cells"]}
    items = {it["key"]: {"status": "pending", "error": "", "cases": {}} for it in job["items"]}
    case_names = {it["key"]: {c["name"] for c in it["cases"]} for it in job["items"]}
    skip: set[int] = set(job.get("skip", []))
    tries: dict[int, int] = {}
    stdout, peak_mb, cpu_total, kept_bytes = "", 0.0, 0.0, 0
    started = time.monotonic()
    budget = backstop(limits["notebook_seconds"] + limits["item_seconds"] * max(1, len(job["items"])) * 2)
    while True:
        pending = [dict(it, needs=bool(it.get("needs")), case_names=case_names[it["key"]])
                   for it in job["items"] if items[it["key"]]["status"] == "pending"]
        attempt = {k: v for k, v in job.items() if k != "inject"}
        attempt.update(skip=sorted(skip), items=[{k: v for k, v in it.items() if k != "case_names"} for it in pending])
        protocol = Protocol([c["index"] for c in job["cells"] if c["index"] not in skip], pending, limits["output_kb"] * 1024)
        child = _Child(attempt)
        phase: tuple[str, object] = ("start", None)
        phase_cpu_limit, phase_wall = limits["cell_seconds"], time.monotonic() + backstop(limits["cell_seconds"])
        phase_cpu_start = 0.0
        finished, outcome, detail = False, "dead", None
        try:
            for kind, payload in child.frames(lambda: min(phase_wall, started + budget)):
                if phase[0] in ("start", "cell") and child.cpu_seconds() - phase_cpu_start > phase_cpu_limit:
                    outcome = "cpu"
                    break
                if kind == "tick":
                    continue
                if kind != "frame":
                    outcome, detail = kind, payload
                    break
                try:
                    event = protocol.check(payload)
                except Violation as exc:
                    outcome, detail = "violation", str(exc)
                    break
                ev = event["ev"]
                if ev == "cell":
                    index = event["index"]
                    if event["status"] == "start":
                        phase = ("cell", index)
                        phase_cpu_start = child.cpu_seconds()
                        phase_cpu_limit = limits["cell_seconds"]
                        phase_wall = time.monotonic() + backstop(limits["cell_seconds"])
                    else:
                        cells[index] = {"status": event["status"], "error": event.get("error", "")[:1000]}
                        phase = ("between", None)
                        phase_wall = time.monotonic() + backstop(limits["cell_seconds"])
                elif ev == "item":
                    key, status = event["key"], event["status"]
                    if status == "start":
                        phase = ("item", key)
                        items[key]["cases"] = {}
                        phase_wall = time.monotonic() + 2 * backstop(limits["item_seconds"]) + 5
                    elif status == "retry":
                        items[key]["cases"] = {}
                    else:
                        items[key]["status"] = {"end": "done"}.get(status, status)
                        if status == "killed":
                            items[key]["error"] = event.get("error", "")[:1000]
                        phase = ("between", None)
                        phase_wall = time.monotonic() + backstop(limits["cell_seconds"])
                elif ev == "need":
                    child.send(ask(event["key"]))
                elif ev == "case":
                    outputs = event.get("outputs")
                    size = _output_size(outputs)
                    error = event.get("error", "")[:1000]
                    if outputs is not None and kept_bytes + size > MAX_OUTPUT_BYTES:
                        outputs, error = None, (f"the outputs of this notebook's cases pass {MAX_OUTPUT_BYTES >> 20} MiB "
                                                "in all; far larger than any expected output")
                    kept_bytes += size if outputs is not None else 0
                    items[event["key"]]["cases"][event["case"]] = {
                        "outputs": outputs, "error": error, "error_type": event.get("error_type", "")[:100],
                    }
                elif ev == "done":
                    stdout = event.get("stdout", "")
                    finished = True
                    break
        finally:
            cpu_total += child.cpu_seconds()
            status = child.kill()
        peak_mb = max(peak_mb, child.peak_mb)
        if finished:
            break
        what, which = phase
        if outcome in ("violation", "too much"):
            reason = (f"{PROTOCOL} ({detail}); it was stopped here" if outcome == "violation" else
                      f"the outputs of this notebook pass {MAX_JOB_BYTES >> 20} MiB in all, far larger than any "
                      "expected output; it was stopped here")
            for it in job["items"]:
                if items[it["key"]]["status"] == "pending":
                    items[it["key"]].update(status="killed", error=reason, cases={})
            if what == "cell":
                cells[which] = {"status": "killed", "error": reason}
            break
        reason = _reason(outcome, status, limits, phase)
        hit_limit = outcome in ("cpu", "timeout")
        if what == "cell":
            tries[which] = tries.get(which, 0) + 1
            if hit_limit and tries[which] == 1:
                pass  # a limit may be bad luck: run the notebook again, this cell included, once
            else:
                cells[which] = {"status": "killed", "error": reason + (", twice" if hit_limit else "")}
                skip.add(which)
        elif what == "item":
            items[which].update(status="killed", error=reason, cases={})
        else:
            for it in pending:
                if items[it["key"]]["status"] == "pending":
                    items[it["key"]].update(status="killed", error=reason)
            break
        if time.monotonic() - started > budget:
            for it in job["items"]:
                if items[it["key"]]["status"] == "pending":
                    items[it["key"]].update(status="killed", error="not graded: the notebook used up its time budget")
            break
    return {
        "cells": {str(k): v for k, v in cells.items()}, "items": items, "stdout": stdout, "features": features(),
        "seconds": time.monotonic() - started, "cpu_seconds": round(cpu_total, 3), "peak_mb": round(peak_mb, 1),
        "worker_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _reason(kind: str, status: int | None, limits: dict, phase) -> str:
    from .sandbox import RUNTIME_FAILED, backstop

    what, _ = phase
    limit = limits["item_seconds"] if what == "item" else limits["cell_seconds"]
    if kind == "cpu":
        return f"used up its {limit:g} s of CPU time (an endless loop, or far too slow?)"
    if kind == "timeout":
        return (f"stopped after {backstop(limit):g} s of wall time (it waits or sleeps instead of computing; "
                "an endless loop?)")
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return "the process was killed (out of memory, or it killed itself)"
        if sig == signal.SIGXCPU:
            return "the process used up its CPU time"
        return f"the process crashed ({signal.Signals(sig).name})"
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    if code == RUNTIME_FAILED:
        return ("the grader's runtime in the sandbox failed here (does the code replace builtins, "
                "sys or the grader's modules?)")
    return f"the process ended itself (exit code {code}) instead of returning"


def _read_exact(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(stream) -> object:
    (size,) = struct.unpack("<Q", _read_exact(stream, 8))
    if size > wire.TRUSTED.message_bytes:
        raise EOFError
    return wire.decode(_read_exact(stream, size), wire.TRUSTED)  # only between the grader and its workers


EXIT_NO_JOB = 9
_PRELOADED = False


def run_reference(job: dict) -> dict:
    """Run a trusted job (the reference solution and its known mistakes) from this process, outside a jail.

    The answer keys need autograder/hidden, which no jail shows; no student code runs here.
    """
    global _PRELOADED
    if not _PRELOADED:
        preload([job["items"][0]["notebook"]] if job.get("items") else [])
        _PRELOADED = True
    return run_job(job)


def serve(argv: list[str]) -> None:
    """Jail this process, then answer each job read from stdin on stdout, until stdin closes.

    argv: `--mode root|rootless|none` and the ids of the notebooks to preload.
    """
    mode, notebook_ids = argv[1], argv[2:]
    try:
        jail.enter(mode)
    except OSError as exc:
        sys.stderr.write(f"the grading worker could not build its sandbox: {exc}\n")
        os._exit(3)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the result stream
    preload(notebook_ids)
    limit = resource.getrlimit(resource.RLIMIT_AS)[1]
    if limit == resource.RLIM_INFINITY:
        mb = 1 << 20
        size = WORKER_MEMORY_MB * mb + _address_space()
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    wire.write_frame(stdout.fileno(), wire.encode({"ready": True, "features": features()}))
    while True:
        select.select([stdin.fileno()], [], [])
        pid = os.fork()
        if pid == 0:
            _handle_one(stdin, stdout)  # never returns
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_NO_JOB:
            os._exit(0)  # nothing to clean up: skip the interpreter's (slow, torch-sized) shutdown
        if code != 0:
            wire.write_frame(stdout.fileno(), wire.encode(
                {"result": {"fatal": f"the grading worker failed on this notebook (exit status {code})"}}))


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _handle_one(stdin, stdout) -> None:
    """In a fresh fork of the worker: read one job, run it, answer, exit."""
    code = 0
    try:
        try:
            job = _read_frame(stdin)
        except EOFError:
            os._exit(EXIT_NO_JOB)

        def ask(key: str) -> dict:
            wire.write_frame(stdout.fileno(), wire.encode({"need": key}))
            answer = _read_frame(stdin)
            return answer if isinstance(answer, dict) else {}

        try:
            result = run_job(job, ask)
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            result = {"fatal": f"{type(exc).__name__}: {exc}"}
        wire.write_frame(stdout.fileno(), wire.encode({"result": result}))
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv)


class Pool:
    """Worker processes (`python -m autograder.worker`), each used by one thread at a time.

    `sandbox=False` (the instructor's explicit `--no-sandbox`) runs workers without a jail.
    """

    def __init__(self, n: int, notebooks: list[str] | None = None, sandbox: bool = True, cwd: str | None = None):
        import queue
        import subprocess

        if notebooks is None:
            from . import config

            notebooks = [nb.id for nb in config.load_course().notebooks]
        self._subprocess = subprocess
        self.mode = jail.wanted_mode() if sandbox else "none"
        self.notebooks = list(notebooks)
        self.idle: "queue.Queue[subprocess.Popen]" = queue.Queue()
        self.procs = []
        self.cwd = cwd
        self.peak_mb = 0.0
        self.waiting = set()  # started, greeting not read yet: the imports run while the caller works
        for _ in range(max(1, n)):
            proc = self._start()
            self.procs.append(proc)
            self.waiting.add(proc.pid)
            self.idle.put(proc)

    def _start(self):
        env = jail.worker_env()
        return self._subprocess.Popen(
            [sys.executable, "-m", "autograder.worker", self.mode, *self.notebooks], stdin=self._subprocess.PIPE,
            stdout=self._subprocess.PIPE, cwd=self.cwd or "/", env=env,
        )

    def _expect_ready(self, proc) -> None:
        try:
            hello = _read_frame(proc.stdout)
        except (EOFError, wire.WireError):
            raise RuntimeError("a grading worker failed to start (see the messages above)") from None
        if not isinstance(hello, dict) or not hello.get("ready"):
            raise RuntimeError("a grading worker sent an unexpected greeting")

    def run(self, job: dict) -> dict:
        """Run one job; never raises for anything a submission does (a failure is that job's "fatal")."""
        proc = self.idle.get()
        try:
            if proc.pid in self.waiting:
                self.waiting.discard(proc.pid)
                self._expect_ready(proc)
            inject = job.get("inject", {})
            self._write(proc, {k: v for k, v in job.items() if k != "inject"})
            while True:
                message = _read_frame(proc.stdout)
                if not isinstance(message, dict):
                    raise EOFError
                if "need" in message:
                    self._write(proc, inject.get(message["need"], {}) if isinstance(message["need"], str) else {})
                    continue
                result = message.get("result")
                if not isinstance(result, dict):
                    raise EOFError
                self.peak_mb = max(self.peak_mb, float(result.get("worker_peak_mb", 0.0) or 0.0))
                return result
        except (EOFError, OSError, RuntimeError, wire.WireError, struct.error):
            proc.kill()
            proc.wait()
            proc = self._start()
            self.waiting.add(proc.pid)
            return {"fatal": "the grading worker died; the submission was not graded"}
        finally:
            self.idle.put(proc)

    @staticmethod
    def _write(proc, value) -> None:
        payload = wire.encode(value)
        proc.stdin.write(struct.pack("<Q", len(payload)) + payload)
        proc.stdin.flush()

    def close(self) -> None:
        procs = list(self.idle.queue)
        for proc in procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except self._subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
