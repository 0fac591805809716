"""A Telegram group poll linked to a needs assessment (``telegram poll --needs``) is reported
as its own source: counted as it is, never weighted or mixed into residents' scores."""

from __future__ import annotations

import pytest

from flows.polls.service import PollError
from tests.conftest import load_demo_wards
from tests.needs.support import set_up
from tests.telegram.conftest import GROUP, TelegramBot, polls_of
from tests.telegram.test_polls import poll_answer
from tests.telegram.test_webhook import member_update


async def test_a_linked_group_poll_is_a_separate_source(tg: TelegramBot) -> None:
    await tg.post(member_update(tg, "member"))
    await load_demo_wards(tg.services)
    ident = await set_up(tg.services)
    polls = polls_of(tg)
    with pytest.raises(PollError, match="no needs assessment 'nope'"):
        await polls.send(
            chat_id=str(GROUP), question="Q?", options=["A", "B"], multiple=False,
            closes_at=None, actor="test", needs_assessment_id="nope",
        )
    poll = await polls.send(
        chat_id=str(GROUP),
        question="What should our area fix first?",
        options=["Youth clubs", "Parks", "Buses"],
        multiple=True,
        closes_at=None,
        actor="test",
        needs_assessment_id=ident,
    )
    assert poll.telegram_poll_id is not None
    for user, options in [(1, [0, 1]), (2, [1]), (3, [2])]:
        await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, user, options))

    report = await tg.services.needs.report(ident)
    assert report["sources"] == {"residents": 0, "group_polls": 1}
    assert report["group_polls"] == [
        {
            "poll_id": poll.id,
            "chat_id": str(GROUP),
            "question": "What should our area fix first?",
            "options": [
                {"option": "Youth clubs", "votes": 1},
                {"option": "Parks", "votes": 2},
                {"option": "Buses", "votes": 1},
            ],
            "voters": 3,
            "closed": False,
        }
    ]
    assert all(n["score"] == 0 and n["weighted_score"] == 0 for n in report["needs"])
    await polls.close(poll.id, actor="test")  # type: ignore[arg-type]
    closed = await tg.services.needs.report(ident)
    assert closed["group_polls"][0]["closed"] is True
    assert closed["group_polls"][0]["voters"] == 3
