"""Ids that become one component of a path (algorithm, dataset and network ids, trial ids, sweep and
run directories): the rule and its check. Plain Python (no torch), so the registry can use it."""

from __future__ import annotations

import re

from harness.errors import ConfigError

NAME_RULE = "letters, digits, '-', '_' and '.' (starting with a letter, digit or '_'; no '..'; at most 128 characters)"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def safe_name(value, what: str) -> str:
    """``value`` if it can be one component of a path (no separator, no '..', not hidden, not empty);
    otherwise a one-line :class:`ConfigError` naming ``what`` and what is allowed."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"{what} {value!r} is not a valid name; allowed: {NAME_RULE}")
    return value
