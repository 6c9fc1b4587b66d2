"""The fork server: pay the torch import once, give every submission a fresh sandbox.

A worker imports numpy, torch, IPython and matplotlib once, then for each job
forks a sandboxed child (`autograder.sandbox`), reads its events with wall-time
limits, and kills its whole process tree when it ends. When a cell or an item
kills its process (a hang, `os._exit`, a segfault, a memory bomb), the worker
records why, starts a fresh child that skips that cell or item, and carries
on, so one bad cell costs only what depends on it.

The worker never runs student code itself and never keeps expected outputs:
it holds only the job (case inputs), and returns the raw plain-data outputs.
Run as `python -m autograder.worker`: it reads jobs from stdin and writes
results to stdout, one framed message each.
"""
from __future__ import annotations

import os
import select
import signal
import struct
import sys
import time

from . import wire

READ_CHUNK = 1 << 20


def preload() -> None:
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

    from . import config, exercise, sandbox

    sandbox.prepare_shell()
    for nb in config.load_course().notebooks:
        try:
            exercise.exercise_module(nb.id)
        except ModuleNotFoundError:
            pass


class _Child:
    """One forked sandbox and the events read from it so far."""

    def __init__(self, job: dict):
        from . import sandbox

        rfd, wfd = os.pipe()
        job = dict(job, pid_namespace=sandbox.new_pid_namespace_for_children())
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            sandbox.child_main(wfd, job)  # never returns
        sandbox.restore_pid_namespace()
        os.close(wfd)
        self.pid, self.fd, self.buffer, self.eof = pid, rfd, b"", False
        self.stderr_bytes = 0

    def events(self, deadline_for):
        """Yield decoded events; yields ("timeout", None) or ("dead", None) and stops."""
        while True:
            while len(self.buffer) >= 8:
                (size,) = struct.unpack("<Q", self.buffer[:8])
                if size > wire.MAX_MESSAGE:
                    yield "garbled", "a message larger than the limit"
                    return
                if len(self.buffer) < 8 + size:
                    break
                payload, self.buffer = self.buffer[8:8 + size], self.buffer[8 + size:]
                try:
                    event = wire.decode(payload)
                except wire.WireError as exc:
                    yield "garbled", str(exc)
                    return
                if not isinstance(event, dict) or "ev" not in event:
                    yield "garbled", "an event without a type"
                    return
                yield "event", event
            if self.eof:
                yield "dead", None
                return
            remaining = deadline_for() - time.monotonic()
            if remaining <= 0:
                yield "timeout", None
                return
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, READ_CHUNK)
                if chunk:
                    self.buffer += chunk
                else:
                    self.eof = True

    def kill(self) -> int | None:
        """Kill the child's whole tree and reap it; remember its peak memory.

        With a PID namespace the child is its init, so killing it ends every
        process in the namespace, even one that left the process group or
        cleared its parent-death signal; without one, its process group is killed.
        """
        for target in (lambda: os.kill(self.pid, signal.SIGKILL), lambda: os.killpg(self.pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        os.close(self.fd)
        _, status, usage = os.wait4(self.pid, 0)
        self.peak_mb = usage.ru_maxrss / 1024
        return status


def run_job(job: dict) -> dict:
    """Execute a job, restarting past cells and items that kill their process.

    Returns {"cells": {index: {"status", "error"}}, "items": {id: {...}},
    "stdout": str, "features": {...}, "seconds": float}.
    """
    limits = job["limits"]
    cells = {c["index"]: {"status": "not run", "error": ""} for c in job["cells"]}
    items = {it["key"]: {"status": "pending", "error": "", "cases": {}} for it in job["items"]}
    skip: set[int] = set()
    stdout, features, peak_mb = "", {}, 0.0
    started = time.monotonic()
    budget = limits["notebook_seconds"] + limits["item_seconds"] * max(1, len(job["items"])) * 2
    while True:
        pending = [it for it in job["items"] if items[it["key"]]["status"] == "pending"]
        attempt = dict(job, skip=sorted(skip), items=pending)
        child = _Child(attempt)
        phase: tuple[str, object] = ("start", None)
        phase_deadline = time.monotonic() + limits["cell_seconds"]
        notebook_deadline = time.monotonic() + limits["notebook_seconds"]
        finished = False
        for kind, event in child.events(lambda: min(phase_deadline, started + budget)):
            if kind != "event":
                break
            ev = event.get("ev")
            if ev == "sandbox":
                features = event.get("features", {})
            elif ev == "cell" and event.get("index") in cells:
                index = event["index"]
                if event.get("status") == "start":
                    phase = ("cell", index)
                    phase_deadline = min(time.monotonic() + limits["cell_seconds"], notebook_deadline)
                else:
                    cells[index] = {"status": str(event.get("status")), "error": str(event.get("error", ""))[:1000]}
            elif ev == "item" and event.get("key") in items:
                item_id = event["key"]
                if event.get("status") == "start":
                    phase = ("item", item_id)
                    phase_deadline = time.monotonic() + limits["item_seconds"]
                elif event.get("status") == "missing":
                    items[item_id]["status"] = "missing"
                elif event.get("status") == "end":
                    items[item_id]["status"] = "done"
                    phase = ("between", None)
            elif ev == "case" and event.get("key") in items:
                items[event["key"]]["cases"][str(event.get("case"))] = {
                    "outputs": event.get("outputs"),
                    "error": str(event.get("error", ""))[:1000],
                    "error_type": str(event.get("error_type", ""))[:100],
                }
            elif ev == "done":
                stdout = str(event.get("stdout", ""))
                finished = True
                break
        else:
            kind = "dead"
        status = child.kill()
        peak_mb = max(peak_mb, child.peak_mb)
        if finished:
            break
        reason = _reason(kind, status, limits, phase, event if kind == "garbled" else None)
        what, which = phase
        if what == "cell":
            cells[which] = {"status": "killed", "error": reason}
            skip.add(which)
        elif what == "item":
            items[which].update(status="killed", error=reason)
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
        "cells": {str(k): v for k, v in cells.items()}, "items": items, "stdout": stdout, "features": features,
        "seconds": time.monotonic() - started, "peak_mb": round(peak_mb, 1),
    }


def _reason(kind: str, status: int | None, limits: dict, phase, detail) -> str:
    what, which = phase
    if kind == "timeout":
        limit = limits["cell_seconds"] if what == "cell" else limits["item_seconds"]
        return f"stopped after {limit:g} s of wall time (an endless loop, or far too slow?)"
    if kind == "garbled":
        return f"the sandbox sent malformed data ({detail})"
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return "the process was killed (out of memory, or it killed itself)"
        if sig == signal.SIGXCPU:
            return "the process used up its CPU time"
        return f"the process crashed ({signal.Signals(sig).name})"
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    from .sandbox import RUNTIME_FAILED

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


def serve() -> None:
    """Read jobs from stdin and answer each on stdout, until stdin closes."""
    from .sandbox import die_with_parent

    die_with_parent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the result stream
    preload()
    wire.write_frame(stdout.fileno(), wire.encode({"ready": True, "pid": os.getpid()}))
    while True:
        try:
            (size,) = struct.unpack("<Q", _read_exact(stdin, 8))
            job = wire.decode(_read_exact(stdin, size))
        except EOFError:
            os._exit(0)  # nothing to clean up: skip the interpreter's (slow, torch-sized) shutdown
        try:
            result = run_job(job)
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            result = {"fatal": f"{type(exc).__name__}: {exc}"}
        wire.write_frame(stdout.fileno(), wire.encode(result))


if __name__ == "__main__":
    serve()


class Pool:
    """Worker processes (`python -m autograder.worker`), each used by one thread at a time."""

    def __init__(self, n: int, cwd: str | None = None):
        import queue
        import subprocess

        self._subprocess = subprocess
        self.idle: "queue.Queue[subprocess.Popen]" = queue.Queue()
        self.procs = []
        self.cwd = cwd
        self.waiting = set()  # started, greeting not read yet: the imports run while the caller works
        for _ in range(max(1, n)):
            proc = self._start()
            self.procs.append(proc)
            self.waiting.add(proc.pid)
            self.idle.put(proc)

    def _start(self):
        return self._subprocess.Popen(
            [sys.executable, "-m", "autograder.worker"], stdin=self._subprocess.PIPE,
            stdout=self._subprocess.PIPE, cwd=self.cwd,
        )

    @staticmethod
    def _read(proc) -> dict:
        (size,) = struct.unpack("<Q", _read_exact(proc.stdout, 8))
        return wire.decode(_read_exact(proc.stdout, size))

    def _expect_ready(self, proc) -> None:
        try:
            hello = self._read(proc)
        except EOFError:
            raise RuntimeError("a grading worker failed to start (see the messages above)") from None
        if not hello.get("ready"):
            raise RuntimeError("a grading worker sent an unexpected greeting")

    def run(self, job: dict) -> dict:
        proc = self.idle.get()
        if proc.pid in self.waiting:
            self.waiting.discard(proc.pid)
            try:
                self._expect_ready(proc)
            except RuntimeError:
                self.idle.put(proc)
                raise
        try:
            payload = wire.encode(job)
            proc.stdin.write(struct.pack("<Q", len(payload)) + payload)
            proc.stdin.flush()
            return self._read(proc)
        except (EOFError, BrokenPipeError, OSError):
            proc.kill()
            proc.wait()
            proc = self._start()
            self._expect_ready(proc)
            return {"fatal": "the grading worker died; the submission was not graded"}
        finally:
            self.idle.put(proc)

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except self._subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
