"""The plain private text message is read without python-telegram-bot's objects
(``_plain_private_text``); every update must come out exactly as the PTB path reads it."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.telegram.updates import (
    BotIdentity,
    InvalidUpdate,
    PrivateText,
    _plain_private_text,
    parse_update,
)


async def _me() -> BotIdentity:
    return BotIdentity(1, "civicbot")


def _parse(update: dict[str, Any]) -> object:
    try:
        return asyncio.run(parse_update(update, _me))
    except InvalidUpdate as exc:
        return InvalidUpdate, str(exc)


def _through_ptb(update: dict[str, Any]) -> dict[str, Any]:
    """The same update with a message key the plain reading does not take (an empty entity
    list, which changes nothing for a private text), so it goes through PTB."""
    message = update["message"]
    return {**update, "message": {**message, "entities": []}}


def plain(text: str = "HI", **user: Any) -> dict[str, Any]:
    return {
        "update_id": 10,
        "message": {
            "message_id": 3,
            "date": 1767600000,
            "chat": {"id": 42, "type": "private", "first_name": "Sam"},
            "from": {"id": 42, "is_bot": False, "first_name": "Sam", **user},
            "text": text,
        },
    }


def test_plain_message_is_read_without_ptb_and_as_ptb_reads_it() -> None:
    for update in (
        plain(),
        plain(" café\u200b ", last_name="Jones", username="sam_j", language_code="cy"),
        plain("MENU", is_premium=True, username="  "),
        plain("x" * 5000, first_name="\x00Sam\x7f"),
    ):
        assert _plain_private_text(update, update["update_id"]) is not None
        assert _parse(update) == _parse(_through_ptb(update))
    assert _parse(plain(last_name="Jones", username="sj")) == PrivateText(
        10, "42", "HI", "Sam Jones (@sj)"
    )


def test_unusual_shapes_go_through_ptb() -> None:
    for update in (
        {**plain(), "edited": True},
        _through_ptb(plain()),
        plain(text=""),
        {**plain(), "message": {**plain()["message"], "chat": {"id": 42, "type": "group"}}},
        {**plain(), "message": {**plain()["message"], "date": 2**40}},
        {**plain(), "message": {**plain()["message"], "message_id": True}},
        plain(is_bot="no"),
        plain(id="42"),
    ):
        assert _plain_private_text(update, 10) is None


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _maybe(field: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(field, _values)


@st.composite
def _updates(draw: st.DrawFn) -> dict[str, Any]:
    user = draw(
        st.fixed_dictionaries(
            {"id": _maybe(st.integers(-(2**40), 2**40)), "is_bot": _maybe(st.booleans())},
            optional={
                "first_name": _maybe(st.text(max_size=6)),
                "last_name": _maybe(st.text(max_size=6)),
                "username": _maybe(st.text(max_size=6)),
                "language_code": _maybe(st.just("en")),
                "is_premium": _maybe(st.booleans()),
            },
        )
    )
    chat = draw(
        st.fixed_dictionaries(
            {"id": _maybe(st.integers(-(2**70), 2**70))},
            optional={
                "type": _maybe(st.sampled_from(["private", "group", "channel"])),
                "first_name": _maybe(st.text(max_size=6)),
                "username": _maybe(st.text(max_size=6)),
            },
        )
    )
    message = draw(
        st.fixed_dictionaries(
            {"chat": _maybe(st.just(chat))},
            optional={
                "message_id": _maybe(st.integers(0, 2**31)),
                "date": _maybe(st.integers(-(2**34), 2**34)),
                "from": _maybe(st.just(user)),
                "text": _maybe(st.text(max_size=10)),
            },
        )
    )
    return {"update_id": draw(st.integers(0, 2**40)), "message": message}


@settings(max_examples=1500, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(_updates())
def test_any_message_reads_the_same_either_way(update: dict[str, Any]) -> None:
    assert _parse(update) == _parse(_through_ptb(update))
