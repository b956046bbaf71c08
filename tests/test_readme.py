"""The README's code runs as printed."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading``."""
    text = open(README, encoding="utf-8").read()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_stream_contract_example_runs_for_every_family(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("## One stream contract, three systems"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["malmm_tiny", "rewind_tiny"]
    assert sorted(os.listdir(tmp_path)) == ["malmm_tiny.safetensors", "memvit_tiny.safetensors", "rewind_tiny.safetensors"]
