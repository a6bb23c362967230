"""Errors that end a command with a clear message instead of a traceback."""


class UsageError(Exception):
    """Bad usage or bad input: the message names the file (and line) and the fix. Exit code 2."""

    exit_code = 2
