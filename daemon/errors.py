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


class QuestionError(VlmwatchError):
    """A question the model cannot take: too long, or choices it cannot tell apart.

    The asker's mistake, not the engine's: an MQTT or HTTP asker gets it as the
    reply, a window or summary logs it and goes on. Raised before NPU time is spent.
    """

    exit_code = 2


class PromptTooLongError(QuestionError):
    """A prompt does not fit the model's largest prefill."""


class ChoiceError(QuestionError):
    """Choices that cannot be scored from one token (empty, or sharing their first token)."""


class ShapeError(VlmwatchError):
    """A feed does not match the shapes a graph declares: a bug, never the user's fault."""

    exit_code = 1


class SourceError(VlmwatchError):
    """A camera or video file cannot be opened or read."""

    exit_code = 1


class PublishError(VlmwatchError):
    """MQTT cannot be reached or refuses us."""

    exit_code = 1


class Busy(VlmwatchError):
    """Work refused for now: the NPU queue is full or the asker exceeded its rate limit.

    Not a fault of the question: the same request later is fine. `retry_after`
    is the seconds to wait (MQTT: said in the error reply; HTTP: 429 with Retry-After).
    """

    def __init__(self, message: str, retry_after: float, reason: str = "busy"):
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
        self.reason = reason  # "rate" (a client's limit) or "queue" (the NPU's backlog)


class Cancelled(Exception):
    """The stop event was set; model work ended at a step boundary.

    The one way cancellation leaves the engine: a cancelled answer is never
    returned, so it can never be published or stored as a result.
    """
