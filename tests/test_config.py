"""course.yml: typed, validated, with messages that say what to fix."""
from __future__ import annotations

import pytest
import yaml

from autograder.config import ROOT, ConfigError, load_course


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
    with pytest.raises(ConfigError, match=r"course\.grading\.hidden_seed should be an integer"):
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
