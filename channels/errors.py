"""The one typed set of send errors. Each adapter maps its provider's errors into these in one
function; the dispatcher decides what to do from the type alone."""

from __future__ import annotations


class ChannelError(Exception):
    """A send failed."""


class RetryableError(ChannelError):
    """Try again later (rate limited, provider 5xx, timeout)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """This message will never go (bad number, content refused)."""


class RecipientOptedOut(PermanentError):
    """The recipient has unsubscribed or blocked us: mark the contact opted out."""
