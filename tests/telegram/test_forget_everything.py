"""FORGET on Telegram leaves nothing that identifies the person: the whole database is dumped
afterwards and searched for their Telegram id, their name, the ids of the messages sent to
them (``<chat>:<message>``) and what they wrote (issue #10, item 1). Their poll vote stays
counted, detached."""

from __future__ import annotations

from sqlalchemy import select

from storage.polls import TelegramPollAnswer
from tests.support import dump_database
from tests.telegram.conftest import GROUP, USER, TelegramBot, polls_of
from tests.telegram.test_polls import poll_answer
from tests.telegram.test_webhook import group_text, member_update


async def test_after_forget_nothing_identifies_the_telegram_user(tg: TelegramBot) -> None:
    await tg.post(member_update(tg, "member"))
    poll = await polls_of(tg).send(
        chat_id=str(GROUP),
        question="Which first?",
        options=["Park", "Lights"],
        multiple=False,
        closes_at=None,
        actor="test",
    )
    assert poll.telegram_poll_id is not None
    await tg.post(poll_answer(tg.update_ids, poll.telegram_poll_id, USER, [1]))
    await tg.post(group_text(tg, "Sam here from flat 4B, the lights are out"))
    await tg.say("/start")
    await tg.press("Yes")
    await tg.dispatch()
    await tg.press("English")
    await tg.dispatch()
    await tg.say("My secret postcode is CF10 1EP")
    sent = [
        f"{USER}:{c.result['message_id']}"
        for c in tg.fake.calls
        if c.method == "sendMessage" and c.params.get("chat_id") == str(USER)
    ]
    before = await dump_database(tg.services.sessions)
    assert str(USER) in before and "Sam" in before and sent[0] in before

    await tg.say("FORGET")
    await tg.press("Yes")
    await tg.dispatch()

    after = await dump_database(tg.services.sessions)
    everything_sent = [  # the erasure confirmation included
        f"{USER}:{c.result['message_id']}"
        for c in tg.fake.calls
        if c.method == "sendMessage" and c.params.get("chat_id") == str(USER)
    ]
    assert len(everything_sent) > len(sent)
    identifiers = [str(USER), "Sam", "4B", "CF10 1EP", "secret", *everything_sent]
    left = [i for i in identifiers if i in after]
    assert not left, f"still in the database after FORGET: {left}"
    async with tg.services.sessions() as s:
        vote = (await s.execute(select(TelegramPollAnswer))).scalar_one()
    assert vote.contact_id is None and vote.option_ids == [1]  # still counted
    closed = await polls_of(tg).close(poll.id or 0, actor="test")
    assert closed.result == {"counts": [0, 1], "voters": 1}
