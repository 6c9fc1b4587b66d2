"""The untrusted side: confine a forked process, then run a notebook and its cases in it.

Everything in this module after `confine()` runs beside student code and is
trusted by nobody: it only executes cells, calls the student's objects on the
case inputs it was given, and writes plain-data events to one pipe. The worker
(`autograder.worker`) reads those events, enforces the wall-time limits and
kills the whole process tree when it is done.

What `confine()` applies, each where the platform allows it (the result says
which were in force):
- its own session and process group; stdin from /dev/null; fds 1 and 2 to
  /dev/null, Python's stdout/stderr into a capped buffer;
- resource limits: address space, CPU seconds, file size, open files, no core
  dumps, and (when it can drop to an unprivileged user) processes;
- as root: new PID, network and mount namespaces (no network; the process tree
  dies with its first process, the sandbox itself; a private /tmp; the course's
  secrets, the submissions and the output folder hidden behind empty mounts),
  then it drops to the `nobody` user.
"""
from __future__ import annotations

import ctypes
import io
import os
import random
import resource
import signal
import sys
import tempfile
import traceback

from . import wire

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
NOBODY = 65534
RUNTIME_FAILED = 70
"""Exit code when the grader's own code in the sandbox fails (usually because the student's code broke it)."""


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


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only; best effort)."""
    try:
        _libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _unshare(flags: int) -> bool:
    return _libc().unshare(flags) == 0


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    libc = _libc()
    return libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
        data.encode() if data else None,
    ) == 0


def new_pid_namespace_for_children() -> bool:
    """Put the caller's next child in a new PID namespace, as its first process (root only).

    Called by the worker before each fork: the sandbox is then the init of its own
    namespace, so killing it ends every process it started, wherever they went.
    """
    if os.geteuid() != 0:
        return False
    restore_pid_namespace()  # unshare only works while children still go to our own namespace
    return _unshare(CLONE_NEWPID)


def restore_pid_namespace() -> None:
    """Send the caller's later children (and threads, which the kernel also places there) back to its own
    PID namespace; called by the worker right after it forked a sandbox."""
    if os.geteuid() != 0:
        return
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        _libc().setns(fd, CLONE_NEWPID)
    finally:
        os.close(fd)


def confine(limits: dict, hide: list[str], pid_namespace: bool = False) -> dict:
    """Confine the current (freshly forked) process. Returns which protections hold."""
    os.setsid()
    die_with_parent()
    got = {"pid_namespace": pid_namespace, "network": False, "mounts": False, "user": "same"}
    if os.geteuid() == 0 and _unshare(CLONE_NEWNET | CLONE_NEWNS):
        got["network"] = True
        got["mounts"] = _private_mounts(hide)
    elif _unshare(CLONE_NEWNET):
        got["network"] = True
    workdir = tempfile.mkdtemp(prefix="submission-", dir="/tmp")
    if os.geteuid() == 0:
        os.chown(workdir, NOBODY, NOBODY)
    os.chdir(workdir)
    _set_limits(limits)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        got["user"] = "nobody"
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    os.environ["HOME"] = workdir
    os.environ["MPLCONFIGDIR"] = workdir
    os.environ["TMPDIR"] = workdir
    return got


SHARED_TMP = ("/tmp", "/dev/shm", "/var/tmp")


def _private_mounts(hide: list[str]) -> bool:
    """Make mounts private, give the namespace fresh temporary folders, and hide each path in `hide`.

    What the sandbox must still read (Python's installation, the virtual
    environment, this package) stays visible even when it lives under a folder
    that gets covered (/tmp) or that others cannot enter (pyenv under /root).
    """
    if not _mount("none", "/", None, MS_REC | MS_PRIVATE):
        return False
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    needed = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, root)})
    ok = True
    for shared in SHARED_TMP:
        if os.path.isdir(shared):
            keep = [p for p in needed if p.startswith(shared + os.sep)]
            ok &= _cover(shared, keep, "size=512m,mode=1777")
    blocked: dict[str, list[str]] = {}
    for path in needed:
        parts = path.split(os.sep)
        for i in range(2, len(parts) + 1):
            ancestor = os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                blocked.setdefault(ancestor, []).append(path)
                break
    for ancestor, paths in blocked.items():
        ok &= _cover(ancestor, paths, "size=1m,mode=755")
    for path in hide:
        if os.path.isdir(path):
            ok &= _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=000")
        elif os.path.exists(path):
            ok &= _mount("/dev/null", path, None, MS_BIND)
    return bool(ok)


def _cover(folder: str, keep: list[str], options: str) -> bool:
    """Mount an empty tmpfs on `folder`, then bind back the paths in `keep` (which lie under it)."""
    handles = [(os.open(p, os.O_PATH), p) for p in keep]
    try:
        ok = _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for fd, path in handles:
            os.makedirs(path, mode=0o755, exist_ok=True)
            ok &= _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    finally:
        for fd, _ in handles:
            os.close(fd)
    return bool(ok)


def _set_limits(limits: dict) -> None:
    mb = 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, limits["memory_mb"] * mb),
        (resource.RLIMIT_CPU, int(limits["cpu_seconds"])),
        (resource.RLIMIT_FSIZE, limits["file_mb"] * mb),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
    ):
        resource.setrlimit(res, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _redirect_fds(keep: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.closerange(3, keep)
    os.closerange(keep + 1, 4096)


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
    """Runs one job's cells and items inside the sandbox, reporting events on `fd`."""

    def __init__(self, fd: int, job: dict):
        self.fd, self.job = fd, job

    def send(self, event: dict) -> None:
        wire.write_frame(self.fd, wire.encode(event))

    def run(self) -> None:
        job = self.job
        out = CappedWriter(job["limits"]["output_kb"] * 1024)
        sys.stdout = sys.stderr = out
        _seed_everything()
        ns = self._execute(job["cells"], set(job["skip"]))
        for item in job["items"]:
            self._grade_item(item, ns)
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

    def _grade_item(self, item: dict, ns: dict) -> None:
        from .exercise import exercises, hidden_module

        key = item["key"]
        self.send({"ev": "item", "key": key, "status": "start"})
        exercise = exercises(item["notebook"])[item["id"]]
        for name, source in item.get("inject", {}).items():
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
            event = {"ev": "case", "key": key, "case": case["name"], "outputs": None, "error": ""}
            try:
                outputs = exercise.run(obj, _fresh(case["inputs"]))
                event["outputs"] = _plain_outputs(outputs)
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything, SystemExit included
                event["error"] = _describe_error(exc)
                event["error_type"] = _safe_type_name(exc)
            self.send(event)
        self.send({"ev": "item", "key": key, "status": "end"})


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


def child_main(fd: int, job: dict) -> None:
    """Entry point of a freshly forked sandbox process. Never returns."""
    code = 0
    try:
        _redirect_fds(fd)
        got = confine(job["limits"], job.get("hide", []), job.get("pid_namespace", False))
        session = Session(fd, job)
        session.send({"ev": "sandbox", "features": got})
        session.run()
    except BaseException:  # noqa: BLE001
        code = RUNTIME_FAILED
    finally:
        os._exit(code)
