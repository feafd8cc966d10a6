"""One error hierarchy for everything a user can get wrong or the world can break.

Every message says what failed, where, and what to do. The CLI maps these to
exit codes in one place (`daemon.cli.main`); nothing else prints tracebacks
for them.
"""

from __future__ import annotations


class VlmwatchError(Exception):
    """Base of all user-facing errors. `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(VlmwatchError):
    """Bad command-line arguments or option values."""

    exit_code = 2


class ConfigError(VlmwatchError):
    """A configuration or rule file is invalid."""

    exit_code = 2


class ModelError(VlmwatchError):
    """Model files are missing or unreadable, or the backend cannot run them."""

    exit_code = 2


class PromptTooLongError(ModelError):
    """A prompt does not fit the model's largest prefill."""


class ShapeError(ModelError):
    """A feed does not match the shapes a graph declares (a bug, caught early)."""

    exit_code = 1


class SourceError(VlmwatchError):
    """A camera or video file cannot be opened or read."""

    exit_code = 1


class PublishError(VlmwatchError):
    """MQTT cannot be reached or refuses us."""

    exit_code = 1


class Cancelled(Exception):
    """The stop event was set; work ended at a step boundary."""
