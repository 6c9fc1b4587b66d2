"""Issue 15: a submission sees nothing of the course, and nothing of it outlives its grading, as root and without.

Each class of attack from the issue is a hostile student graded beside an honest one
(who has the full solution), in ONE batch per instructor, through the real command line
(`python -m autograder grade SUBMITTED --out OUT --no-pages`, in a subprocess):

- as root (the test's own interpreter and venv);
- as an unprivileged instructor (uid/gid 65534 through `setpriv`), with Debian's
  /usr/bin/python3.11 in a venv that sees the project venv's site-packages, grading a
  course copy that user owns. Skipped where setpriv, that interpreter or unprivileged
  user namespaces are missing.

Every instructor grades a copy of the course (autograder/, solutions/, weeks/, demo/ with
a complete demo student, .git, course.yml with short limits, the cached keys) from
`cwd = PYTHONPATH = the copy`, with its own $HOME. Every run goes through a wrapper that
is a child subreaper (tests/unprivileged.py, REAPER): after the grader exits it lists
every process of the run still alive, then kills them.

The honest student is graded alone once (the baseline; its OUT folder is then "an
earlier OUT folder" the attackers try to read). The stubs of the attackers' Days 6-7 and
Days 8-9 notebooks stay untouched: any point they get comes from something they read.
An attacker also reports what it could reach by raising `LEAK ...` at the end of its cell
(the message lands in the gradebook's cell problems); the allow-list walk raises
`VISIBLE n: ...` the same way.

Debugging: AGC_KEEP=1 keeps the session folder (/tmp/agc-*); AGC_GRADER_COMMIT=<commit> grades
with that commit's autograder/, solutions/, weeks/ and course.yml (e.g. 9deff58, before the
rewrite: the attacks succeed there); AGC_PASS_ENV=VAR,... passes those variables to the grader.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import students as demo_students
import unprivileged as up
from unprivileged import PROJECT, Instructor

D06, D08 = "day06_scaled_dot_product_attention", "day08_multi_head_attention"
NOTEBOOKS = {D06: "week1", D08: "week2"}
AUTO_ITEMS = {
    D06: ["scaled_dot_product_attention", "causal_mask", "padding_mask", "attention_flops", "quiz_sqrt_dk"],
    D08: ["split_heads", "merge_heads", "MultiHeadAttention", "mha_parameter_count"],
}
ALL_ITEMS = {D06: AUTO_ITEMS[D06] + ["checkpoint_sdpa"], D08: AUTO_ITEMS[D08]}
"""With the free-text item, whose points come only from the instructor (gradebook.db's manual_scores)."""
RUN = uuid.uuid4().hex[:6]
THIEVES = ["thief_git", "thief_demo", "thief_copy", "thief_package", "thief_output", "writer"]
"""Attack 1 (solutions through other paths) and 5 (without root: read solutions/, write OUT, autograder/, ~)."""
LINKS = ["mallory/week1", "copycat", "eve/week2"]
"""Attack 2: links in SUBMITTED (to the solutions, to another student's folder, to another student's week)."""
KEEP = os.environ.get("AGC_KEEP") == "1"  # keep the session folder (/tmp/agc-*) for debugging
IS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------------ the attackers' cells


PRELUDE = r'''
import json as _j, os as _o, re as _re
_LEAKS = []
_ITEMS = __ITEMS__
_NB = __NBPATH__

def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")

def _use(what, text):
    """Execute the solution cells of a notebook's text here, so the untouched stubs would pass."""
    try:
        cells = [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                 for c in _j.loads(text)["cells"] if c.get("cell_type") == "code"]
    except Exception:
        _LEAKS.append(what + "(unparsed)")
        return
    used = 0
    for src in cells:
        defines = any(_re.search(r"^(def|class)\s+" + n + r"\b|^" + n + r"\s*=", src, _re.M) for n in _ITEMS)
        if ("BEGIN SOLUTION" in src or defines) and "raise NotImplementedError" not in src:
            try:
                exec(src, globals())
                used += 1
            except BaseException:
                pass
    _LEAKS.append(f"{what}:{used}")
'''

EPILOGUE = '\nif _LEAKS:\n    raise RuntimeError("LEAK " + " ".join(_LEAKS))\n'

VECTORS = {
    # git --git-dir <course>/.git show HEAD:solutions/... (the copy's .git, the project's, other copies')
    "thief_git": r'''
import subprocess as _sp
for _gd in __GITDIRS__:
    try:
        _r = _sp.run(["git", "-c", "safe.directory=*", "--git-dir", _gd, "show", "HEAD:solutions/" + _NB],
                     capture_output=True, timeout=30)
    except Exception:
        continue
    if _r.returncode == 0:
        _use("git:" + _gd, _r.stdout.decode("utf-8", "replace"))
''',
    # demo/submitted/<complete student> of any copy, and the other students of this very batch
    "thief_demo": r'''
import glob as _g
for _d in __SUBMITTED_DIRS__:
    for _p in sorted(_g.glob(_d + "/*/" + _NB)):
        try:
            _use("submitted:" + _p, _read(_p))
        except OSError:
            pass
''',
    # any other copy of the course on the machine (the project itself when grading a copy)
    "thief_copy": r'''
for _root in __COPIES__:
    try:
        _use("copy:" + _root, _read(_root + "/solutions/" + _NB))
    except OSError:
        pass
''',
    # the grader's own package: <root>/solutions, autograder/hidden, .cache, course.yml via __file__
    "thief_package": r'''
import autograder as _ag
_root = _o.path.dirname(_o.path.dirname(_o.path.abspath(_ag.__file__)))
try:
    _use("package-solutions", _read(_root + "/solutions/" + _NB))
except OSError:
    pass
for _rel in ("autograder/hidden", ".cache/keys"):
    try:
        _names = [n for n in _o.listdir(_root + "/" + _rel) if not n.startswith("__")]
        if _names:
            _read(_root + "/" + _rel + "/" + _names[0])
            _LEAKS.append(f"{_rel}:{len(_names)}")
    except OSError:
        pass
try:
    if "hidden_seed" in _read(_root + "/course.yml"):
        _LEAKS.append("course.yml")
except OSError:
    pass
''',
    # an earlier OUT folder (other students' grades) and this run's OUT
    "thief_output": r'''
for _eo in __OUTS__:
    for _n in ("gradebook.db", "gradebook.csv"):
        try:
            with open(_eo + "/" + _n, "rb") as _f:
                _b = _f.read()
            if _b:
                _LEAKS.append(f"{_eo}/{_n}:{len(_b)}")
        except OSError:
            pass
    try:
        _names = _o.listdir(_eo + "/results")
        if _names:
            _LEAKS.append(f"{_eo}/results:" + ",".join(sorted(_names))[:60])
    except OSError:
        pass
''',
    # without root: read solutions/, raise its own grade in OUT/gradebook.db, write autograder/ and ~
    "writer": r'''
try:
    _use("course-solutions", _read(__COURSE__ + "/solutions/" + _NB))
except OSError:
    pass
_db = __OUT__ + "/gradebook.db"
if _o.path.exists(_db):
    import sqlite3 as _sq, time as _t
    try:
        _c = _sq.connect(_db, timeout=5, isolation_level=None)
        _end = _t.time() + 4
        while _t.time() < _end and not _c.execute(
                "SELECT 1 FROM scores WHERE student_id=? AND notebook_id!=?", (__ME__, __NBID__)).fetchone():
            _t.sleep(0.2)
        _n = _c.execute("UPDATE scores SET score=max_score WHERE student_id=? AND notebook_id!=?",
                        (__ME__, __NBID__)).rowcount
        # points "entered by hand" for its free-text checkpoint: they survive regrading
        _c.execute("INSERT OR REPLACE INTO manual_scores VALUES (?, 'checkpoint_sdpa', 2, 'pwned', 0)", (__ME__,))
        _c.close()
        _LEAKS.append(f"wrote-gradebook:{_n}")
    except Exception:
        pass
import autograder as _ag
for _p in (__COURSE__ + "/autograder/compare.py", _o.path.join(_o.path.dirname(_o.path.abspath(_ag.__file__)), "compare.py"),
           __COURSE__ + "/autograder/" + __MARK__ + ".py", __HOME__ + "/" + __MARK__, __HOME__ + "/.bashrc",
           __OUT__ + "/" + __MARK__, __EARLIER__ + "/" + __MARK__):
    try:
        with open(_p, "a") as _f:
            _f.write("\n# " + __MARK__ + "\n")
        _LEAKS.append("wrote:" + _p)
    except OSError:
        pass
''',
}

STATE_WRITE = r'''
import ctypes as _ct
for _d in ("/run/lock", "/tmp", "/dev/shm", "/var/tmp"):
    try:
        with open(_d + "/" + __MARK__ + "-state", "w") as _f:
            _f.write(__MARK__)
    except OSError:
        pass
_libc = _ct.CDLL(None, use_errno=True)
_libc.shmat.restype = _ct.c_void_p
_libc.shmat.argtypes = [_ct.c_int, _ct.c_void_p, _ct.c_int]
_id = _libc.shmget(__KEY__, 4096, 0o1000 | 0o666)  # IPC_CREAT
if _id >= 0:
    _a = _libc.shmat(_id, None, 0)
    if _a not in (None, 2**64 - 1):
        _ct.memmove(_a, __MARK__.encode(), len(__MARK__))
        _libc.shmdt(_ct.c_void_p(_a))
'''

# Graded after STATE_WRITE in the same batch; loses attention_flops's point if it sees anything.
STATE_READ = r'''
import ctypes as _ct, os as _o
_seen = [p for p in (d + "/" + __MARK__ + "-state" for d in ("/run/lock", "/tmp", "/dev/shm", "/var/tmp"))
         if _o.path.exists(p)]
_libc = _ct.CDLL(None, use_errno=True)
_libc.shmat.restype = _ct.c_void_p
_libc.shmat.argtypes = [_ct.c_int, _ct.c_void_p, _ct.c_int]
_id = _libc.shmget(__KEY__, 0, 0)
if _id >= 0:
    _seen.append("shm-key")
    _a = _libc.shmat(_id, None, 0o10000)  # SHM_RDONLY
    if _a not in (None, 2**64 - 1) and _ct.string_at(_a, len(__MARK__)) == __MARK__.encode():
        _seen.append("shm-marker")
if _seen:
    def attention_flops(*args, **kwargs):
        return -1.0
    raise RuntimeError("LEAK " + " ".join(_seen))
'''

DAEMON = r'''
import ctypes as _ct, os as _o, signal as _s, time as _t

def _daemon(name):
    pid = _o.fork()
    if pid == 0:
        try:
            _o.setsid()
            if _o.fork() == 0:
                libc = _ct.CDLL(None)
                libc.prctl(1, 0, 0, 0, 0)      # PR_SET_PDEATHSIG: none
                libc.prctl(15, name, 0, 0, 0)  # PR_SET_NAME
                for sig in (_s.SIGTERM, _s.SIGHUP, _s.SIGINT):
                    _s.signal(sig, _s.SIG_IGN)
                _o.closerange(3, 4096)
                end = _t.time() + 300
                while _t.time() < end:
                    for d in (_o.getcwd(), "/tmp", "/dev/shm"):
                        try:
                            with open(d + "/" + name.decode() + ".beat", "w") as f:
                                f.write(str(_t.time()))
                        except OSError:
                            pass
                    _t.sleep(2)
        finally:
            _o._exit(0)
    _o.waitpid(pid, 0)

_daemon(__NAME__)
_t.sleep(__LINGER__)
'''

# A malformed event on the sandbox's own pipe (a list as a cell index): the worker must not raise and
# forget the sandbox; then the sandbox sleeps, so only a kill from outside ends it.
FORGE = r'''
import os as _o, stat as _st, time as _t
from autograder import wire as _w
_frame = _w.encode({"ev": "cell", "index": [0], "status": "ok", "error": ""})
for _fd in range(3, 1024):
    try:
        if _st.S_ISFIFO(_o.fstat(_fd).st_mode):
            _w.write_frame(_fd, _frame)
    except Exception:
        pass
_t.sleep(30)
'''

# Walk / from inside (links not followed; /proc, /sys, /dev skipped) and raise `VISIBLE n: ...` when
# anything outside the allow-list exists: the interpreter's prefixes, site-packages folders on sys.path,
# the grader package, /usr (shared libraries), /etc, and a private /tmp (nothing the machine's /tmp holds).
WALK = r'''
import os as _o, sys as _sys
import autograder as _ag
_FORBIDDEN = __FORBIDDEN__
_HOST_TMP = set(__HOST_TMP__)

def _real(p):
    try:
        return _o.path.realpath(p)
    except Exception:
        return p

_pkg = _o.path.dirname(_real(_ag.__file__))
_allowed = {_real(p) for p in (_sys.base_prefix, _sys.prefix, _sys.exec_prefix, _sys.base_exec_prefix,
                               "/usr", "/etc", _pkg)}
_allowed |= {_real(p) for p in _sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}

def _under(p, roots):
    return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)

# none of these may exist at all, autograder/hidden included
_seen = ["!" + p for p in _FORBIDDEN if _o.path.lexists(p)]
try:
    _pids = sum(n.isdigit() for n in _o.listdir("/proc"))
    if _pids > 16:
        _seen.append(f"/proc:{_pids}-processes")
except OSError:
    pass

def _visit(d):
    try:
        names = sorted(_o.listdir(d))
    except OSError:
        return
    for n in names:
        p = (d.rstrip("/") + "/" + n)
        if p in ("/proc", "/sys", "/dev") or _under(p, _allowed):
            continue
        if _o.path.islink(p):
            if not _under(_real(p), _allowed):
                _seen.append(p + "@")
            continue
        if p == "/tmp" or any(r.startswith(p + "/") for r in _allowed):
            if _o.path.isdir(p):
                _visit(p)
                continue
        if d == "/tmp" and n not in _HOST_TMP:
            continue  # made by the sandbox itself, in its private /tmp
        _seen.append(p)

_visit("/")
if _seen:
    raise RuntimeError(f"VISIBLE {len(_seen)}: " + " ".join(_seen))
'''


def fill(template: str, **values) -> str:
    """The cell's source with each __NAME__ replaced by repr(values[name]); every placeholder must be filled."""
    for name, value in values.items():
        template = template.replace(f"__{name.upper()}__", repr(value))
    left = re.findall(r"__[A-Z][A-Z_]*__", template)
    assert not left, f"unfilled placeholders {left}"
    return template


# ------------------------------------------------------------------ session: copies, baseline


@dataclass
class World:
    base: Path
    first: Instructor
    """The instructor who runs pytest (root on these machines): its course copy holds the computed keys."""
    alone: Path
    """SUBMITTED with the honest student alone."""
    baseline_out: Path
    baseline_run: up.Run
    baseline: dict
    """The honest student graded alone: {(notebook, item): score}."""


def honest_edits() -> dict:
    return {nb: {"*": "solution"} for nb in NOTEBOOKS}


def db_scores(out: Path) -> dict[str, dict[tuple[str, str], float]]:
    db = sqlite3.connect(f"file:{out / 'gradebook.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT student_id, notebook_id, item_id, score FROM scores").fetchall()
    finally:
        db.close()
    out_: dict[str, dict] = {}
    for student, nb, item, score in rows:
        out_.setdefault(student, {})[(nb, item)] = score
    return out_


def db_details(out: Path) -> dict[tuple[str, str], dict]:
    db = sqlite3.connect(f"file:{out / 'gradebook.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT student_id, notebook_id, detail FROM submissions").fetchall()
    finally:
        db.close()
    return {(s, nb): json.loads(d) for s, nb, d in rows}


def csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def world():
    """The session's folder (/tmp/agc-*, readable by all), the first instructor's course copy, and the baseline."""
    base = Path(tempfile.mkdtemp(prefix="agc-", dir="/tmp"))
    base.chmod(0o755)
    first = Instructor("root" if IS_ROOT else "self", os.geteuid(), os.getegid(), [], sys.executable,
                       base / "first", f"agc{RUN}{'r' if IS_ROOT else 's'}")
    try:
        for d in (first.area, first.home, first.area / "cache"):
            d.mkdir(parents=True, exist_ok=True)
        up.copy_course(first.course, PROJECT / ".cache")
        demo_students.write_class(first.course / "demo" / "submitted",
                                  {"ada_complete": {nb: {"*": "solution"} for nb in NOTEBOOKS}})
        alone = first.area / "alone"
        demo_students.write_class(alone, {"honest": honest_edits()})
        out = first.course / "demo" / "out"  # where `make demo` writes: an earlier OUT folder inside the course
        run = first.grade(alone, out)
        assert run.returncode == 0, f"the honest student alone could not be graded:\n{run.output[-3000:]}"
        baseline = db_scores(out).get("honest", {})
        yield World(base, first, alone, out, run, baseline)
    finally:
        if not KEEP:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def nobody(world):
    """The unprivileged instructor: uid 65534 through setpriv (as root), or the test's own user (otherwise)."""
    if not IS_ROOT:
        problem = up.userns_problem([])
        if problem:
            pytest.skip(problem)
        return world.first
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot run the grader as an unprivileged user")
    if not os.access(up.DEBIAN_PYTHON, os.X_OK):
        pytest.skip(f"{up.DEBIAN_PYTHON} is missing: no interpreter an unprivileged user can run here")
    prefix = up.setpriv_prefix()
    problem = up.userns_problem(prefix)
    if problem:
        pytest.skip(problem)
    area = world.base / "nobody"
    area.mkdir()
    python = up.unprivileged_python(world.base)
    problem = up.python_can_import(prefix, str(python), ["torch", "numpy", "IPython", "nbformat", "yaml", "matplotlib"])
    if problem:
        pytest.skip(f"the unprivileged user cannot import the grader's packages with {python}: {problem}")
    ins = Instructor("unprivileged", up.NOBODY, up.NOBODY, prefix, str(python), area, f"agc{RUN}u")
    for d in (ins.home, area / "cache"):
        d.mkdir(parents=True)
    up.copy_course(ins.course, world.first.course / ".cache")
    shutil.copytree(world.first.course / "demo" / "submitted", ins.course / "demo" / "submitted")
    shutil.copytree(world.baseline_out, ins.course / "demo" / "out")
    ins.own(area)
    return ins


def earlier_out(world: World, ins: Instructor) -> Path:
    """An earlier OUT folder of this instructor (the honest student's baseline, in <course>/demo/out)."""
    return ins.course / "demo" / "out"


@pytest.fixture(scope="module", params=["root", "unprivileged"])
def instructor(request, world):
    if request.param == "root":
        if not IS_ROOT:
            pytest.skip("grading as root needs the tests to run as root")
        return world.first
    return request.getfixturevalue("nobody")


# ------------------------------------------------------------------ the hostile batch


@dataclass
class Batch:
    ins: Instructor
    sub: Path
    out: Path
    run: up.Run
    rows: dict
    scores: dict
    details: dict
    changes: list[str]
    """Files that changed outside OUT (course copy, $HOME, SUBMITTED, the earlier OUT, the shared tmp folders)."""
    strays: list[dict]
    """Processes of the run found after it anywhere on the machine (by name or by AGC_RUN)."""


def other_copies(world: World, ins: Instructor) -> list[str]:
    copies = [str(PROJECT)]
    if ins is not world.first:
        copies.append(str(world.first.course))
    return copies


def hostile_class(world: World, ins: Instructor, sub: Path, out: Path) -> dict:
    """Write the hostile class into `sub`; returns the students' edits ({student: {notebook: edits}})."""
    mark = ins.token
    earlier = earlier_out(world, ins)
    copies = other_copies(world, ins)
    ctx = dict(
        gitdirs=[str(ins.course / ".git")] + [c + "/.git" for c in copies],
        submitted_dirs=[str(ins.course / "demo" / "submitted")] + [c + "/demo/submitted" for c in copies] + [str(sub)],
        copies=copies,
        outs=[str(earlier)] + [c + "/demo/out" for c in copies if c != str(PROJECT)] + [str(out)],
        course=str(ins.course), out=str(out), home=str(ins.home), mark=mark, earlier=str(earlier),
    )
    students: dict[str, dict] = {"honest": honest_edits()}
    for thief in THIEVES:
        students[thief] = {}
        for nb, week in NOTEBOOKS.items():
            source = fill(PRELUDE, items=AUTO_ITEMS[nb], nbpath=f"{week}/{nb}.ipynb")
            source += fill(VECTORS[thief], me=thief, nbid=nb, **ctx) + EPILOGUE
            students[thief][nb] = {"+steal": source}
    key = shm_key(ins)
    students["aa_state_writer"] = {D06: {"*": "solution", "+state": fill(STATE_WRITE, mark=mark, key=key)}}
    students["zz_state_reader"] = {D06: {"*": "solution", "+state": fill(STATE_READ, mark=mark, key=key)}}
    students["daemon"] = {D06: {"*": "solution", "+daemon": fill(DAEMON, name=(mark + "d").encode(), linger=0.5)}}
    students["daemon_forger"] = {D06: {"*": "solution", "+daemon": fill(DAEMON, name=(mark + "f").encode(), linger=0.5),
                                       "+forge": FORGE}}
    forbidden = [str(ins.course / p) for p in ("solutions", ".git", "course.yml", "autograder/hidden", "demo", ".cache")]
    forbidden += [str(ins.home), str(sub), str(out), str(earlier), str(world.base / "first" / "alone")]
    forbidden += [c + "/solutions" for c in copies] + [c + "/.git" for c in copies]
    host_tmp = sorted(os.listdir("/tmp"))
    students["walker"] = {D06: {"*": "solution", "+walk": fill(WALK, forbidden=forbidden, host_tmp=host_tmp)}}
    students["eve"] = {D06: {}}
    demo_students.write_class(sub, students)
    # Attack 2: links in SUBMITTED
    (sub / "mallory").mkdir()
    os.symlink(ins.course / "solutions" / "week1", sub / "mallory" / "week1")
    os.symlink("honest", sub / "copycat")
    os.symlink("../honest/week2", sub / "eve" / "week2")
    return students


def shm_key(ins: Instructor) -> int:
    return 0x41000000 | (int(RUN, 16) & 0xFFFFF) << 1 | (ins.uid != 0)


def marks_of(ins: Instructor) -> tuple[str, ...]:
    return (ins.token,)


def cleanup_marks(ins: Instructor, shared_new: list[str] = ()) -> None:
    """Remove what this instructor's attackers may have left on the machine (files, shm segment, processes)."""
    up.kill_pids(up.processes_of(names=daemon_names(ins), token=ins.token))
    paths = []
    for d in up.SHARED_DIRS:
        try:
            paths += [os.path.join(d, n) for n in os.listdir(d) if ins.token in n]
        except OSError:
            pass
    up.remove_paths(paths)
    up.remove_shm(shm_key(ins))
    if ins.uid != os.geteuid():
        # entries the unprivileged instructor's run made at the top of the shared folders (a user of its own:
        # nothing else on the machine runs as it while the run lasts)
        up.remove_paths([line.split()[1] for line in shared_new if line.startswith("new ")
                         and os.path.lexists(line.split()[1]) and os.lstat(line.split()[1]).st_uid == ins.uid])


def daemon_names(ins: Instructor) -> tuple[str, ...]:
    return tuple(ins.token + s for s in ("d", "f", "k"))


def watched_trees(world: World, ins: Instructor, sub: Path) -> dict[str, Path]:
    return {"course": ins.course, "home": ins.home, "submitted": sub, "earlier OUT": earlier_out(world, ins)}


@pytest.fixture(scope="module")
def batch(world, instructor):
    """The hostile class graded in one batch by this instructor, with what changed and what was left running."""
    ins = instructor
    sub, out = ins.area / "hostile", ins.area / "hostile-out"
    cleanup_marks(ins)
    hostile_class(world, ins, sub, out)
    ins.own(sub)
    trees = watched_trees(world, ins, sub)
    before = {name: up.tree_digest(path) for name, path in trees.items()}
    shared_before = up.shared_listing()
    try:
        run = ins.grade(sub, out)
        strays = up.processes_of(names=daemon_names(ins), token=ins.token)
        changes = []
        for name, path in trees.items():
            changes += [f"{name}: {c}" for c in up.tree_changes(before[name], up.tree_digest(path))]
        shared = up.shared_changes(shared_before, up.shared_listing(), marks_of(ins))
        changes += shared
        ok = (out / "gradebook.db").exists()
        yield Batch(ins, sub, out, run, csv_rows(out) if (out / "gradebook.csv").exists() else {},
                    db_scores(out) if ok else {}, db_details(out) if ok else {}, changes, strays)
    finally:
        cleanup_marks(ins, shared if "shared" in locals() else [])


@pytest.fixture(scope="module")
def killed(world, instructor):
    """A batch whose grader is SIGKILLed while a sandbox runs a daemon: what is left of the run afterwards."""
    ins = instructor
    sub, out = ins.area / "killed", ins.area / "killed-out"
    name = ins.token + "k"
    demo_students.write_class(sub, {"daemon_k": {D06: {"*": "solution",
                                                       "+daemon": fill(DAEMON, name=name.encode(), linger=7)}}})
    ins.own(sub)
    shared_before = up.shared_listing()
    try:
        run = ins.grade(sub, out, "--workers", "1", kill_when=lambda: bool(up.processes_of(names=(name,))))
        strays = up.processes_of(names=daemon_names(ins), token=ins.token)
        yield run, strays
    finally:
        cleanup_marks(ins, up.shared_changes(shared_before, up.shared_listing(), marks_of(ins)))


def _graded(batch: Batch, *students: str) -> None:
    """Precondition of a batch test: the batch ran and recorded these students (else the test would pass vacuously)."""
    missing = [s for s in students if not any(k[0] == s for k in batch.details)]
    assert batch.details and not missing, (f"the batch did not grade {missing or 'anyone'} (exit "
                                           f"{batch.run.returncode}):\n{batch.run.output[-2000:]}")


def _messages(batch: Batch, student: str) -> str:
    parts = []
    for (s, nb), detail in batch.details.items():
        if s != student:
            continue
        parts.append(f"[{nb}] status={detail.get('status')} {detail.get('message', '')}")
        parts += [f"[{nb}] cell {c.get('index')}: {c.get('error', '')}" for c in detail.get("cell_problems", [])]
    return "\n".join(parts)


def _describe(procs: list[dict]) -> str:
    return "\n".join(f"  pid {p['pid']} ({p.get('comm')}, uid {p.get('uid', '?')}): {p.get('cmdline', '')}" for p in procs)


# ------------------------------------------------------------------ tests


def test_honest_student_alone_is_graded_in_full(world):
    """Harness check: does the honest student, graded alone by the test's own user, get every point, leaving nothing?"""
    assert world.baseline_run.returncode == 0, world.baseline_run.output[-3000:]
    expected = {(nb, item) for nb, items in AUTO_ITEMS.items() for item in items}
    assert set(world.baseline) >= expected
    from autograder.config import load_course

    course = load_course()
    for nb, item in expected:
        _, it = course.item(item)
        assert world.baseline[(nb, item)] == it.points, (nb, item, world.baseline[(nb, item)])
    assert world.baseline_run.left == [], _describe(world.baseline_run.left)


def test_the_batch_exits_0(batch):
    """Does grading a class full of attacks complete with exit code 0?"""
    assert batch.run.returncode == 0, batch.run.output[-4000:]
    assert "honest" in batch.rows, batch.run.output[-4000:]


@pytest.mark.parametrize("attacker", THIEVES)
def test_attacker_gets_no_point_it_did_not_earn(batch, attacker):
    """Does a submission whose stubs are untouched, and that reaches for the solutions or the grades some other
    way (git history, demo/submitted and other submissions, other copies of the course, the grader package's
    own folder, an earlier OUT folder, writing into OUT/gradebook.db), get 0 on every item and read nothing?"""
    _graded(batch, attacker)
    scores = batch.scores.get(attacker, {})
    row = batch.rows.get(attacker, {})
    gained = {f"{nb}:{item}": (scores.get((nb, item)), row.get(item)) for nb, items in ALL_ITEMS.items()
              for item in items if scores.get((nb, item), 0) != 0 or float(row.get(item, 0) or 0) != 0}
    messages = _messages(batch, attacker)
    assert gained == {}, f"{attacker} scored on untouched stubs: {gained}\n{messages}"
    assert "LEAK" not in messages, f"{attacker} reached what it must not see:\n{messages}"


def test_links_in_submitted_are_refused_and_reported(batch):
    """Is a folder in SUBMITTED that is a link (to the solutions, to another student or another student's week)
    refused and named in grade's output, and never graded as that student?"""
    _graded(batch, "honest")
    missing = [link for link in LINKS if link not in batch.run.output]
    graded = {}
    for (student, nb), detail in batch.details.items():
        if student in ("mallory", "copycat") or (student, nb) == ("eve", D08):
            points = {k: v for k, v in batch.scores.get(student, {}).items() if k[0] == nb and v}
            if detail.get("status") == "graded" or points:
                graded[f"{student}/{nb}"] = points
    for student in ("mallory", "copycat"):
        if student in batch.rows and float(batch.rows[student]["total"]):
            graded[f"{student} (gradebook.csv)"] = batch.rows[student]["total"]
    assert not graded, f"graded through a link: {graded}"
    assert not missing, f"links not reported by grade: {missing}\n--- output:\n{batch.run.output[-3000:]}"


def test_honest_student_is_graded_as_if_alone(world, batch):
    """Are the honest student's per-item scores, beside every attack, the same as when graded alone?"""
    _graded(batch, "honest")
    got = batch.scores.get("honest", {})
    assert got == world.baseline, {k: (got.get(k), v) for k, v in world.baseline.items() if got.get(k) != v}
    total = sum(v for (nb, _), v in world.baseline.items())
    assert float(batch.rows["honest"]["total"]) == total


def test_no_file_outside_out_changed(batch):
    """After the batch, are the course copy, the instructor's $HOME, SUBMITTED, the earlier OUT folder and the
    shared temporary folders (/tmp, /var/tmp, /dev/shm, /run/lock) exactly as before?"""
    _graded(batch, "writer", "aa_state_writer", "daemon")
    assert batch.changes == [], "\n".join(batch.changes[:60])


def test_no_process_left_after_the_batch(batch):
    """When the batch ends (a double-forked daemon that ignores SIGTERM, and a sandbox whose malformed event
    made its worker fail), is no process of the run left anywhere?"""
    _graded(batch, "daemon", "daemon_forger")
    daemon = [c for (s, _), d in batch.details.items() if s == "daemon" for c in d.get("cell_problems", [])]
    assert not daemon, f"the daemon was never started: {daemon}"
    assert batch.run.left == [], "processes of the run alive after grade exited:\n" + _describe(batch.run.left)
    assert batch.strays == [], "processes of the run found on the machine:\n" + _describe(batch.strays)


def test_no_process_left_after_sigkill_of_the_grader(killed):
    """When the grader is SIGKILLed mid-batch while a sandbox runs a daemon, is no process of the run left?"""
    run, strays = killed
    assert run.killed_grader, f"the daemon never appeared, so the grader was not killed mid-batch:\n{run.output[-3000:]}"
    assert run.left == [], "processes of the run alive after the grader was killed:\n" + _describe(run.left)
    assert strays == [], "processes of the run found on the machine:\n" + _describe(strays)


def test_no_state_shared_between_sandboxes(world, batch):
    """Does a student graded later in the batch see nothing a previous one left in /run/lock, /tmp, /dev/shm,
    /var/tmp or a System V shared-memory segment (the reader loses a point if it does)?"""
    _graded(batch, "aa_state_writer", "zz_state_reader")
    messages = _messages(batch, "zz_state_reader")
    assert "LEAK" not in messages, messages
    assert batch.scores.get("zz_state_reader") == baseline_of(world, D06), messages
    assert batch.scores.get("aa_state_writer") == baseline_of(world, D06), _messages(batch, "aa_state_writer")


def test_sandbox_sees_only_its_allow_list(world, batch):
    """Walking / from inside a sandbox, does nothing exist beyond the interpreter, the installed packages, the
    grader package without hidden/, /usr, /etc, /dev, a fresh /proc and an empty private /tmp (no course root,
    .git, solutions, course.yml, demo/, SUBMITTED, OUT or an earlier OUT, no $HOME, /run or /var)?"""
    _graded(batch, "walker")
    messages = _messages(batch, "walker")
    assert "VISIBLE" not in messages, messages
    assert "cell" not in messages, f"the walk did not complete:\n{messages}"
    assert batch.scores.get("walker") == baseline_of(world, D06), messages


def baseline_of(world: World, notebook: str) -> dict:
    """The honest student's scores on one notebook, graded alone."""
    return {k: v for k, v in world.baseline.items() if k[0] == notebook}


def _unprivileged_only(ins: Instructor) -> None:
    if ins.uid == 0:
        pytest.skip("as root the grader needs no user namespace: nothing to refuse")


def test_grade_refuses_without_user_namespaces(world, instructor, batch):
    """Where an unprivileged instructor cannot create user namespaces (a seccomp filter refuses them to the
    grader's process tree), does grade refuse (exit 2) with a message that says so and names --no-sandbox,
    instead of grading unconfined; and does it refuse only then?"""
    _unprivileged_only(instructor)
    assert batch.run.returncode != 2, ("grade refused even where user namespaces work (see "
                                       f"test_the_batch_exits_0):\n{batch.run.output[-2000:]}")
    out = instructor.area / "refused-out"
    shared_before = up.shared_listing()
    try:
        run = instructor.grade(nobody_alone(world, instructor), out, wrap=[instructor.python, "-c", up.NO_USERNS])
    finally:
        cleanup_marks(instructor, up.shared_changes(shared_before, up.shared_listing(), marks_of(instructor)))
    assert run.returncode == 2, f"exit {run.returncode}\n{run.output[-3000:]}"
    text = run.output.lower()
    assert "namespace" in text and "--no-sandbox" in text, run.output[-3000:]
    assert not (out / "gradebook.db").exists() or not db_scores(out), "submissions were graded without a sandbox"
    assert run.left == [], _describe(run.left)


def test_no_sandbox_grades_without_user_namespaces(world, instructor):
    """With an explicit --no-sandbox, does grade still grade (exit 0, the honest student as when alone) where
    user namespaces are unavailable?"""
    _unprivileged_only(instructor)
    out = instructor.area / "no-sandbox-out"
    shared_before = up.shared_listing()
    try:
        run = instructor.grade(nobody_alone(world, instructor), out, "--no-sandbox",
                               wrap=[instructor.python, "-c", up.NO_USERNS])
    finally:  # unconfined, the notebooks' working folders land in the machine's /tmp
        cleanup_marks(instructor, up.shared_changes(shared_before, up.shared_listing(), marks_of(instructor)))
    assert run.returncode == 0, f"exit {run.returncode}\n{run.output[-3000:]}"
    assert db_scores(out).get("honest") == world.baseline
    assert run.left == [], _describe(run.left)


def nobody_alone(world: World, ins: Instructor) -> Path:
    dest = ins.area / "alone"
    if not dest.exists():
        shutil.copytree(world.alone, dest)
        ins.own(dest)
    return dest
