"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback.

One rule for the exit code: 2 when the params or the command line are wrong (a value out of
range, unknown, or inconsistent with other params or with the size of the data: ``ConfigError``,
``UsageError``, and click's own usage errors), 1 when a file, the data or the machine is the
problem (missing or damaged files, no GPU, no compiler, a full disk: ``UserError``). The message
names the problem and the fix, e.g. ``model.kernel_size=30 is larger than the 28x28 input; use at
most 28``.
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "UsageError"]


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, one line."""

    exit_code = 1


class ConfigError(UserError):
    """A bad or inconsistent value in params.yaml."""

    exit_code = 2


class UsageError(UserError):
    """A bad command-line argument (like click's usage errors)."""

    exit_code = 2
