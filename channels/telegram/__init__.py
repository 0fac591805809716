"""The Telegram channel: :mod:`.client` (the Bot API adapter), :mod:`.keyboard` (rendering
and inline keyboards, pure), :mod:`.updates` (parsing updates, pure) and :mod:`.polling`
(the ``getUpdates`` loop for a laptop with no public URL)."""

import os

# PTB 22 is moving durations (RetryAfter.retry_after...) from int seconds to timedelta and warns on
# every read until told which it should be; opt in to v23's behaviour (its documented switch).
# Set before anything in this package imports ``telegram``.
os.environ.setdefault("PTB_TIMEDELTA", "true")
