"""One error hierarchy for everything a user can get wrong or the world can break.

Every message says what failed, where, and what to do. The CLI maps these to exit codes in one
place (`daemon.cli.main`): 2 when a person must fix something, 1 when a restart may help
(the systemd unit relies on it: docs/design.md).
"""

from __future__ import annotations


EXIT_OK = 0
EXIT_TRANSIENT = 1  # systemd restarts the daemon
EXIT_NEEDS_FIX = 2  # systemd does not: a person must fix the cause first


class VlmwatchError(Exception):
    """Base of all user-facing errors. `exit_code` is what the CLI returns."""

    exit_code = EXIT_TRANSIENT


class UsageError(VlmwatchError):
    """Bad command-line arguments or option values."""

    exit_code = EXIT_NEEDS_FIX


class ConfigError(VlmwatchError):
    """A configuration or rule file is invalid."""

    exit_code = EXIT_NEEDS_FIX


class ModelError(VlmwatchError):
    """Model files are missing or unreadable, or the backend cannot run them."""

    exit_code = EXIT_NEEDS_FIX


class QuestionError(VlmwatchError):
    """A question the model cannot take: too long, or choices it cannot tell apart. The asker's
    mistake: raised before NPU time is spent, answered as the reply (MQTT, HTTP) or logged."""

    exit_code = EXIT_NEEDS_FIX


class PromptTooLongError(QuestionError):
    """A prompt does not fit the model's largest prefill."""


class ChoiceError(QuestionError):
    """Choices that cannot be scored from one token (empty, or sharing their first token)."""


class ShapeError(VlmwatchError):
    """A feed does not match the shapes a graph declares: a bug, never the user's fault."""

    exit_code = EXIT_TRANSIENT


class SourceError(VlmwatchError):
    """A camera or video file cannot be opened or read."""

    exit_code = EXIT_TRANSIENT


class StateError(VlmwatchError):
    """A state file under state_dir (history, outbox, processed files) is damaged, not a vlmwatch
    database, newer than this vlmwatch, or cannot be opened for writing. Restarting changes
    nothing: the message names the file and the command that moves it aside."""

    exit_code = EXIT_NEEDS_FIX


class StorageError(VlmwatchError):
    """A state file cannot be written right now: disk full, an I/O error, locked by another
    process. Not the engine's fault; a restart may succeed once space or the disk is back."""

    exit_code = EXIT_TRANSIENT


class PublishError(VlmwatchError):
    """MQTT cannot be reached or refuses us."""

    exit_code = EXIT_TRANSIENT


class Busy(VlmwatchError):
    """Work refused for now (a full NPU queue, a client over its rate limit); the same request later is
    fine. `retry_after`: seconds to wait (MQTT: in the error reply; HTTP: 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: float, reason: str = "busy"):
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
        self.reason = reason  # "rate" (a client's limit) or "queue" (the NPU's backlog)


class Cancelled(Exception):
    """The stop event was set; model work ended at a step boundary. A cancelled answer is never
    returned, so it can never be published or stored."""
