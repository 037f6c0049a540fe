"""Errors that the CLI turns into one clear line and exit status 2 (bad input) or 1."""

import sys


class GenlabError(Exception):
    """Base class: a user-facing error whose message is one line."""

    exit_code = 2


class ConfigError(GenlabError):
    """An invalid config value; the message names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class DataUnavailable(GenlabError):
    """A dataset whose providing package is not installed."""


class CheckpointError(GenlabError):
    """A corrupt, truncated or mismatched checkpoint."""


class RunExists(GenlabError):
    """A run folder that would be overwritten."""


class RunBusy(GenlabError):
    """A run folder that another live process is writing (its lock is held)."""


class RunWriteError(GenlabError):
    """The run folder cannot be written (read-only or full disk); the run stays resumable."""


def warn(message: str) -> None:
    """One line on stderr that does not stop the run (a fallback taken, a lock taken over)."""
    print(f"genlab: warning: {message}", file=sys.stderr, flush=True)
