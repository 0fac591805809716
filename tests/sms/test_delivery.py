"""Sends and delivery reports: status callbacks, opt-outs reported by Twilio, and retries of
failed REST calls against the fake Twilio server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.dispatcher import Dispatcher
from bot.scheduler import purge_held_reports
from channels.errors import PermanentError, RecipientOptedOut, RetryableError
from channels.twilio_sms import classify_error
from storage import repositories as repo
from storage.models import AuditLog, Contact, HeldDeliveryReport, OutboundMessage, OutboxStatus
from tests.sms.conftest import ACCOUNT_SID, SmsBot

STATUS = "/webhooks/twilio/status"


async def _contact(bot: SmsBot) -> Contact:
    async with bot.services.sessions() as session:
        return (await session.execute(select(Contact))).scalar_one()


async def _sent_row(bot: SmsBot) -> OutboundMessage:
    await bot.converse("JOIN")
    [row] = await bot.outbox()
    assert row.provider_id is not None
    return row


async def test_status_callbacks_are_recorded_on_the_outbox_row(sms_bot: SmsBot) -> None:
    row = await _sent_row(sms_bot)
    assert row.provider_id is not None
    for status, expected, provider_status in (
        ("queued", OutboxStatus.SENT, "queued"),
        ("sent", OutboxStatus.SENT, "sent"),
        ("delivered", OutboxStatus.DELIVERED, "delivered"),
        ("sent", OutboxStatus.DELIVERED, "delivered"),  # late, out of order: final state stays
    ):
        response = await sms_bot.status(row.provider_id, status)
        assert response.status_code == 204
        [row] = await sms_bot.outbox()
        assert row.status == expected
        assert row.content["provider_status"] == provider_status
    assert row.error is None


async def test_undelivered_with_carrier_error_is_permanent_for_that_message(
    sms_bot: SmsBot,
) -> None:
    row = await _sent_row(sms_bot)
    assert row.provider_id is not None
    await sms_bot.status(row.provider_id, "undelivered", "30005")
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.UNDELIVERED
    assert row.error is not None and "30005" in row.error
    assert (await _contact(sms_bot)).opted_out_at is None  # only this message failed
    assert await sms_bot.dispatch() == []  # and it is not sent again


async def test_error_21610_in_a_status_callback_opts_the_contact_out(sms_bot: SmsBot) -> None:
    row = await _sent_row(sms_bot)
    assert row.provider_id is not None
    await sms_bot.status(row.provider_id, "failed", "21610")
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.FAILED
    assert (await _contact(sms_bot)).opted_out_at is not None
    async with sms_bot.services.sessions() as session:
        [entry] = (await session.execute(select(AuditLog))).scalars()
    assert (entry.actor, entry.action) == ("twilio", "opted_out")
    assert await sms_bot.converse("hello") == []  # silent until START


async def test_status_callbacks_must_be_signed(sms_bot: SmsBot) -> None:
    row = await _sent_row(sms_bot)
    assert row.provider_id is not None
    form = {"MessageSid": row.provider_id, "MessageStatus": "failed", "ErrorCode": "21610"}
    assert (await sms_bot.post(STATUS, form, signature=None)).status_code == 403
    assert (await sms_bot.post(STATUS, form, signature="Zm9yZ2Vk")).status_code == 403
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.SENT
    assert (await _contact(sms_bot)).opted_out_at is None


async def _held(bot: SmsBot) -> list[HeldDeliveryReport]:
    async with bot.services.sessions() as session:
        return list((await session.execute(select(HeldDeliveryReport))).scalars())


async def test_status_for_an_unknown_message_is_acknowledged_and_held(sms_bot: SmsBot) -> None:
    assert (await sms_bot.status("SM" + "f" * 32, "delivered")).status_code == 204
    assert [(h.provider_id, h.status) for h in await _held(sms_bot)] == [
        ("SM" + "f" * 32, OutboxStatus.DELIVERED)
    ]
    assert (await sms_bot.post(STATUS, {"MessageSid": "SMx"})).status_code == 400
    # one never matched is dropped after a day
    assert await purge_held_reports(sms_bot.services) == 0
    async with sms_bot.services.sessions() as session, session.begin():
        later = sms_bot.services.clock.now() + timedelta(days=1, seconds=1)
        assert await repo.purge_held_deliveries(session, before=later) == 1
    assert await _held(sms_bot) == []


async def test_reports_arriving_before_the_send_is_recorded_are_applied(sms_bot: SmsBot) -> None:
    # Twilio can call back before its REST reply reaches the dispatcher: the reports wait
    sms_bot.fake.ids = itertools.count(7000)
    sid = f"SM{7000:032x}"  # the SID the fake will give the next message
    await sms_bot.status(sid, "sent")
    await sms_bot.status(sid, "delivered")
    assert len(await _held(sms_bot)) == 2
    await sms_bot.converse("JOIN")
    [row] = await sms_bot.outbox()
    assert row.provider_id == sid
    assert row.status == OutboxStatus.DELIVERED
    assert row.content["provider_status"] == "delivered"
    assert await _held(sms_bot) == []


async def test_an_early_21610_report_opts_the_contact_out(sms_bot: SmsBot) -> None:
    sms_bot.fake.ids = itertools.count(8000)
    await sms_bot.status(f"SM{8000:032x}", "failed", "21610")
    await sms_bot.converse("JOIN")
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.FAILED
    assert (await _contact(sms_bot)).opted_out_at is not None
    assert await sms_bot.converse("hello") == []  # silent until START


@pytest.mark.parametrize("early", [False, True], ids=["after the send", "before the send"])
async def test_a_21610_report_with_control_characters_still_opts_out(
    sms_bot: SmsBot, early: bool
) -> None:
    """PostgreSQL refuses NUL in text: a signed report carrying one in ErrorMessage is stored
    cleaned, and its opt-out is kept whether the report finds the sent row or is held."""
    sms_bot.fake.ids = itertools.count(9000)
    sid = f"SM{9000:032x}"
    if not early:
        assert (await _sent_row(sms_bot)).provider_id == sid
    response = await sms_bot.status(
        sid, "failed", "21610", error_message="Attempt to send\x00 to unsubscribed\x1b recipient"
    )
    assert response.status_code == 204
    if early:
        await sms_bot.converse("JOIN")
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.FAILED
    assert row.error == "twilio 21610: Attempt to send to unsubscribed recipient"
    assert (await _contact(sms_bot)).opted_out_at is not None
    assert await sms_bot.converse("hello") == []  # silent until START


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_retryable_rest_error_is_sent_on_retry(sms_bot: SmsBot, status: int) -> None:
    sms_bot.fake.fail_next(status, code=20429 if status == 429 else None)
    await sms_bot.text("JOIN")
    assert await sms_bot.dispatch() == []  # Twilio refused; the dispatcher backs off
    [row] = await sms_bot.outbox()
    assert (row.status, row.attempts) == (OutboxStatus.QUEUED, 1)
    assert row.error is not None and str(status if status != 429 else 20429) in row.error

    sms_bot.clock.advance(seconds=sms_bot.services.settings.outbox_backoff_seconds)
    [body] = await sms_bot.dispatch()
    assert body.startswith("Welcome to civicbot")
    [row] = await sms_bot.outbox()
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 2)
    assert len(sms_bot.fake.messages) == 2


@pytest.mark.parametrize("sms_overrides", [{"twilio_timeout_seconds": 0.2}])
async def test_rest_timeout_is_retryable(sms_bot: SmsBot, sms_overrides: dict[str, Any]) -> None:
    sms_bot.fake.delay_next(1.0)  # longer than CIVICBOT_TWILIO_TIMEOUT_SECONDS
    await sms_bot.text("JOIN")
    await sms_bot.dispatch()
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.QUEUED
    assert row.error is not None and "Timeout" in row.error


async def test_unsubscribed_recipient_on_send_opts_the_contact_out(sms_bot: SmsBot) -> None:
    sms_bot.fake.fail_next(400, code=21610, message="Attempt to send to unsubscribed recipient")
    await sms_bot.text("JOIN")
    await sms_bot.dispatch()
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.FAILED
    assert (await _contact(sms_bot)).opted_out_at is not None


async def test_invalid_number_fails_at_once(sms_bot: SmsBot) -> None:
    sms_bot.fake.fail_next(400, code=21211, message="Invalid 'To' Phone Number")
    await sms_bot.text("JOIN")
    await sms_bot.dispatch()
    [row] = await sms_bot.outbox()
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 1)
    assert row.error is not None and "21211" in row.error
    sms_bot.clock.advance(hours=1)
    assert await sms_bot.dispatch() == []


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 21610, RecipientOptedOut),
        (None, 21610, RecipientOptedOut),
        (None, 30003, PermanentError),
        (None, 30008, PermanentError),
        (429, 20429, RetryableError),
        (429, None, RetryableError),
        (500, 20500, RetryableError),
        (502, None, RetryableError),
        (None, None, RetryableError),  # no answer: timeout, refused connection
        (400, 21211, PermanentError),
        (401, 20003, PermanentError),
    ],
)
def test_twilio_errors_map_to_one_typed_set(
    status: int | None, code: int | None, expected: type[Exception]
) -> None:
    assert type(classify_error(status=status, code=code)) is expected


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for something another thread does (the fake Twilio answering late)."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the fake Twilio never got there")


@pytest.mark.parametrize("sms_overrides", [{"twilio_timeout_seconds": 0.2}])
async def test_a_send_twilio_took_but_answered_late_is_not_sent_again(
    sms_bot: SmsBot, sms_overrides: dict[str, Any]
) -> None:
    """Issue #10, item 5: the reply timed out after Twilio accepted the message; the retry
    used to send it a second time. Now it asks Twilio first."""
    sms_bot.fake.delay_next(1.0)
    await sms_bot.text("JOIN")
    assert await sms_bot.dispatch() == []  # timed out
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.QUEUED and row.in_flight_since is not None
    await _until(lambda: len(sms_bot.fake.accepted) == 1)  # Twilio did take it
    sms_bot.clock.advance(seconds=sms_bot.services.settings.outbox_backoff_seconds)
    assert await sms_bot.dispatch() == []  # found, not sent again
    [row] = await sms_bot.outbox()
    assert row.status == OutboxStatus.SENT and row.provider_id == sms_bot.fake.accepted[0]["sid"]
    assert row.in_flight_since is None
    assert [m.method for m in sms_bot.fake.requests] == ["POST", "GET"]


@pytest.mark.parametrize("sms_overrides", [{"twilio_timeout_seconds": 0.2}])
async def test_a_timed_out_send_twilio_never_took_is_sent_again(
    sms_bot: SmsBot, sms_overrides: dict[str, Any]
) -> None:
    # a late answer that says it failed: Twilio did not take it
    sms_bot.fake.scripted.append((500, {"code": 20500, "message": "x", "status": 500}, 1.0))
    await sms_bot.text("JOIN")
    await sms_bot.dispatch()
    await _until(lambda: sms_bot.fake.messages and sms_bot.fake.messages[0].status == 500)
    sms_bot.clock.advance(seconds=sms_bot.services.settings.outbox_backoff_seconds)
    [body] = await sms_bot.dispatch()  # nothing went: the retry sends it
    assert body.startswith("Welcome to civicbot")


@pytest.mark.parametrize("sms_overrides", [{"twilio_timeout_seconds": 0.2}])
async def test_a_status_report_for_a_lost_reply_records_the_send(
    sms_bot: SmsBot, sms_overrides: dict[str, Any]
) -> None:
    sms_bot.fake.delay_next(1.0)
    await sms_bot.text("JOIN")
    await sms_bot.dispatch()
    await _until(lambda: len(sms_bot.fake.accepted) == 1)
    [row] = await sms_bot.outbox()
    sid = sms_bot.fake.accepted[0]["sid"]
    path = f"/webhooks/twilio/status?attempt={row.attempt_id}"
    form = {"MessageSid": sid, "MessageStatus": "sent", "AccountSid": ACCOUNT_SID}
    assert (await sms_bot.post(path, form)).status_code == 204
    [row] = await sms_bot.outbox()
    assert (row.status, row.provider_id) == (OutboxStatus.SENT, sid)
    sms_bot.clock.advance(hours=1)
    assert await sms_bot.dispatch() == []
    assert [m.method for m in sms_bot.fake.requests] == ["POST"]


async def test_a_restarted_dispatcher_takes_its_rows_back_at_once_without_resending(
    sms_bot: SmsBot,
) -> None:
    """Issue #10, item 5: after kill -9 between Twilio's acceptance and our commit, the row
    waited out its 120 s lease and was then sent again."""
    services = sms_bot.services
    await sms_bot.text("JOIN")
    await sms_bot.text("HELP", sender="+447700900124")
    now = sms_bot.clock.now()
    lease = timedelta(seconds=services.settings.outbox_lease_seconds)
    async with services.sessions() as s, s.begin():  # what the dying dispatcher did
        claimed = await repo.claim_due(
            s, channels=["sms"], now=now, limit=10, lease=lease, claimer="host-a"
        )
        for row in claimed:
            await repo.renew_claim(
                s, row_id=row.id, attempts=row.attempts, until=now + lease, in_flight_since=now
            )
    first = claimed[0]
    assert first.address is not None
    await services.channels["sms"].send(first.address, first.content)  # Twilio took one...
    # ... and the process died before recording it. Another host's dispatcher leaves them be:
    other = Dispatcher(
        sessions=services.sessions,
        channels=services.channels,
        clock=sms_bot.clock,
        settings=services.settings,
        name="host-b",
    )
    assert await other.reclaim() == 0 and await other.run_once() == 0
    restarted = Dispatcher(
        sessions=services.sessions,
        channels=services.channels,
        clock=sms_bot.clock,
        settings=services.settings,
        name="host-a",
    )
    assert await restarted.reclaim() == 2  # due now, not in 120 s
    assert await restarted.run_once() == 2
    rows = {r.id: r for r in await sms_bot.outbox()}
    assert all(r.status == OutboxStatus.SENT for r in rows.values())
    bodies = sms_bot.fake.bodies
    assert len(bodies) == 2 and len(set(bodies)) == 2  # one each: the first was not repeated
