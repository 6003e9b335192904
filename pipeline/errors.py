"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback.

Raise ``UserError`` (exit 1) for problems with data, files or the environment and
``ConfigError`` (exit 2) for a bad value in params.yaml. The message names the problem and
the fix, e.g. ``model.kernel_size=30 is larger than the 28x28 input; use at most 28``.
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError"]


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, one line."""

    exit_code = 1


class ConfigError(UserError):
    """A bad or inconsistent value in params.yaml."""

    exit_code = 2
