"""course.yml: typed, validated, cross-checked with the course's files, with messages that say what to fix."""
from __future__ import annotations

import copy
import random
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from autograder.config import ROOT, ConfigError, load_course
from autograder.crosscheck import check_course_files


def write(tmp_path, mutate):
    data = yaml.safe_load((ROOT / "course.yml").read_text())
    mutate(data)
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_course_loads_with_unique_ids(course):
    """Does the repository's course.yml load, with every item id unique and an identifier?"""
    ids = course.item_ids
    assert len(ids) == len(set(ids))
    assert "scaled_dot_product_attention" in ids
    assert all(nb.week for nb in course.notebooks)


def test_unknown_key_suggests_the_closest(tmp_path):
    """Does a misspelt key name the file, the key and the key that was probably meant?"""
    path = write(tmp_path, lambda d: d["grading"]["limits"].update(cell_secnds=3))
    with pytest.raises(ConfigError) as err:
        load_course(path)
    msg = str(err.value)
    assert str(path) in msg and "cell_secnds" in msg and "did you mean 'cell_seconds'" in msg


def test_wrong_type_is_named(tmp_path):
    """Is a value of the wrong type rejected with its full key?"""
    path = write(tmp_path, lambda d: d["grading"].update(hidden_seed="abc"))
    with pytest.raises(ConfigError, match=r"course\.grading\.hidden_seed should be a non-negative integer"):
        load_course(path)


def test_duplicate_item_id_is_rejected(tmp_path):
    """Can the same id be listed twice (it would be two gradebook columns with one name)?"""
    def dup(d):
        items = d["weeks"][0]["notebooks"][0]["items"]
        items.append(dict(items[0]))
    with pytest.raises(ConfigError, match="appears twice"):
        load_course(write(tmp_path, dup))


def test_missing_required_key(tmp_path):
    """Is a missing required key reported by name?"""
    path = write(tmp_path, lambda d: d["grading"].pop("hidden_seed"))
    with pytest.raises(ConfigError, match="missing key course.grading.hidden_seed"):
        load_course(path)


def test_unknown_item_suggests(course):
    """Does asking for a misspelt item id suggest the right one?"""
    with pytest.raises(ConfigError, match="did you mean 'causal_mask'"):
        course.item("casual_mask")


# --- course.yml against the files: solutions/, exercises/, hidden/ -----------------------------

BASE = yaml.safe_load((ROOT / "course.yml").read_text())
BASE_TEXT = (ROOT / "course.yml").read_text()


def load_checked(path, root=ROOT):
    """What a command does first: load course.yml and cross-check it with the course's files."""
    course = load_course(path)
    check_course_files(course, root=root)
    return course


def test_the_course_matches_its_files(course):
    """Do the repository's course.yml, solution notebooks, exercises/ and hidden/ agree?"""
    check_course_files(course)


def test_misspelt_item_names_file_item_and_guess(tmp_path):
    """Does a misspelt item id in course.yml name course.yml, the item, the files lacking it and the id meant?"""
    path = tmp_path / "course.yml"
    path.write_text(BASE_TEXT.replace("{id: softmax,", "{id: sofmax,"))
    with pytest.raises(ConfigError) as err:
        load_checked(path)
    msg = str(err.value)
    assert str(path) in msg and "'sofmax'" in msg and "did you mean 'softmax'?" in msg
    for where in ("solutions/week1/day03_attention_mechanism.ipynb",
                  "autograder/exercises/day03_attention_mechanism.py",
                  "autograder/hidden/day03_attention_mechanism.py"):
        assert where in msg
    assert len(msg.splitlines()) == 1, "one mistake, one line (not also every file that names 'softmax')"


def test_items_out_of_their_cells_order(tmp_path):
    """Are two items listed in another order than their cells named, with the order to use?"""
    path = tmp_path / "course.yml"
    path.write_text(BASE_TEXT.replace("{id: dot_score, points: 1}\n          - {id: multiplicative_score, points: 1}",
                                      "{id: multiplicative_score, points: 1}\n          - {id: dot_score, points: 1}"))
    assert path.read_text() != BASE_TEXT
    with pytest.raises(ConfigError, match=r"items of day03_attention_mechanism are listed in another order than "
                                          r"their cells in solutions/week1/day03_attention_mechanism\.ipynb: "
                                          r"list them as softmax, dot_score, multiplicative_score"):
        load_checked(path)


