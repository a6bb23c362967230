"""Errors that end a command with a clear message instead of a traceback, and the exit code of a command."""

import sys
import traceback
from typing import Callable


class UsageError(Exception):
    """Bad usage or bad input: the message names the file (and line) and the fix. Exit code 2."""

    exit_code = 2


def exit_code(command: Callable[[], int]) -> int:
    """Run ``command``: its exit code; a UsageError's message and 2; 130 on Ctrl-C; an internal error's
    traceback and 1."""
    try:
        return command()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # an internal error: keep the traceback for the bug report
        traceback.print_exc()
        print("error: internal error (exit 1); please report it with the traceback above", file=sys.stderr)
        return 1
