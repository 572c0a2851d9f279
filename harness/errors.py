"""Typed errors. Each carries a one-line message that names the problem and the valid choices."""

from __future__ import annotations

import difflib


class CreditbenchError(Exception):
    """Base class: the CLI prints ``error: <message>`` on one line and exits non-zero."""


class UnknownNameError(CreditbenchError, KeyError):
    """A name (algorithm, dataset, network, hyperparameter, ...) that is not registered."""

    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        super().__init__(f"unknown {kind} '{name}'{hint}; valid: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(CreditbenchError, ValueError):
    """A configuration value that is malformed, of the wrong type or out of range."""


class UnsupportedError(CreditbenchError):
    """An algorithm asked to train a network it does not support."""


class DataError(CreditbenchError):
    """A dataset that cannot be loaded (e.g. files missing while offline)."""


class ResultsError(CreditbenchError):
    """A results directory that is missing, empty, malformed or incompatible with the others."""


class CheckpointError(ResultsError):
    """A checkpoint or state file that is not plain data (or cannot be read): refused, never unpickled."""
