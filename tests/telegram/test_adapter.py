"""The adapter's pure parts: error mapping, keyboards and callback data, per-chat limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from channels.errors import PermanentError, RecipientOptedOut, RetryableError
from channels.telegram import (
    ChatLimiter,
    Done,
    Pick,
    TelegramChannel,
    Toggle,
    decode_tap,
    done_payload,
    keyboard,
    map_error,
)
from flows.events import Choice, MessageCreated


def test_errors_map_to_one_typed_set() -> None:
    limited = map_error(RetryAfter(timedelta(seconds=7)))
    assert isinstance(limited, RetryableError) and limited.retry_after == 7
    assert isinstance(map_error(Forbidden("Forbidden: bot was blocked by the user")),
                      RecipientOptedOut)
    assert isinstance(map_error(Forbidden("Forbidden: user is deactivated")), RecipientOptedOut)
    kicked = map_error(Forbidden("Forbidden: bot was kicked from the group chat"))
    assert isinstance(kicked, PermanentError) and not isinstance(kicked, RecipientOptedOut)
    assert isinstance(map_error(BadRequest("Bad Request: message is too long")), PermanentError)
    assert isinstance(map_error(TimedOut()), RetryableError)
    assert isinstance(map_error(NetworkError("Bad Gateway")), RetryableError)


def test_callback_data_fits_64_bytes_whatever_the_ids() -> None:
    channel = TelegramChannel(token="1:x")
    flow, node = "f" * 64, "n" * 64
    options = tuple(Choice(f"{k:02d}" + "o" * 30, f"Option {k}", cost=100) for k in range(30))
    multi = channel.render(
        MessageCreated("Pick", choices=options, multi=True, budget=1000, question=f"{flow}:{node}")
    )
    everything = frozenset(range(30))
    for rows in (keyboard(multi), keyboard(multi, everything)):
        assert all(len(data.encode()) <= 64 for row in rows for _, data in row)
    assert decode_tap(multi, keyboard(multi)[4][0][1]) == Toggle(frozenset({4}))
    assert decode_tap(multi, "d:5") == Done(frozenset({0, 2}))
    assert done_payload(multi, frozenset({0, 2})) == (
        f"{flow}:{node}:{options[0].id},{options[2].id}"
    )
    assert decode_tap(multi, "t:" + "f" * 9) is None  # bits beyond the options
    single = channel.render(MessageCreated("Q", choices=options[:3], question=f"{flow}:{node}"))
    assert decode_tap(single, keyboard(single)[2][0][1]) == Pick(f"{flow}:{node}:{options[2].id}")
    assert decode_tap(single, "c:3") is None and decode_tap(single, "t:1") is None


async def test_chat_limiter_spaces_sends_per_chat_and_per_group() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = ChatLimiter(
        interval=1.0, group_per_minute=20, max_wait=5.0, monotonic=lambda: now[0], sleep=sleep
    )
    await limiter.acquire("42")
    await limiter.acquire("43")  # another chat: no wait
    await limiter.acquire("42")
    assert slept == [1.0]

    group = "-100"
    for _ in range(20):
        await limiter.acquire(group)
    assert now[0] == pytest.approx(20.0)  # one a second
    with pytest.raises(RetryableError) as raised:  # the 21st within a minute
        await limiter.acquire(group)
    assert raised.value.retry_after == pytest.approx(41.0)  # the first went at 1.0
    now[0] = 62.0
    await limiter.acquire(group)


def test_settings_need_the_secret_in_webhook_mode() -> None:
    from bot.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="CIVICBOT_TELEGRAM_WEBHOOK_SECRET"):
        load_settings(_env_file=None, telegram_token="1:x")
    with pytest.raises(SettingsError, match="CIVICBOT_TELEGRAM_WEBHOOK_SECRET"):
        load_settings(_env_file=None, telegram_token="1:x", telegram_webhook_secret="has space")
    polling = load_settings(_env_file=None, telegram_token="1:x", telegram_mode="polling")
    assert polling.telegram_enabled and polling.telegram_api_base == "https://api.telegram.org"
    assert not load_settings(_env_file=None).telegram_enabled


def test_welsh_multi_choice_keyboard() -> None:
    channel = TelegramChannel(token="1:x")
    content = channel.render(
        MessageCreated("Dewiswch", choices=(Choice("a", "Parc", 5),), multi=True, budget=10,
                       question="f:n"),
        "cy",
    )
    assert keyboard(content)[-1][0][0] == "Gorffen: 0 o 10"
    assert content["text"].endswith("Tapiwch i dicio, yna Gorffen.")
