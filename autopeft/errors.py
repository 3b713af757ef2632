"""Exception types raised for bad user input.

Every error a user can cause is an :class:`AutoPeftError`; the CLI turns it into one line
on stderr and exit code 2.  Messages name the offending field and say what is allowed.
"""

from __future__ import annotations


class AutoPeftError(Exception):
    """Base class of every user-facing autopeft error."""


class SpaceError(AutoPeftError):
    """A search-space file or candidate is invalid."""


class DataError(AutoPeftError):
    """A dataset cannot be found or read, or lacks a needed column."""


class ModelError(AutoPeftError):
    """A model cannot be loaded or its architecture is not supported."""


class ConfigError(AutoPeftError):
    """A setting (CLI option, API argument, trial spec) is invalid."""


class StudyError(AutoPeftError):
    """A study does not exist, or cannot be resumed with these settings."""


class TrialsFailing(StudyError):
    """Too many trials failed in a row (CLI exit code 1)."""
