"""Errors a user can fix: each message names the file, URL or option and the reason."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or setup. Command-line entry points print it as one line and exit 2."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the file (and line) and the reason."""


class SetupError(UserError):
    """A run that cannot start (server unreachable, unknown model, ...): says what and where."""


class Unreachable(SetupError):
    """A server that did not answer at all (down, restarting, wrong address)."""
