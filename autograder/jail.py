"""The allow-listed root a grading worker lives in, built with the kernel's namespaces.

A worker (`autograder.worker`) calls `enter()` before it imports anything big.
It then lives in fresh mount and PID namespaces (plus a user namespace when it
is not root, so that all of this works for an ordinary user), in a root that
holds nothing but, read-only:

- the interpreter, its standard library and the system's shared libraries;
- the installed packages (the virtual environment and every site-packages
  folder on `sys.path`);
- the grader's package, without its `hidden/` folder;

and, writable, a private /tmp, plus /dev's harmless devices and a /proc of its
own PID namespace. The course root, its .git, solutions/, course.yml, the key
cache, SUBMITTED, OUT, earlier outputs, $HOME, /run and /var do not exist in it.
Each submission's sandbox (`autograder.sandbox.confine`) then adds its own
PID, network, IPC, mount and UTS namespaces, a fresh /tmp, and drops every
right: `nobody` when grading as root, a nested user namespace without any
capability otherwise.

We call the kernel directly (through ctypes) instead of bubblewrap: the worker
must import torch once and fork thousands of sandboxes from that warm process,
which bubblewrap (one command per sandbox) cannot do without a second copy of
this logic inside it, and nothing needs installing.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import sys
import sysconfig

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
NOBODY = 65534
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
WIDE_PREFIXES = ("/", "/usr", "/usr/local", "/opt")

MODE = "none"
"""How this process is confined: "root" or "rootless" inside a jail, "none" outside one."""


class JailError(OSError):
    """The kernel refused a step of building the jail; the message says which and how to fix it."""


_LIBC = None


def libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(ok: bool, what: str) -> None:
    if not ok:
        err = ctypes.get_errno()
        raise JailError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int, what: str = "unshare") -> None:
    _check(libc().unshare(flags) == 0, what)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0,
           f"mount {target}")


def prctl(option: int, arg: int) -> int:
    return libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


def die_with_parent(parent: int | None = None) -> None:
    """SIGKILL this process when its parent dies; exit now if the parent is already gone.

    Set it after every change of credentials: the kernel clears it on each one.
    `parent` is the parent's PID as this process sees it (None: don't check).
    """
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def map_self(inside: int, outside_uid: int, outside_gid: int) -> None:
    """Map one user and group of a fresh user namespace (all an unprivileged process may map)."""
    try:
        _write("/proc/self/setgroups", "deny")
    except FileNotFoundError:
        pass
    _write("/proc/self/uid_map", f"{inside} {outside_uid} 1\n")
    _write("/proc/self/gid_map", f"{inside} {outside_gid} 1\n")


def drop_capabilities() -> None:
    """Drop every capability (bounding, effective, permitted, inheritable) and forbid gaining any."""
    for cap in range(64):
        prctl(PR_CAPBSET_DROP, cap)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(libc().capset(ctypes.byref(header), data) == 0, "capset")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1) == 0, "no_new_privs")


# --- what the jail holds ---------------------------------------------------------------------------

def package_dir() -> str:
    return os.path.dirname(os.path.realpath(__file__))


def course_root() -> str | None:
    """The course checkout the package lives in (None when the package is installed elsewhere)."""
    parent = os.path.dirname(package_dir())
    if os.path.exists(os.path.join(parent, "course.yml")) or os.path.isdir(os.path.join(parent, "solutions")):
        return parent
    return None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def allow_list() -> tuple[list[str], list[str]]:
    """(paths visible read-only, paths covered by an empty folder), all absolute and resolved.

    The grader's package is shown file by file, without its hidden/ folder (hidden cases and
    known mistakes), which then does not exist in the jail at all.
    """
    real = os.path.realpath
    paths = {real(sys.executable)}
    base = real(sys.base_prefix)
    if base in WIDE_PREFIXES:
        for key in ("stdlib", "platstdlib"):
            paths.add(real(sysconfig.get_paths(vars={"base": base, "platbase": base, "installed_base": base,
                                                      "installed_platbase": base})[key]))
    else:
        paths.add(base)
    if real(sys.prefix) != base:
        paths.add(real(sys.prefix))
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and sysconfig.get_config_var("LIBDIR"):
        paths.add(real(sysconfig.get_config_var("LIBDIR")))
    prefixes = [p for p in (base, real(sys.prefix)) if p not in WIDE_PREFIXES]
    for entry in sys.path:
        # Installed packages only: never the current folder, a script's folder or PYTHONPATH's
        # (the course root among them); the grader's package is added by itself below.
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        entry = real(entry)
        if os.path.basename(entry) in ("site-packages", "dist-packages") or any(_inside(entry, p) for p in prefixes):
            paths.add(entry)
    for lib in SYSTEM_LIBS:
        if os.path.isdir(lib) and not os.path.islink(lib):
            paths.add(lib)
    package = package_dir()
    paths.update(os.path.join(package, name) for name in os.listdir(package) if name != "hidden")
    if os.path.exists("/etc/ld.so.cache"):
        paths.add("/etc/ld.so.cache")
    paths = {p for p in paths if os.path.exists(p) and not _inside(p, "/proc") and not _inside(p, "/dev")}
    kept: list[str] = []
    for p in sorted(paths, key=lambda p: (p.count("/"), p)):
        if not any(_inside(p, k) for k in kept):
            kept.append(p)
    return sorted(kept), []


# --- building it --------------------------------------------------------------------------------

_ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
             4096: MS_RELATIME}


def _locked_flags(path: str) -> int:
    """The mount flags of the mount holding `path` that a remount inside a user namespace must keep."""
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if flags & st)


def _bind_readonly(fd: int, is_dir: bool, target: str) -> None:
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "a").close()
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    flags = _locked_flags(target) | MS_RDONLY | MS_NOSUID | MS_NODEV
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _build_root(base: str, visible: list[str], covered: list[str]) -> None:
    """Make a tmpfs at `base` hold exactly the allow-list, then make it the root."""
    _mount_keeping(base, "size=16m,mode=755", visible, base)
    for lib in SYSTEM_LIBS + ("/bin", "/sbin"):
        if os.path.islink(lib):
            target = os.readlink(lib)
            if os.path.isabs(target) or any(_inside(os.path.normpath(os.path.join("/", target)), v) for v in visible):
                os.symlink(target, base + lib)
    for path in covered:
        mount("tmpfs", base + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")
    for folder in ("tmp", "proc", "dev", "etc", "old"):
        os.makedirs(f"{base}/{folder}", mode=0o755, exist_ok=True)
    with open(f"{base}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/tmp:/nonexistent\nnobody:x:65534:65534:nobody:/tmp:/nonexistent\n")
    with open(f"{base}/etc/group", "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    for dev in DEVICES:
        open(f"{base}/dev/{dev}", "a").close()
        mount(f"/dev/{dev}", f"{base}/dev/{dev}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{base}/dev/{name}")
    os.makedirs(f"{base}/dev/shm", mode=0o1777, exist_ok=True)
    mount("proc", f"{base}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(base)
    _check(libc().syscall(SYS_PIVOT_ROOT.get(platform.machine(), 155), b".", b"old") == 0, "pivot_root")
    os.chdir("/")
    _check(libc().umount2(b"/old", MNT_DETACH) == 0, "umount the old root")
    os.rmdir("/old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    fresh_tmp("256m")


VISIBLE: list[str] = []
"""The allow-list this jail was built with."""


@contextlib.contextmanager
def _handles(paths: list[str]):
    """(fd, is a folder, path) of each path, opened O_PATH now, before a mount hides them; closed after."""
    handles = []
    try:
        for p in paths:
            handles.append((os.open(p, os.O_PATH | os.O_CLOEXEC), os.path.isdir(p), p))
        yield handles
    finally:
        for fd, _, _ in handles:
            os.close(fd)


def _mount_keeping(folder: str, options: str, keep: list[str], prefix: str = "") -> None:
    """Mount a tmpfs on `folder`, then bind back read-only each path of `keep` (at `prefix` + path)."""
    with _handles(keep) as handles:
        mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for fd, is_dir, path in handles:
            _bind_readonly(fd, is_dir, prefix + path)


def fresh_tmp(size: str) -> None:
    """An empty private /tmp and /dev/shm.

    Allow-listed paths that live under /tmp (a course or venv there) stay visible, read-only, inside
    read-only folders of their own: the sandbox can write only into its empty tmpfs, never beside them.
    """
    kept = [p for p in VISIBLE if _inside(p, "/tmp") and p != "/tmp"]
    with _handles(kept) as handles:
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
        for top in sorted({"/tmp/" + p.split("/")[2] for p in kept}):
            skeleton = top not in kept
            if skeleton:
                os.mkdir(top, 0o755)
                mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            for fd, is_dir, path in handles:
                if _inside(path, top):
                    _bind_readonly(fd, is_dir, path)
            if skeleton:
                mount(None, top, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")


def enter(mode: str) -> None:
    """Put this (single-threaded, freshly started) process in a jail; `mode` is "root", "rootless" or "none".

    The calling process splits in two: the original stays outside as a bare
    reaper that waits for the jailed one and exits with its status (so the pipes
    to the grader keep working), and returns only in the jailed one, which is the
    first process (init) of a fresh PID namespace: when it dies, every sandbox it
    started dies with it. Both die when the grader dies.
    """
    global MODE
    grader = os.getppid()
    die_with_parent(grader)
    if mode == "none":
        return
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        raise JailError(0, f"a jail must be entered by a single-threaded process (this one has {threads}); "
                           "set OPENBLAS_NUM_THREADS=1 before numpy is imported")
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | (CLONE_NEWUSER if mode == "rootless" else 0)
    unshare(flags, "new namespaces for the grading worker")
    if mode == "rootless":
        map_self(0, uid, gid)
        die_with_parent(grader)  # the credentials changed: set it again
    lifeline_r, lifeline_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(lifeline_r)
        _reap_forever(pid)
    os.close(lifeline_w)
    die_with_parent()
    import select

    if select.select([lifeline_r], [], [], 0)[0]:
        os._exit(1)  # the reaper is already gone
    os.close(lifeline_r)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    visible, covered = allow_list()
    VISIBLE[:] = visible
    _build_root("/tmp", visible, covered)
    os.environ.update(HOME="/tmp", TMPDIR="/tmp", MPLCONFIGDIR="/tmp", IPYTHONDIR="/tmp/.ipython", USER="grader")
    MODE = mode


def _reap_forever(pid: int) -> None:
    """The outside half of `enter`: wait for the jailed worker, then exit as it did."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)


