"""The one typed set of send errors. Each adapter maps its provider's errors into these in one
function; the dispatcher decides what to do from the type alone."""

from __future__ import annotations


class ChannelError(Exception):
    """A send failed."""


class RetryableError(ChannelError):
    """Try again later (rate limited, provider 5xx, timeout). ``maybe_sent``: the request may
    have reached the provider and been accepted (the answer was lost: a read timeout, a
    dropped connection), so the message may already be on its way."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, maybe_sent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent


class PermanentError(ChannelError):
    """This message will never go (bad number, content refused)."""


class RecipientOptedOut(PermanentError):
    """The recipient has unsubscribed or blocked us: mark the contact opted out."""
