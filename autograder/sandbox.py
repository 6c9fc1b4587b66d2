"""The untrusted side: confine a forked process, then run a notebook and its items in it.

Everything in this module after `confine()` runs beside student code and is
trusted by nobody: it executes cells, calls the student's objects on the case
inputs it was given, and writes plain-data events to one pipe. The worker
(`autograder.worker`) checks every event against the protocol, enforces the
CPU and wall-time limits, and kills the whole process tree when it is done.

Inside a jailed worker (`autograder.jail`), `confine()` gives the sandbox fresh
mount, network, IPC and UTS namespaces (its PID namespace was made by the
worker: the sandbox is its init), a fresh /proc and an empty private /tmp,
resource limits, and then drops every right: the `nobody` user when grading as
root, otherwise a nested user namespace with no capability; no new privileges;
killed when the worker dies. Outside a jail (the student's own `check`, and the
reference runs that compute the answer keys), only the resource limits apply.

Each graded item runs in its own fork of the process that ran the cells, with a
CPU-time limit of its own; the reference pieces it builds on reach that fork
only after it asks for them, which the worker allows only once every piece
they answer was graded.
"""
from __future__ import annotations

import io
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback

from . import jail, wire

RUNTIME_FAILED = 70
"""Exit code when the grader's own code in the sandbox fails (usually because the student's code broke it)."""
ITEM_GRADED = 77
"""Exit code of an item's fork that graded its item to the end (anything else means it was cut short)."""
WALL_FACTOR = 4
"""Wall-clock backstops are this many times the CPU-time limits (plus a little), so load costs no point."""


def backstop(cpu_seconds: float) -> float:
    """The wall-clock time after which something given `cpu_seconds` of CPU time is stopped anyway."""
    return WALL_FACTOR * cpu_seconds + 2.0


