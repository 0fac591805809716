"""SMS rendering: GSM-7 clean-up, segment counts (GSM-7 160/153, UCS-2 70/67, Welsh),
numbered choices, and paging long content with "Reply MORE"."""

from __future__ import annotations

from typing import Any

import pytest

from channels.sms_text import is_gsm7, paginate, segment_count, to_gsm7_where_possible
from flows.events import Choice, MessageCreated
from storage.models import OutboundMessage, OutboxStatus
from tests.sms.conftest import SmsBot
from tests.support import CATALOGUE, sms


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_segments(length: int, segments: int) -> None:
    assert segment_count("a" * length) == segments


def test_gsm7_extended_characters_take_two_septets() -> None:
    assert segment_count("€" * 80) == 1
    assert segment_count("€" * 81) == 2
    assert segment_count("[" * 80) == 1  # 160 septets
    assert segment_count("[" * 80 + "a") == 2


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_segments(length: int, segments: int) -> None:
    assert segment_count("Ж" * length) == segments


def test_ucs2_counts_utf16_code_units() -> None:
    assert segment_count("🙂" * 35) == 1  # each emoji is two UTF-16 units
    assert segment_count("🙂" * 36) == 2


def test_welsh_circumflexes_make_the_message_ucs2() -> None:
    welsh = "Mae'r ŵyl yn y dŷ"
    assert not is_gsm7(welsh)
    assert segment_count(welsh * 4) == 1  # 68 characters
    assert segment_count(welsh * 5) == 2  # 85 characters: over 70, so UCS-2 counting
    content = sms(MessageCreated("Croeso i'r ŵyl! " * 5), "cy")
    assert "ŵ" in content["text"]  # sent as is: Twilio encodes it as UCS-2
    assert content["segments"] == 2


def test_typographic_characters_are_replaced_to_stay_in_gsm7() -> None:
    fancy = "“Hello” – it’s a ‘test’… see\u00a0you — bye\u2009now\u00ad"
    plain = to_gsm7_where_possible(fancy)
    assert plain == "\"Hello\" - it's a 'test'... see you - bye now"
    assert is_gsm7(plain)
    content = sms(MessageCreated(fancy * 3))
    assert content["text"] == plain * 3
    assert content["segments"] == 1


def test_choices_are_numbered_with_how_to_reply() -> None:
    message = MessageCreated(
        "Which matters most?",
        choices=(Choice("parks", "Parks"), Choice("roads", "Roads"), Choice("bins", "Bins")),
        question="needs:q1",
    )
    assert sms(message)["text"] == (
        "Which matters most?\n\n1 Parks\n2 Roads\n3 Bins\nReply 1, 2 or 3"
    )
    assert sms(message, "cy")["text"].endswith("Atebwch 1, 2 neu 3")
    multi = MessageCreated(
        "Pick up to 2",
        choices=(Choice("a", "Park", 5000), Choice("b", "Library", 7000)),
        multi=True,
        max_choices=2,
        budget=10000,
    )
    assert sms(multi)["text"] == (
        "Pick up to 2\n\n1 Park (5,000)\n2 Library (7,000)\n"
        "Reply with the numbers of your choices, e.g. 1 3 (up to 2). Budget: 10,000"
    )


def test_short_content_is_one_page() -> None:
    content = sms(MessageCreated("Thanks!"))
    assert content == {"text": "Thanks!", "choices": [], "segments": 1}


@pytest.mark.parametrize("max_segments", [1, 2, 3])
@pytest.mark.parametrize("word", ["word", "ŵyl"])
def test_long_content_is_split_into_pages_within_the_limit(max_segments: int, word: str) -> None:
    text = " ".join(f"{word}{n}" for n in range(400))
    pages = paginate(text, max_segments, "en", CATALOGUE)
    assert len(pages) > 1
    assert all(segment_count(page) <= max_segments for page in pages)
    assert pages[0].endswith(f"(1/{len(pages)}) Reply MORE for more")
    assert "Reply MORE" not in pages[-1]
    bodies = [p.split("\n\n(")[0] for p in pages[:-1]] + [pages[-1]]
    assert " ".join(bodies) == text  # nothing lost, nothing cut mid-word


def test_welsh_pages_say_mwy_and_long_words_are_cut() -> None:
    pages = paginate("x" * 500, 1, "cy", CATALOGUE)
    assert pages[0].endswith("Atebwch MWY am fwy")
    assert "".join(p.split("\n\n(")[0] for p in pages) == "x" * 500


def test_paged_content_keeps_the_rest_for_more() -> None:
    content = sms(MessageCreated("a " * 400), max_segments=1)
    assert content["segments"] == 1
    assert len(content["more"]) >= 4
    assert all(page["segments"] == 1 for page in content["more"])


@pytest.mark.parametrize("sms_overrides", [{"sms_max_segments": 1}])
async def test_paging_by_sms_with_more(sms_bot: SmsBot, sms_overrides: dict[str, Any]) -> None:
    [first] = await sms_bot.converse("JOIN")
    assert first.startswith("Welcome to civicbot")
    assert first.endswith("(1/2) Reply MORE for more")
    assert segment_count(first) == 1
    [second] = await sms_bot.converse("more")
    assert second.endswith("Is that OK?\n\n1 Yes, I agree\n2 No thanks\nReply 1 or 2")
    assert segment_count(second) == 1
    [nothing_left] = await sms_bot.converse("MORE")  # goes to the engine like any text
    assert nothing_left.startswith("Sorry, that isn't one of the options")

    rows = await sms_bot.outbox()
    assert [r.segments for r in rows[:2]] == [1, 1]
    assert all(r.status == OutboxStatus.SENT for r in rows)
    assert all("more" not in r.content for r in rows[:2])  # pages are handed on, not kept twice

    [language] = await sms_bot.converse("1")  # answering works at any page
    assert language.startswith("Which language")


@pytest.mark.parametrize("sms_overrides", [{"sms_max_segments": 1}])
async def test_an_answer_drops_the_unsent_pages(
    sms_bot: SmsBot, sms_overrides: dict[str, Any]
) -> None:
    await sms_bot.converse("JOIN")
    [language] = await sms_bot.converse("1")
    assert language.startswith("Which language")
    [reprompt] = await sms_bot.converse("MWY")  # the old pages are gone: MWY is just text
    assert reprompt.startswith("Sorry, that isn't one of the options")


@pytest.mark.parametrize("sms_overrides", [{"sms_max_segments": 1}])
async def test_more_finds_the_paged_message_in_a_reply_of_several(
    sms_bot: SmsBot, sms_overrides: dict[str, Any]
) -> None:
    """A reply can be several messages; the paged one need not be the last of them."""
    await sms_bot.converse("JOIN")
    [paged] = await sms_bot.outbox()
    async with sms_bot.services.sessions() as session, session.begin():
        session.add(
            OutboundMessage(
                channel="sms",
                address=paged.address,
                contact_id=paged.contact_id,
                inbound_id=paged.inbound_id,
                content={"text": "P.S. short", "choices": [], "segments": 1},
                next_attempt_at=sms_bot.clock.now(),
                created_at=sms_bot.clock.now(),
                updated_at=sms_bot.clock.now(),
            )
        )
    assert await sms_bot.dispatch() == ["P.S. short"]
    [second] = await sms_bot.converse("MORE")
    assert second.endswith("Reply 1 or 2")
