"""A broadcast's preview counts, in one query, exactly whom sending it reaches: each contact
once, on their newest identity on an allowed channel, in their language; never the opted
out, the unconsented or the erased."""

from __future__ import annotations

from collections import Counter

import httpx
from sqlalchemy import select

from bot.services import Services
from flows.broadcasts import BroadcastSpec, Segment
from storage.models import ChannelIdentity, OutboundMessage

API = "/simulator/api/messages"


async def say(client: httpx.AsyncClient, channel: str, address: str, *texts: str) -> None:
    for text in texts:
        response = await client.post(
            API, json={"channel": channel, "address": address, "text": text}
        )
        assert response.status_code == 200


async def test_preview_counts_whom_send_reaches(
    services: Services, client: httpx.AsyncClient
) -> None:
    await say(client, "sms", "+447700900401", "HI", "1", "1", "CF10 1EP")
    await say(client, "sms", "+447700900402", "HI", "1", "2", "CF10 1EP")  # Welsh
    await say(client, "telegram", "tg-403", "HI", "1", "1", "CF24 2AA")
    await say(client, "sms", "+447700900404", "HI", "1", "1", "CF10 1EP", "STOP")
    await say(client, "sms", "+447700900405", "HI", "2")  # declined: no consent
    await say(client, "sms", "+447700900406", "HI", "1", "1", "CF10 1EP", "FORGET", "YES")
    # A contact with a newer identity on another channel is reached there, once.
    async with services.sessions() as session, session.begin():
        first = (
            await session.execute(
                select(ChannelIdentity).where(ChannelIdentity.address == "+447700900401")
            )
        ).scalar_one()
        session.add(
            ChannelIdentity(
                channel="sim-telegram",
                address="tg-401",
                contact_id=first.contact_id,
                created_at=services.clock.now(),
            )
        )
    for segment in (
        Segment(),
        Segment(channels=("sms",)),
        Segment(wards=("DEMO-CATHAYS",)),
        Segment(languages=("cy",)),
    ):
        spec = BroadcastSpec(
            text={"en": "Hello", "cy": "Helo"}, segment=segment, key=f"preview-{segment}"[:64]
        )
        audience = await services.broadcasts.preview(spec)
        expected = {(line.channel, line.language): line.recipients for line in audience.lines}
        async with services.sessions() as session:
            before = {r.id for r in (await session.execute(select(OutboundMessage))).scalars()}
        await services.broadcasts.send(spec)
        async with services.sessions() as session:
            rows = [
                r
                for r in (await session.execute(select(OutboundMessage))).scalars()
                if r.id not in before
            ]
        sent = Counter((r.channel, r.content.get("language")) for r in rows)
        assert dict(sent) == expected, segment
    everyone = await services.broadcasts.preview(
        BroadcastSpec(text={"en": "x"}, segment=Segment(), key="all")
    )
    assert {(line.channel, line.language): line.recipients for line in everyone.lines} == {
        ("sim-sms", "cy"): 1,
        ("sim-telegram", "en"): 2,
    }