class CappedWriter(io.TextIOBase):
    """A text stream that keeps at most `limit` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self) -> str:
        tail = f"\n[... {self.dropped} more characters of output dropped]" if self.dropped else ""
        return "".join(self.parts) + tail


def confine(limits: dict) -> None:
    """Confine the current, freshly forked process (see the module's docstring). Raises when a step fails."""
    os.setsid()
    jailed = jail.MODE in ("root", "rootless")
    if jailed:
        jail.unshare(jail.CLONE_NEWNS | jail.CLONE_NEWNET | jail.CLONE_NEWIPC | jail.CLONE_NEWUTS,
                     "new namespaces for the sandbox")
        jail.mount(None, "/", None, jail.MS_REC | jail.MS_PRIVATE)
        jail.mount("proc", "/proc", "proc", jail.MS_NOSUID | jail.MS_NODEV | jail.MS_NOEXEC)
        jail.fresh_tmp(f"{max(64, limits['file_mb'] * 4)}m")
        jail.libc().sethostname(b"sandbox", 7)
    workdir = tempfile.mkdtemp(prefix="submission-", dir="/tmp")
    if jail.MODE == "root":
        os.chown(workdir, jail.NOBODY, jail.NOBODY)
    os.chdir(workdir)
    _set_limits(limits)
    if jail.MODE == "root":
        os.setgroups([])
        os.setresgid(jail.NOBODY, jail.NOBODY, jail.NOBODY)
        os.setresuid(jail.NOBODY, jail.NOBODY, jail.NOBODY)
        jail.prctl(jail.PR_SET_NO_NEW_PRIVS, 1)
    elif jail.MODE == "rootless":
        jail.unshare(jail.CLONE_NEWUSER, "a user namespace for the sandbox")
        jail.map_self(jail.NOBODY, 0, 0)
        jail.drop_capabilities()
    if jailed:
        jail.die_with_parent()  # after the switch of user, which clears it
    os.environ.update(HOME=workdir, MPLCONFIGDIR=workdir, TMPDIR=workdir)


def _set_limits(limits: dict) -> None:
    mb = 1024 * 1024
    cpu = int(math.ceil(limits["notebook_seconds"])) + 5
    for res, value in (
        (resource.RLIMIT_AS, limits["memory_mb"] * mb),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits["file_mb"] * mb),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        soft, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))
    if jail.MODE in ("root", "rootless"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _redirect_fds(keep: tuple[int, ...]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 4096)


_SHELL = None
"""An IPython shell made by the worker before it forks, so each sandbox starts with one (never used there)."""


def make_shell():
    """A fresh IPython shell for executing notebook cells: no history, no colours, errors not printed."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    shell = InteractiveShell(config=config)
    shell.showtraceback = lambda *a, **k: None  # errors are reported as events, not printed
    return shell


def prepare_shell() -> None:
    """Make the shell every forked sandbox will use (called once per worker, before any fork)."""
    global _SHELL
    _SHELL = make_shell()


class Session:
    """Runs one job's cells, then each item in a fork of its own, reporting events on `up`.

    `down` carries the reference pieces an item builds on, sent by the worker
    when the item's fork asks for them (and never before).
    """

    def __init__(self, up: int, down: int, job: dict):
        import builtins

        self.up, self.down, self.job = up, down, job
        self.builtins = dict(builtins.__dict__)  # as they were before any student code ran

    def send(self, event: dict) -> None:
        self.restore_builtins()
        wire.write_frame(self.up, wire.encode(event))

    def restore_builtins(self) -> None:
        """Undo what student code did to `builtins` (len, type, ...), which the grader's own code uses."""
        import builtins

        builtins.__dict__.update(self.builtins)

    def end_strays(self) -> None:
        """Kill and reap every other process of the sandbox (a fork bomb, a sleeper the cells left behind), so
        each item's fork starts with the sandbox's whole process allowance. The sandbox is the first process of
        its PID namespace in a jail, where kill(-1) reaches exactly the others; outside a jail, nothing."""
        if jail.MODE not in ("root", "rootless") or os.getpid() != 1:
            return
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.005)

    def run(self) -> None:
        job = self.job
        out = CappedWriter(job["limits"]["output_kb"] * 1024)
        sys.stdout = sys.stderr = out
        _seed_everything()
        if "earlier" in job:
            # The grader's references of earlier notebooks, for `from autograder.earlier import ...`: the
            # student's earlier notebooks are not part of this submission (and not in the sandbox).
            from . import earlier

            earlier.provide(job["earlier"])
        ns = self._execute(job["cells"], set(job["skip"]))
        for item in job["items"]:
            self._item_in_fork(item, ns, job["limits"]["item_seconds"])
        self.send({"ev": "done", "stdout": out.text()})

    def _execute(self, cells: list[dict], skip: set[int]) -> dict:
        shell = _SHELL or make_shell()
        for cell in cells:
            if cell["index"] in skip:
                continue
            self.send({"ev": "cell", "index": cell["index"], "status": "start"})
            result = shell.run_cell(cell["source"], store_history=False)
            error = result.error_before_exec or result.error_in_exec
            self.send({
                "ev": "cell", "index": cell["index"],
                "status": "error" if error is not None else "ok",
                "error": _describe_error(error) if error is not None else "",
            })
        return shell.user_ns

    def _item_in_fork(self, item: dict, ns: dict, seconds: float) -> None:
        """Grade one item in a fork limited to `seconds` of CPU time; one retry when it hits a limit."""
        key = item["key"]
        for attempt in (1, 2):
            self.send({"ev": "item", "key": key, "status": "start"})
            self.end_strays()
            pid = os.fork()
            if pid == 0:
                code = ITEM_GRADED
                try:
                    # SIGXCPU at the limit, SIGKILL a second later for code that catches it.
                    cpu = max(1, int(math.ceil(seconds)))
                    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
                    if hard != resource.RLIM_INFINITY:
                        cpu = min(cpu, hard - 1)
                    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                    _seed_everything()
                    self._grade_item(item, ns)
                except BaseException:  # noqa: BLE001
                    code = RUNTIME_FAILED
                finally:
                    os._exit(code)
            status, cpu_used, timed_out = _wait(pid, backstop(seconds))
            if not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == ITEM_GRADED:
                return
            signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            hit_limit = timed_out or signalled == signal.SIGXCPU or (
                signalled == signal.SIGKILL and cpu_used >= 0.9 * seconds)
            if hit_limit and attempt == 1:
                self.send({"ev": "item", "key": key, "status": "retry"})
                continue
            self.send({"ev": "item", "key": key, "status": "killed",
                       "error": _death_reason(status, cpu_used, timed_out, seconds, hit_limit)})
            return

    def _grade_item(self, item: dict, ns: dict) -> None:
        from .exercise import exercises, hidden_module

        key = item["key"]
        exercise = exercises(item["notebook"])[item["id"]]
        if item.get("needs"):
            self.send({"ev": "need", "key": key})
            for name, source in self._receive().items():
                exec(compile(source, f"<reference {name}>", "exec"), ns)
        variant = item.get("variant")
        if variant:
            # Trusted reference runs only: a known mistake stands in for the student's object.
            mistakes = hidden_module(item["notebook"]).MISTAKES[item["id"]]
            obj = next(m.impl for m in mistakes if m.name == variant)
        elif item["id"] in ns:
            obj = ns[item["id"]]
        else:
            self.send({"ev": "item", "key": key, "status": "missing"})
            return
        for case in item["cases"]:
            event = {"ev": "case", "key": key, "case": case["name"], "outputs": None, "error": "", "error_type": ""}
            try:
                outputs = exercise.run(obj, _fresh(case["inputs"]))
                event["outputs"] = _plain_outputs(outputs)
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything, SystemExit included
                event["error"] = _describe_error(exc)
                event["error_type"] = _safe_type_name(exc)
            self.send(event)
        self.send({"ev": "item", "key": key, "status": "end"})

    def _receive(self) -> dict:
        import struct

        def exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = os.read(self.down, n - len(data))
                if not chunk:
                    raise EOFError("the worker closed the pipe")
                data += chunk
            return data

        (size,) = struct.unpack("<Q", exact(8))
        return wire.decode(exact(size))