def worker_env() -> dict:
    """The environment a jailed process starts with: BLAS kept to one thread, since the kernel refuses a
    new user namespace to a process that already has several threads (numpy starts them on import)."""
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def wanted_mode() -> str:
    return "root" if os.geteuid() == 0 else "rootless"


PROBE = (
    "import sys\n"
    "from autograder import jail\n"
    "jail.enter(sys.argv[1])\n"
    "import os\n"
    "assert not os.path.exists(os.path.join(os.path.dirname(jail.package_dir()), 'course.yml'))\n"
    "print('ok', flush=True)\n"
)


def unavailable_reason() -> str | None:
    """Why a jail cannot be built on this machine (None when it can): tried in a throwaway process."""
    import subprocess

    mode = wanted_mode()
    try:
        res = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                             cwd="/", env=worker_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the probe could not run ({exc})"
    if res.returncode == 0 and res.stdout.strip() == "ok":
        return None
    detail = (res.stderr.strip().splitlines() or ["no message"])[-1]
    if mode == "rootless":
        return (f"this machine does not let an ordinary user create namespaces ({detail}). Enable unprivileged "
                "user namespaces (e.g. `sysctl -w kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04+ "
                "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, and a non-zero "
                "user.max_user_namespaces), or grade as root")
    return f"the kernel refused to build the sandbox ({detail})"
