"""The adapter's pure parts: error mapping, keyboards and callback data, per-chat limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from channels.base import TapMeaning
from channels.errors import PermanentError, RecipientOptedOut, RetryableError
from channels.pacing import DEFAULT_MARGIN
from channels.telegram.client import ChatLimiter, TelegramChannel, map_error
from channels.telegram.keyboard import PAGE_SIZE, decode_tap, keyboard, with_keyboard
from flows.events import Choice, MessageCreated
from tests.support import CATALOGUE


def rows(content: dict[str, object], selected: tuple[int, ...] = (), page: int = 0) -> list[
    list[tuple[str, str]]
]:
    return keyboard(content, selected, page, CATALOGUE)


def redrawn(
    content: dict[str, object], selected: tuple[int, ...], page: int = 0
) -> dict[str, object]:
    """The content as stored after a redraw with this selection (what a later tap is read
    against)."""
    return with_keyboard(content, selected, page, CATALOGUE)


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
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    flow, node = "f" * 64, "n" * 64
    options = tuple(Choice(f"{k:03d}" + "o" * 29, f"Option {k}", cost=100) for k in range(120))
    question = f"{flow}:{node}"
    multi = channel.render(
        MessageCreated("Pick", choices=options, multi=True, budget=1000, question=question)
    )
    everything = tuple(range(120))
    for page in range(120 // PAGE_SIZE):
        for shown in (rows(multi, (), page), rows(multi, everything, page)):
            assert all(len(data.encode()) <= 64 for row in shown for _, data in row)
    toggle = rows(multi)[4][0][1]
    assert decode_tap(multi, toggle) == TapMeaning(
        f"{question}:{options[4].id}", check_only=True, selected=(4,), page=0
    )
    assert decode_tap(redrawn(multi, (0, 2)), "d:5") == TapMeaning(
        f"{question}:{options[0].id},{options[2].id}", check_only=False, selected=(0, 2)
    )
    assert decode_tap(multi, "t:" + "f" * 31 + ":0") is None  # bits beyond the options
    assert decode_tap(multi, "t:1:99") is None  # a page that does not exist
    single = channel.render(MessageCreated("Q", choices=options[:3], question=question))
    assert decode_tap(single, rows(single)[2][0][1]) == TapMeaning(
        f"{question}:{options[2].id}", check_only=False
    )
    assert decode_tap(single, "c:3") is None and decode_tap(single, "t:1:0") is None


def test_long_lists_page_and_keep_ticks_across_pages() -> None:
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    options = tuple(Choice(str(k), f"Project {k}", cost=1000 * k) for k in range(1, 41))
    content = channel.render(
        MessageCreated("Pick", choices=options, multi=True, budget=50_000, question="vote:pick")
    )
    first = rows(content)
    assert [label for label, _ in first[-2]] == ["1/5", "Next »"]
    assert first[-1][0][0] == "Done: 0 of 50,000"  # the budget total on every page
    ticked = decode_tap(content, first[1][0][1])  # tick Project 2 on page 1
    assert ticked is not None and ticked.selected == (1,)
    content = redrawn(content, ticked.selected)
    turn = dict(rows(content, ticked.selected, 0)[-2])["Next »"]
    turned = decode_tap(content, turn)
    assert turned is not None and (turned.selected, turned.page) == ((1,), 1)
    page_two = rows(content, turned.selected, turned.page)
    assert page_two[0][0][0] == "⬜ Project 9 (9,000)"
    assert [label for label, _ in page_two[-2]] == ["« Previous", "2/5", "Next »"]
    assert page_two[-1][0][0] == "Done: 2,000 of 50,000"
    done = decode_tap(content, page_two[-1][0][1])
    assert done is not None and done.payload == "vote:pick:2" and not done.check_only


def test_ranked_selection_keeps_the_order_tapped() -> None:
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    options = tuple(Choice(c, c.title()) for c in ("parks", "youth", "care", "roads"))
    content = channel.render(
        MessageCreated(
            "Rank", choices=options, multi=True, max_choices=3, ordered=True, question="n:rank"
        )
    )
    assert content["text"].endswith("most important first, then Done.")
    third = decode_tap(content, rows(content)[2][0][1])
    assert third is not None and third.selected == (2,)
    content = redrawn(content, (2,))
    first = decode_tap(content, rows(content, (2,))[0][0][1])
    assert first is not None and first.selected == (2, 0)
    labels = [row[0][0] for row in rows(content, (2, 0))]
    assert labels[:3] == ["✅ 2. Parks", "⬜ Youth", "✅ 1. Care"]
    content = redrawn(content, (2, 0))
    done = decode_tap(content, rows(content, (2, 0))[-1][0][1])
    assert done is not None and done.payload == "n:rank:care,parks"


def test_a_tap_on_an_out_of_date_keyboard_changes_nothing() -> None:
    """Two quick taps: the second button was drawn before the first tap's redraw arrived,
    so its data carries the selection without the first tap. Applying it would silently
    untick the first choice (a lost vote); it is refused as stale instead."""
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    options = tuple(Choice(c, c.title()) for c in ("parks", "roads", "libraries", "youth"))
    content = channel.render(
        MessageCreated("Pick", choices=options, multi=True, max_choices=3, question="n:pick")
    )
    old = rows(content)  # the keyboard on the phone, nothing ticked
    parks = decode_tap(content, old[0][0][1])
    assert parks is not None and parks.selected == (0,) and not parks.stale
    content = redrawn(content, parks.selected)  # stored after the first tap's redraw
    roads = decode_tap(content, old[1][0][1])  # tapped on the old keyboard
    assert roads == TapMeaning("n:pick:parks", check_only=True, selected=(0,), stale=True)
    done = decode_tap(content, old[-1][0][1])  # Done on the old keyboard: not an answer
    assert done is not None and done.stale and done.check_only and done.selected == (0,)
    # the same tap again (a re-delivery) and taps on the fresh keyboard are as before
    again = decode_tap(content, old[0][0][1])
    assert again is not None and again.selected == (0,) and not again.stale
    fresh = rows(content, (0,))
    both = decode_tap(content, fresh[1][0][1])
    assert both is not None and both.selected == (0, 1) and not both.stale
    untick = decode_tap(content, fresh[0][0][1])
    assert untick is not None and untick.selected == () and not untick.stale
    # a page turn from an old keyboard keeps the stored ticks
    long = channel.render(
        MessageCreated(
            "Pick", choices=tuple(Choice(str(k), f"P{k}") for k in range(20)), multi=True,
            question="n:long",
        )
    )
    turn = dict(rows(long)[-2])["Next »"]
    turned = decode_tap(redrawn(long, (3, 5)), turn)
    assert turned is not None and turned.selected == (3, 5) and turned.page == 1


def test_a_ranking_tap_on_an_out_of_date_keyboard_changes_nothing() -> None:
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    options = tuple(Choice(c, c.title()) for c in ("parks", "youth", "care", "roads"))
    content = channel.render(
        MessageCreated(
            "Rank", choices=options, multi=True, max_choices=3, ordered=True, question="n:rank"
        )
    )
    content = redrawn(content, (2, 0))
    old = rows(content, (2,))  # drawn when only Care was ranked
    youth = decode_tap(content, old[1][0][1])  # would rank (2, 1): drops Parks
    assert youth is not None and youth.stale and youth.selected == (2, 0)
    fresh = rows(content, (2, 0))
    unrank_care = decode_tap(content, fresh[2][0][1])
    assert unrank_care is not None and unrank_care.selected == (0,) and not unrank_care.stale


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
    gap = 1.0 + DEFAULT_MARGIN  # a second, and the margin for a late send (channels/pacing.py)
    assert slept == [pytest.approx(gap)]

    group = "-100"
    for _ in range(20):
        await limiter.acquire(group)
    assert now[0] == pytest.approx(20 * gap)  # one a second and a bit
    with pytest.raises(RetryableError) as raised:  # the 21st within a minute
        await limiter.acquire(group)
    minute = 60.0 + DEFAULT_MARGIN
    assert raised.value.retry_after == pytest.approx(gap + minute - 20 * gap)  # the first at gap
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
    channel = TelegramChannel(token="1:x", catalogue=CATALOGUE)
    content = channel.render(
        MessageCreated("Dewiswch", choices=(Choice("a", "Parc", 5),), multi=True, budget=10,
                       question="f:n"),
        "cy",
    )
    assert rows(content)[-1][0][0] == "Gorffen: 0 o 10"
    assert content["text"].endswith("Tapiwch i dicio, yna Gorffen.")
