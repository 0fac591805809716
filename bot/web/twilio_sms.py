"""Twilio SMS webhooks: ``POST /webhooks/twilio/sms`` (inbound) and
``POST /webhooks/twilio/status`` (delivery reports).

Each request is bounded in size, parsed as a form, and its ``X-Twilio-Signature`` checked
against ``CIVICBOT_PUBLIC_URL`` + path before anything is stored: missing or wrong → 403.
Inbound messages go through the pipeline (deduplicated on MessageSid) and are answered with an
empty TwiML ``<Response/>``: replies leave later through the outbox and the REST API. A number
past ``CIVICBOT_INBOUND_PER_MINUTE`` has its messages dropped before the pipeline (STOP
excepted), and Twilio is answered the same way.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.datastructures import ImmutableMultiDict

from bot.services import Services
from bot.web.limits import BodyTooLarge, InboundLimiter, Verdict, read_body
from channels.base import InboundMessage
from channels.errors import RecipientOptedOut
from channels.twilio_sms import (
    INBOUND_PATH,
    STATUS_CALLBACK_PATH,
    InvalidWebhook,
    TwilioSmsChannel,
)
from flows.commands import Command, parse_command
from storage import repositories as repo
from storage.models import OutboxStatus

log = logging.getLogger(__name__)
Form = ImmutableMultiDict[str, str]

MAX_BODY_BYTES = 64 * 1024  # a Twilio SMS webhook is a few hundred bytes; MMS metadata a few KB
MAX_FIELDS = 200
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

# Twilio's message states → the outbox's. Twilio "queued"/"sending" mean Twilio holds the
# message: for the outbox that is still "sent" (its "queued" means "not yet handed over").
STATUSES = {
    "accepted": OutboxStatus.SENT,
    "scheduled": OutboxStatus.SENT,
    "queued": OutboxStatus.SENT,
    "sending": OutboxStatus.SENT,
    "sent": OutboxStatus.SENT,
    "delivered": OutboxStatus.DELIVERED,
    "read": OutboxStatus.DELIVERED,
    "undelivered": OutboxStatus.UNDELIVERED,
    "failed": OutboxStatus.FAILED,
    "canceled": OutboxStatus.CANCELLED,
}


def _flooding(senders: InboundLimiter, message: InboundMessage) -> bool:
    """Whether this SMS is one too many from its number this minute. Every reply is a paid
    SMS, so a flood of signed messages (200 HELPs) would be a flood of sends: past the limit
    they are dropped, but an opt-out is never lost, so STOP (or Twilio's own opt-out) always
    goes through. Twilio gets its usual empty answer either way, and does not send it again."""
    verdict = senders.take(message.address)
    if verdict is Verdict.ALLOWED:
        return False
    command = parse_command(message.text)
    if command is not None and command[0] is Command.STOP:
        return False
    if verdict is Verdict.REFUSED:
        log.warning(
            "sms: sender %s is over %d messages a minute; dropping their messages until it "
            "slows down (STOP still goes through)",
            senders.pseudonym(message.address),
            senders.per_minute,
        )
    return True


async def _read_form(request: Request) -> Form:
    """The urlencoded body, at most :data:`MAX_BODY_BYTES`; 4xx for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(415, "expected application/x-www-form-urlencoded")
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise HTTPException(413, "request body too large") from None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "malformed form body") from exc
    return Form(pairs)


async def _verified_form(request: Request, channel: TwilioSmsChannel) -> Form:
    form = await _read_form(request)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signed = channel.verify(
        path,
        form,
        request.headers.get("x-twilio-signature"),
        request.headers.get("x-twilio-webhooks-signature-settings"),
    )
    if not signed:
        raise HTTPException(403, "invalid or missing X-Twilio-Signature")
    return form


def router(services: Services, channel: TwilioSmsChannel, senders: InboundLimiter) -> APIRouter:
    """The SMS webhooks; ``senders`` counts inbound messages per phone number."""
    api = APIRouter(tags=["twilio"])

    @api.post(INBOUND_PATH, include_in_schema=False)
    async def inbound(request: Request) -> Response:
        form = await _verified_form(request, channel)
        try:
            message = channel.parse_inbound(form)
        except InvalidWebhook as exc:
            raise HTTPException(400, str(exc)) from exc
        if message is None:  # a sender name or short code: nobody to reply to
            log.info("ignored SMS %s from a non-phone sender", form.get("MessageSid"))
        elif not _flooding(senders, message):  # a flood is dropped: nothing stored or sent
            await services.pipeline.handle(message)
        return Response(EMPTY_TWIML, media_type="application/xml")

    @api.post(STATUS_CALLBACK_PATH, include_in_schema=False)
    async def status(request: Request) -> Response:
        form = await _verified_form(request, channel)
        try:
            report = channel.parse_status(form)
        except InvalidWebhook as exc:
            raise HTTPException(400, str(exc)) from exc
        outbox_status = STATUSES.get(report.status)
        if outbox_status is None:  # receiving/received and future states: nothing to record
            return Response(status_code=204)
        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            opted_out = isinstance(report.error, RecipientOptedOut)
            # None: Twilio reported before its REST reply (with this SID) reached the
            # dispatcher; the report is held until the dispatcher records the SID.
            attempt = request.query_params.get("attempt")
            row = await repo.record_delivery(
                session,
                channel=channel.name,
                provider_id=report.message_sid,
                status=outbox_status,
                provider_status=report.status,
                error=None if report.error is None else str(report.error),
                opted_out=opted_out,
                now=now,
                attempt=attempt if attempt and attempt.isalnum() else None,
            )
            if row is not None and opted_out and row.contact_id is not None:
                await repo.mark_opted_out(
                    session,
                    contact_id=row.contact_id,
                    actor="twilio",
                    detail={"channel": channel.name, "error_code": report.error_code},
                    now=now,
                )
        return Response(status_code=204)

    return api
