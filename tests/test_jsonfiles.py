"""The one JSON parser with line numbers (longvid.data.jsonfiles) that MA-LMM's and ReWind's readers share."""

import json

import pytest

from longvid.data.annotations import AnnotationError
from longvid.data.jsonfiles import LinedDict, LinedList, read_json, read_json_object
from longvid.malmm.datasets import MALMM_JSON, json_entries


def write(path, text):
    path.write_text(text)
    return str(path)


def test_containers_and_keys_know_their_lines(tmp_path):
    text = '{\n "a": [\n  {"b": 1},\n  [2]\n ],\n "c": {}\n}\n'
    parsed = read_json(write(tmp_path / "f.json", text))
    assert parsed == json.loads(text)
    assert isinstance(parsed, LinedDict) and isinstance(parsed["a"], LinedList)
    assert (parsed.line, parsed["a"].line, parsed["a"][0].line, parsed["a"][1].line, parsed["c"].line) == (1, 2, 3, 4, 6)
    # the members of a top-level object: the key's line, plain values, a repeated key kept twice
    members = read_json_object(write(tmp_path / "g.json", '{"x": {"y": [1]},\n"x": 2}'), "not an object")
    assert members == [("x", {"y": [1]}, 1), ("x", 2, 2)] and type(members[0][1]) is dict


@pytest.mark.parametrize("text, rewind, malmm", [
    ('{\n "a": 1,\n}', "3: invalid JSON (Expecting value)", "3: expected a quoted key"),
    ('{\n "a" 1}', "2: invalid JSON (expected ':')", "2: expected ':' after the key"),
    ('{"a": 1\n "b": 2}', "2: invalid JSON (expected ',' or '}')", "2: expected ',' or '}'"),
    ('{"a": tru}', "1: invalid JSON (Expecting value)", "1: invalid JSON (Expecting value)"),
    ('{"a": "x\n"}', "1: invalid JSON (Invalid control character at)", "1: invalid JSON (Invalid control character at)"),
    ('{}\n\n}', "3: invalid JSON (extra data after the JSON value)", "3: extra data after the JSON object"),
])
def test_each_family_words_the_same_errors_its_own_way(tmp_path, text, rewind, malmm):
    path = write(tmp_path / "f.json", text)
    with pytest.raises(AnnotationError) as err:
        read_json(path)
    assert str(err.value) == f"{path}:{rewind}"
    with pytest.raises(AnnotationError) as err:
        read_json_object(path, "not an object", MALMM_JSON)
    assert str(err.value) == f"{path}:{malmm}"


def test_malmm_entries_need_an_object(tmp_path):
    with pytest.raises(AnnotationError, match=r"f.json:2: expected a JSON object keyed by id \(MA-LMM's annotation layout\)"):
        json_entries(write(tmp_path / "f.json", "\n[1]"))
    with pytest.raises(AnnotationError, match="no such annotation file"):
        json_entries(str(tmp_path / "missing.json"))