def test_misspelt_notebook_and_wrong_week(tmp_path):
    """Is a misspelt notebook id, or a notebook listed under the wrong week, explained instead of 'missing'?"""
    path = tmp_path / "course.yml"
    path.write_text(BASE_TEXT.replace("id: day03_attention_mechanism", "id: day03_atention_mechanism"))
    with pytest.raises(ConfigError, match="did you mean 'day03_attention_mechanism'"):
        load_checked(path)

    def move(d):
        d["weeks"][1]["notebooks"].insert(0, d["weeks"][0]["notebooks"].pop())
    with pytest.raises(ConfigError, match=r"found solutions/week1/day06_scaled_dot_product_attention\.ipynb: "
                                          r"is day06_scaled_dot_product_attention listed under the right week"):
        load_checked(write(tmp_path, move))


def test_yaml_mistakes_are_config_errors(tmp_path):
    """Do a key written twice, an impossible date and a binary file end in ConfigError, not a YAML or ValueError?"""
    path = tmp_path / "course.yml"
    path.write_text(BASE_TEXT.replace("  hidden_seed: 73193\n", "  hidden_seed: 73193\n  hidden_seed: 5\n"))
    with pytest.raises(ConfigError, match="'hidden_seed' appears twice"):
        load_course(path)
    path.write_text(BASE_TEXT.replace("  - id: week1\n", "  - id: week1\n    due: 2026-13-45\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_course(path)
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_course(path)


def test_student_release_checks_what_it_has(tmp_path, course):
    """Without solutions/ and hidden/ (as in the student release), is the cross-check limited to exercises/?"""
    shutil.copytree(ROOT / "autograder" / "exercises", tmp_path / "autograder" / "exercises")
    check_course_files(course, root=tmp_path)
    text = (tmp_path / "autograder/exercises/day03_attention_mechanism.py").read_text()
    (tmp_path / "autograder/exercises/day03_attention_mechanism.py").write_text(
        text.replace('Exercise("dot_score"', 'Exercise("dot_scor"'))
    with pytest.raises(ConfigError, match=r"'dot_score' of day03_attention_mechanism is missing from autograder/"
                                          r"exercises/day03_attention_mechanism\.py .*did you mean 'dot_scor'"):
        check_course_files(course, root=tmp_path)


# The fuzzer: random instructor mistakes, each must end in ConfigError or a course that grades.

WRONG_VALUES = [None, "abc", "", -1, -0.5, 0, 1.5, True, [], {}, [1, 2], {"id": "x"}, float("nan"), float("inf"),
                10**30, "2026-01-16", "2026-01-16T23:59:00", "2026-01-16T23:59:00+01:00", "softmax", "week1"]


def _typo(rng: random.Random, word: str) -> str:
    """A misspelling that keeps `word` recognisable (difflib's 0.6 cutoff) and an identifier."""
    for _ in range(20):
        i = rng.randrange(1, len(word))
        kind = rng.choice(["drop", "swap", "double", "replace"])
        if kind == "drop":
            new = word[:i] + word[i + 1:]
        elif kind == "swap" and i < len(word) - 1:
            new = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "double":
            new = word[:i] + word[i] + word[i:]
        else:
            new = word[:i] + rng.choice("aeioustxz") + word[i + 1:]
        if new != word:
            return new
    return word + "x"


def _mappings(node, out=None):
    out = [] if out is None else out
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            _mappings(v, out)
    elif isinstance(node, list):
        for v in node:
            _mappings(v, out)
    return out


def _notebooks(d):
    return [nb for w in d["weeks"] for nb in w["notebooks"]]


def _items(d):
    return [(nb, it) for nb in _notebooks(d) for it in nb["items"]]


def mutate_data(rng: random.Random, d: dict) -> tuple[str, str | None]:
    """Apply one random instructor mistake to the course data; returns (what, expected substring or None)."""
    kind = rng.choice(["key_typo", "drop_key", "wrong_value", "item_typo", "notebook_typo", "week_typo",
                       "dup_item", "dup_notebook", "move_item", "drop_item", "drop_notebook", "flip_manual",
                       "negative_points", "unknown_key", "swap_weeks", "reserved_id", "points"])
    nb, it = rng.choice(_items(d))
    if kind == "key_typo":
        m = rng.choice(_mappings(d))
        key = rng.choice(list(m))
        m[_typo(rng, key)] = m.pop(key)
        return f"{kind} {key}", None
    if kind == "drop_key":
        m = rng.choice(_mappings(d))
        key = rng.choice(list(m))
        del m[key]
        return f"{kind} {key}", None
    if kind == "wrong_value":
        m = rng.choice(_mappings(d))
        key = rng.choice(list(m))
        m[key] = copy.deepcopy(rng.choice(WRONG_VALUES))
        return f"{kind} {key}={m[key]!r}", None
    if kind == "item_typo":
        old = it["id"]
        it["id"] = _typo(rng, old)
        taken = {i["id"] for _, i in _items(d)} - {it["id"]}
        return f"{kind} {old}->{it['id']}", None if it["id"] in taken else "did you mean"
    if kind == "notebook_typo":
        old = nb["id"]
        nb["id"] = _typo(rng, old)
        return f"{kind} {old}->{nb['id']}", "did you mean"
    if kind == "week_typo":
        w = rng.choice(d["weeks"])
        old = w["id"]
        w["id"] = _typo(rng, old)
        return f"{kind} {old}->{w['id']}", None
    if kind == "dup_item":
        target = rng.choice(_notebooks(d))
        target["items"].insert(rng.randrange(len(target["items"]) + 1), dict(it))
        return f"{kind} {it['id']}", "twice"
    if kind == "dup_notebook":
        w = rng.choice(d["weeks"])
        w["notebooks"].append(copy.deepcopy(nb))
        return f"{kind} {nb['id']}", "twice"
    if kind == "move_item":
        nb["items"].remove(it)
        target = rng.choice(_notebooks(d))
        target["items"].insert(rng.randrange(len(target["items"]) + 1), it)
        return f"{kind} {it['id']}->{target['id']}", None if target is nb else "right notebook"
    if kind == "drop_item":
        nb["items"].remove(it)
        return f"{kind} {it['id']}", None
    if kind == "drop_notebook":
        for w in d["weeks"]:
            if nb in w["notebooks"]:
                w["notebooks"].remove(nb)
        return f"{kind} {nb['id']}", None
    if kind == "flip_manual":
        it["manual"] = not it.get("manual", False)
        return f"{kind} {it['id']}", "manual"
    if kind == "negative_points":
        it["points"] = -abs(it["points"]) - 1
        return f"{kind} {it['id']}", "non-negative"
    if kind == "unknown_key":
        m = rng.choice(_mappings(d))
        m[rng.choice(["comment", "point", "due_date", "hidden", "weight"])] = 1
        return kind, "unknown key"
    if kind == "swap_weeks" and len(d["weeks"]) > 1:
        a, b = d["weeks"][0], d["weeks"][1]
        a["id"], b["id"] = b["id"], a["id"]
        return kind, "right week"
    if kind == "reserved_id":
        it["id"] = rng.choice(["test_", "reuse_"]) + it["id"]
        return f"{kind} {it['id']}", "rename it"
    it["points"] = rng.choice([0, 0.5, 100, "2", None, "", [2]])
    return f"points {it['id']}={it['points']!r}", None


def mutate_text(rng: random.Random, text: str) -> str:
    """A mistake made while typing: a line lost, doubled or mangled, or the file cut short."""
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    kind = rng.choice(["delete", "double", "tab", "colon", "bracket", "indent", "cut", "digit"])
    if kind == "delete":
        del lines[i]
    elif kind == "double":
        lines.insert(i, lines[i])
    elif kind == "tab":
        lines[i] = "\t" + lines[i]
    elif kind == "colon":
        lines[i] = lines[i].replace(":", " ", 1)
    elif kind == "bracket":
        lines[i] = lines[i].replace("}", "", 1) if "}" in lines[i] else lines[i] + "{\n"
    elif kind == "indent":
        lines[i] = lines[i][2:] if lines[i].startswith("  ") else "   " + lines[i]
    elif kind == "cut":
        return text[:rng.randrange(len(text))]
    else:
        lines[i] = re.sub(r"\d", lambda m: rng.choice("x-.9 "), lines[i], count=1)
    return "".join(lines)


def _grades_without_keyerror(course):
    """What grading looks up first: every item's exercise, hidden cases, mistakes and case generators."""
    from autograder import reference
    from autograder.exercise import exercises, hidden_module

    for nb in course.notebooks:
        reference.build_cases(course, nb)  # exercises[id], HIDDEN_CASES[id], the seeds
        exs = exercises(nb.id)
        for item in nb.auto_items:
            hidden_module(nb.id).MISTAKES.get(item.id, [])
            for need in exs[item.id].needs:
                course.item(need)
    reference.limits_dict(course)


def _outcome(path, root=ROOT):
    try:
        course = load_checked(path, root)
    except ConfigError as exc:
        return str(exc)
    _grades_without_keyerror(course) if root == ROOT else None
    return None


def test_fuzzed_course_yml_ends_in_config_error_or_a_working_course(tmp_path):
    """Does every random instructor mistake in course.yml end in a ConfigError (or a course that grades), never
    another exception, and do misspelt ids get a "did you mean"?"""
    rng = random.Random(16)
    path = tmp_path / "course.yml"
    errors, crashes = 0, []
    for trial in range(240):
        d = copy.deepcopy(BASE)
        if trial % 4 == 3:
            what, expect = "text " + str(trial), None
            path.write_text(mutate_text(rng, BASE_TEXT))
        else:
            what, expect = mutate_data(rng, d)
            if rng.random() < 0.3:  # a second mistake, where the first one left something to break
                try:
                    what += " + " + mutate_data(rng, d)[0]
                except (KeyError, TypeError, AttributeError, IndexError, ValueError):
                    pass
                expect = None
            path.write_text(yaml.safe_dump(d, sort_keys=False))
        try:
            msg = _outcome(path)
        except Exception as exc:  # noqa: BLE001 - the point: nothing but ConfigError may come out
            crashes.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        if msg is not None:
            errors += 1
            assert "Traceback" not in msg
        if expect is not None:
            assert msg is not None and expect in msg, f"{what}: expected {expect!r} in {msg!r}"
    assert not crashes, "\n".join(crashes[:10])
    assert errors > 150, f"only {errors} of 240 mistakes were caught: the fuzzer or the checks are too weak"


FILE_MUTATIONS = [
    # (what, file under root, regex, replacement, expected in the message)
    ("exercise id misspelt", "autograder/exercises/day03_attention_mechanism.py", r'Exercise\("softmax"',
     'Exercise("sofmax"', "did you mean 'sofmax'"),
    ("exercise dropped", "autograder/exercises/day01_rnn_limitations.py", r'    Exercise\("hidden_gradient_norms".*\n',
     "", "hidden_gradient_norms' of day01_rnn_limitations is missing from autograder/exercises"),
    ("exercise twice", "autograder/exercises/day01_rnn_limitations.py", r'(    Exercise\("rnn_forward".*\n)',
     r"\1\1", "'rnn_forward' twice"),
    ("needs misspelt", "autograder/exercises/day03_attention_mechanism.py", r'needs=\("softmax"',
     'needs=("softmx"', "needs 'softmx'"),
    ("hidden cases misspelt", "autograder/hidden/day03_attention_mechanism.py", r'"softmax": softmax_hidden',
     '"softmaxx": softmax_hidden', "HIDDEN_CASES) (did you mean 'softmaxx'?)"),
    ("hidden cases dropped", "autograder/hidden/day13_training.py", r'    "noam_lr": noam_hidden,\n', "",
     "autograder/hidden/day13_training.py (HIDDEN_CASES)"),
    ("mistakes misspelt", "autograder/hidden/day03_attention_mechanism.py", r'"softmax": SOFTMAX_MISTAKES',
     '"softmx": SOFTMAX_MISTAKES', "MISTAKES names 'softmx'"),
    ("exercise syntax error", "autograder/exercises/day06_scaled_dot_product_attention.py", r"EXERCISES = \[",
     "EXERCISES = [[", "day06_scaled_dot_product_attention.py: line"),
    ("hidden syntax error", "autograder/hidden/day01_rnn_limitations.py", r"HIDDEN_CASES = \{", "HIDDEN_CASES = {{(",
     "day01_rnn_limitations.py: line"),
    ("grade_id misspelt", "solutions/week1/day03_attention_mechanism.ipynb", r'"grade_id": "dot_score"',
     '"grade_id": "dot_scor"', "did you mean 'dot_scor'"),
    ("test cell misspelt", "solutions/week1/day03_attention_mechanism.ipynb", r'"grade_id": "test_dot_score"',
     '"grade_id": "test_dot_scor"', "test cell names 'test_dot_scor'"),
    ("earlier import misspelt", "solutions/week2/day08_multi_head_attention.ipynb",
     r'from autograder.earlier import scaled_dot_product_attention"',
     'from autograder.earlier import scaled_dot_product_atention"', "did you mean 'scaled_dot_product_attention'"),
    ("earlier import of a later item", "solutions/week2/day08_multi_head_attention.ipynb",
     r'from autograder.earlier import scaled_dot_product_attention"',
     'from autograder.earlier import scaled_dot_product_attention, layer_norm"',
     "layer_norm is an item of day10_transformer, which does not come before day08_multi_head_attention"),
    ("solution not JSON", "solutions/week1/day01_rnn_limitations.ipynb", r"\A\{", "{{", "not a readable notebook"),
    # a module the cross-check cannot read without running it is not taken for a mistake
    ("not literal", "autograder/exercises/day01_rnn_limitations.py", r"EXERCISES = \[", "EXERCISES = [] + [", None),
]


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory):
    """A copy of the files the cross-check reads, to break one at a time."""
    root = tmp_path_factory.mktemp("course")
    for part in ("solutions", "autograder/exercises", "autograder/hidden"):
        shutil.copytree(ROOT / part, root / part)
    return root


@pytest.mark.parametrize("what,rel,pattern,replacement,expect", FILE_MUTATIONS, ids=[m[0] for m in FILE_MUTATIONS])
def test_mistakes_in_the_course_files(course_copy, course, what, rel, pattern, replacement, expect):
    """Does a mistake in a solution notebook, exercises/ or hidden/ end in a ConfigError naming the file and the
    item (with a "did you mean" for misspellings), never a KeyError or SyntaxError?"""
    path = course_copy / rel
    original = path.read_text()
    broken = re.sub(pattern, replacement, original, count=1)
    assert broken != original, f"{what}: the mutation did not apply"
    path.write_text(broken)
    try:
        if expect is None:
            check_course_files(course, root=course_copy)
        else:
            with pytest.raises(ConfigError) as err:
                check_course_files(course, root=course_copy)
            assert expect in str(err.value) and (rel in str(err.value) or "course.yml" in str(err.value))
    finally:
        path.write_text(original)
    check_course_files(course, root=course_copy)


def test_missing_and_moved_files(course_copy, course):
    """Is a hidden module that is missing, or a solution notebook in another week's folder, named with where it is?"""
    hidden = course_copy / "autograder/hidden/day08_multi_head_attention.py"
    saved = hidden.read_bytes()
    hidden.unlink()
    try:
        with pytest.raises(ConfigError, match=r"autograder/hidden/day08_multi_head_attention\.py: missing"):
            check_course_files(course, root=course_copy)
    finally:
        hidden.write_bytes(saved)
    src = course_copy / "solutions/week2/day13_training.ipynb"
    dest = course_copy / "solutions/week1/day13_training.ipynb"
    src.rename(dest)
    try:
        with pytest.raises(ConfigError, match=r"found solutions/week1/day13_training\.ipynb"):
            check_course_files(course, root=course_copy)
    finally:
        dest.rename(src)


def _misspelt_course(tmp_path):
    path = tmp_path / "course.yml"
    path.write_text(BASE_TEXT.replace("{id: softmax,", "{id: sofmax,"))
    return path


def test_cli_misspelt_item_exits_2_without_traceback(tmp_path):
    """Does `python -m autograder build` on a course.yml with a misspelt item id exit 2 with "did you mean",
    and no traceback?"""
    proc = subprocess.run([sys.executable, "-m", "autograder", "--course", str(_misspelt_course(tmp_path)), "build"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "did you mean 'softmax'" in proc.stderr and "sofmax" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("argv", [
    ["build"], ["build", "day03_attention_mechanism"], ["normalize"],
    ["check", "weeks/week1/day03_attention_mechanism.ipynb"],
    ["grade", "SUB", "--out", "OUT"], ["report", "OUT"], ["release", "OUT"], ["gradescope", "OUT/g.zip"],
    ["import", "nbgrader", "SUB", "--into", "OUT"], ["manual", "OUT"], ["finalize", "SUB", "--out", "OUT"],
], ids=lambda a: " ".join(a[:2]))
def test_every_command_checks_the_course(tmp_path, capsys, argv):
    """Does every subcommand that loads the course stop with exit 2 and the "did you mean" before doing anything?"""
    from autograder.__main__ import main

    argv = [a.replace("SUB", str(tmp_path / "sub")).replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(["--course", str(_misspelt_course(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'softmax'" in err
    assert not (tmp_path / "out").exists(), "the command ran on a broken course"


def test_build_names_an_unknown_notebook(capsys):
    """Does `build` with a misspelt notebook id say which one was meant, instead of building nothing?"""
    from autograder.__main__ import main

    assert main(["build", "day03_atention_mechanism"]) == 2
    assert "did you mean 'day03_attention_mechanism'" in capsys.readouterr().err


def test_modules_that_cannot_be_read_statically_are_imported(tmp_path, monkeypatch, course):
    """When EXERCISES or HIDDEN_CASES is not a literal (built by code), are the course's own modules imported
    instead, with the same verdicts: the course passes and a misspelt item is caught?"""
    from autograder import crosscheck

    def not_static(tree, name):
        raise crosscheck._NotStatic

    monkeypatch.setattr(crosscheck, "_assigned", not_static)
    monkeypatch.setattr(crosscheck, "_CACHE", {})
    check_course_files(course)
    with pytest.raises(ConfigError, match="did you mean 'softmax'"):
        load_checked(_misspelt_course(tmp_path))
