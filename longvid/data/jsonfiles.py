"""JSON annotation files read with line numbers, so that every error can name ``file:line``.

One parser, :class:`LinedJson`, walks the objects and arrays of a file's text (leaves go through
:mod:`json`'s decoder) and knows the line of every container and every key:

* :func:`read_json` — the whole file, each object and array a :class:`LinedDict` /
  :class:`LinedList` knowing the line it starts on (ReWind's data sets);
* :func:`read_json_object` — the members of a top-level object, in file order, as
  ``(key, value, line of the key)`` (MA-LMM's files keyed by id).

Syntax errors are :class:`~longvid.data.annotations.AnnotationError` s worded by a
:class:`JsonWording` (each family keeps the messages its users know); :mod:`json`'s own
decoding errors read ``file:line: invalid JSON (<json's message>)``.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass

from longvid.data.annotations import AnnotationError


class LinedDict(dict):
    """A JSON object and the line it starts on (a file's top value: ``lines``, the line it ends on)."""

    line = 0
    lines = 0


class LinedList(list):
    """A JSON array and the line it starts on (a file's top value: ``lines``, the line it ends on)."""

    line = 0
    lines = 0


@dataclass(frozen=True)
class JsonWording:
    """How a reader words the syntax errors :class:`LinedJson` finds: ``syntax`` wraps each
    message (``{}``: the message); ``comma`` is formatted with the closing bracket."""

    syntax: str = "invalid JSON ({})"
    key: str = "Expecting value"  # json's word for a member that is not a quoted key (a trailing comma, ...)
    colon: str = "expected ':'"
    comma: str = "expected ',' or '{}'"
    extra: str = "extra data after the JSON value"


class LinedJson:
    """The text of JSON file ``path``, parsed on demand from a position with line numbers."""

    _space = re.compile(r"[ \t\n\r]*")  # JSON's white space

    def __init__(self, path: str, wording: JsonWording = JsonWording()):
        self.path, self.wording = path, wording
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        self._decoder = json.JSONDecoder()

    def line(self, pos: int) -> int:
        """The 1-based line of text position ``pos``."""
        return bisect.bisect_left(self._newlines, pos) + 1

    def skip(self, pos: int) -> int:
        """The first position at or after ``pos`` that is not white space."""
        return self._space.match(self.text, pos).end()

    def fail(self, pos: int, message: str):
        """Raise the :class:`AnnotationError` ``path:line: message`` (worded by ``syntax``)."""
        raise AnnotationError(f"{self.path}:{self.line(pos)}: {self.wording.syntax.format(message)}")

    def _decoded(self, decode, *args):
        try:
            return decode(*args)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{self.path}:{err.lineno}: invalid JSON ({err.msg})") from None

    def value(self, pos: int = 0, depth: int | None = None) -> tuple[object, int]:
        """The JSON value at ``pos`` (after white space) and the position after it. Objects and
        arrays ``depth`` levels deep (None: all) are :class:`LinedDict` / :class:`LinedList`;
        deeper ones are plain ``dict`` / ``list``."""
        pos = self.skip(pos)
        opener = self.text[pos : pos + 1]
        if depth == 0 or opener not in ("{", "["):
            return self._decoded(self._decoder.raw_decode, self.text, pos)
        members, end = self.members(pos, None if depth is None else depth - 1)
        if opener == "{":
            container = LinedDict((key, value) for key, value, _ in members)  # a repeated key: the last value
        else:
            container = LinedList(value for _, value, _ in members)
        container.line = self.line(pos)
        return container, end

    def members(self, pos: int, depth: int | None = None) -> tuple[list[tuple[str | None, object, int]], int]:
        """The members of the object or array opening at ``pos``, in file order, and the position
        after its closing bracket: ``(key, value, line)``, ``line`` being the key's (an object) or
        the value's (an array, ``key`` None). Values are read with :meth:`value` to ``depth``."""
        opener = self.text[pos]
        closer = "}" if opener == "{" else "]"
        members: list[tuple[str | None, object, int]] = []
        pos = self.skip(pos + 1)
        if self.text.startswith(closer, pos):
            return members, pos + 1
        while True:
            key = None
            if opener == "{":
                if not self.text.startswith('"', pos):
                    self.fail(pos, self.wording.key)
                line = self.line(pos)
                key, pos = self._decoded(json.decoder.scanstring, self.text, pos + 1)
                pos = self.skip(pos)
                if not self.text.startswith(":", pos):
                    self.fail(pos, self.wording.colon)
                pos += 1
            else:
                line = self.line(self.skip(pos))
            value, pos = self.value(pos, depth)
            members.append((key, value, line))
            pos = self.skip(pos)
            if self.text.startswith(",", pos):
                pos = self.skip(pos + 1)
            elif self.text.startswith(closer, pos):
                return members, pos + 1
            else:
                self.fail(pos, self.wording.comma.format(closer))

    def finish(self, end: int) -> None:
        """Fail unless only white space follows position ``end``."""
        if self.skip(end) != len(self.text):
            self.fail(self.skip(end), self.wording.extra)


def read_json(path: str, wording: JsonWording = JsonWording()):
    """``path`` parsed as JSON, its objects and arrays as :class:`LinedDict` / :class:`LinedList`
    knowing their line (the top one also ``lines``: 1 for a file written on one line, whose
    line numbers say nothing); invalid JSON is an :class:`AnnotationError` naming ``file:line``."""
    doc = LinedJson(path, wording)
    parsed, end = doc.value(0)
    doc.finish(end)
    if isinstance(parsed, (LinedDict, LinedList)):
        parsed.lines = doc.line(end - 1)
    return parsed


def read_json_object(path: str, not_object: str, wording: JsonWording = JsonWording()) -> list[tuple[str, object, int]]:
    """The top-level ``(key, value, line)`` members of JSON object file ``path``, in file order
    (``line``: where the key is, 1-based; a key given twice gives two members); the values are
    plain JSON. A file that is not an object fails with message ``not_object``."""
    doc = LinedJson(path, wording)
    start = doc.skip(0)
    if not doc.text.startswith("{", start):
        doc.fail(start, not_object)
    members, end = doc.members(start, depth=0)
    doc.finish(end)
    return members