def _wait(pid: int, wall: float) -> tuple[int, float, bool]:
    """Wait for a child at most `wall` seconds (then kill it): (status, CPU seconds it used, timed out)."""
    deadline = time.monotonic() + wall
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage.ru_utime + usage.ru_stime, timed_out
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.005 if time.monotonic() < deadline - wall + 0.2 else 0.02)


def _death_reason(status: int, cpu: float, timed_out: bool, seconds: float, hit_limit: bool) -> str:
    if timed_out:
        return (f"stopped after {backstop(seconds):g} s of wall time, twice (it waits or sleeps instead of "
                "computing; an endless loop?)")
    if hit_limit:
        return f"used up its {seconds:g} s of CPU time, twice (an endless loop, or far too slow?)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return "the process was killed (out of memory, or it killed itself)"
        return f"the process crashed ({signal.Signals(sig).name})"
    code = os.WEXITSTATUS(status)
    if code == RUNTIME_FAILED:
        return ("the grader's runtime in the sandbox failed here (does the code replace builtins, "
                "sys or the grader's modules?)")
    return f"the process ended itself (exit code {code}) instead of returning"


def _plain_outputs(outputs) -> dict:
    if type(outputs) is not dict:
        raise wire.NotPlain("the case runner returned no outputs")
    plain = {}
    for key, value in outputs.items():
        try:
            plain[key] = wire.to_plain(value)
        except wire.NotPlain as exc:
            raise wire.NotPlain(f"{key} {exc}") from None
    return plain


def _fresh(inputs: dict) -> dict:
    """A private copy of the case inputs, so a function that mutates them changes nothing else."""
    import numpy as np

    return {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}


def _seed_everything() -> None:
    """Fixed seeds and one thread, so the same submission always gives the same outputs.

    torch is seeded only when already imported (as in grading workers); a torch the
    notebook imports later starts from its fixed default seed, and OMP_NUM_THREADS
    keeps it to one thread.
    """
    import numpy as np

    random.seed(0)
    np.random.seed(0)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)
        torch.set_num_threads(1)


def _safe_type_name(exc: BaseException) -> str:
    try:
        return type(exc).__name__[:80]
    except Exception:  # noqa: BLE001
        return "Exception"


def _describe_error(exc: BaseException) -> str:
    """`Type: message` and the line of the student's code where it happened."""
    name = _safe_type_name(exc)
    try:
        message = str(exc)[:300]
    except Exception:  # noqa: BLE001
        message = "(the exception's message could not be shown)"
    where = ""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not any(part in f.filename for part in ("autograder", "site-packages", "<frozen", "/lib/python3", "<reference"))]
        if frames:
            last = frames[-1]
            where = f" (line {last.lineno}: {(last.line or '').strip()[:100]})"
    except Exception:  # noqa: BLE001
        pass
    return f"{name}: {message}{where}" if message else f"{name}{where}"


def child_main(up: int, down: int, job: dict) -> None:
    """Entry point of a freshly forked sandbox process. Never returns."""
    code = 0
    try:
        _redirect_fds((up, down))
        confine(job["limits"])
        session = Session(up, down, job)
        session.send({"ev": "ready"})
        session.run()
    except BaseException:  # noqa: BLE001
        code = RUNTIME_FAILED
    finally:
        os._exit(code)
