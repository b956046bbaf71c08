"""Exceptions for user mistakes: the CLI prints them as one line and exits non-zero."""


class LongvidError(Exception):
    """A problem with the user's input (a path, a file, an option), not a bug."""
