"""Exceptions that map to the contract's exit codes.

0 published / done, 1 anything else, 2 bad input or config, 3 blocked by the quality gate.
"""

from __future__ import annotations


class LanternError(Exception):
    """Base of the project's expected failures; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(LanternError, ValueError):
    """Bad input or config: a missing table or column, an unusable value (exit code 2)."""

    exit_code = 2


class QualityGateError(LanternError):
    """The canary check failed: nothing was published (exit code 3)."""

    exit_code = 3


class LockHeldError(LanternError):
    """Another live run holds the partition lock (exit code 1: retry later)."""


class LockLostError(LanternError):
    """A run lost its lock part-way (another run took it over); it stopped (exit code 1)."""


class NotPublishedError(LanternError):
    """A partition is not published (no ``_SUCCESS``), or the run ``_SUCCESS`` names has no
    manifest (a publish by an older version half-way, or one interrupted), or its files are
    missing."""


class ConflictError(LanternError):
    """A compare-and-set update (``_LATEST``) kept losing to concurrent writers (exit code 1:
    retry)."""
