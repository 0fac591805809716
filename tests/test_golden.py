"""Golden conversations: scripted messages and taps, and the exact replies, through the
simulator API with a fixed clock, on the SMS or the Telegram style; then checks of what was
stored (the contact's fields, the answers). ``pytest --update-golden`` rewrites the expected
replies, buttons and notices; review the diff before committing it.

A script: ``channel`` (sms, telegram), ``address``, ``steps`` and, checked at the end,
``expect_contact`` (language, postcode, ward_code, consented, opted_out) and
``expect_answers`` (answer key -> stored value, the latest of each); ``setup`` names what to
prepare first (``needs``: the demo census and an open needs assessment; ``pb_approval``,
``pb_knapsack``, ``pb_ranked``, ``pb_cumulative``: a PB round of six projects with that
ballot, voting open; receipts are shown as ``######``). A step is ``send: TEXT``
or ``tap: LABEL`` (Telegram: the button on the latest keyboard whose label starts with it),
with ``expect`` (the reply texts), ``expect_keyboard`` (the labels of the last keyboard sent),
and for taps ``expect_notice`` and ``expect_buttons`` (the tapped keyboard's labels after a
toggle or page turn). The scripts run with the shipped flows
plus ``tests/golden/flows`` (a ballot of 40 projects built by the ``load_projects`` action).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services, build_services
from storage.db import upgrade
from storage.models import Answer, Contact
from tests.conftest import load_demo_wards, make_settings
from tests.needs.support import set_up as needs_set_up
from tests.rounds.vote_support import BALLOTS, golden_setup
from tests.support import ballot_flows, load_projects

GOLDEN = Path(__file__).parent / "golden"
API = "/simulator/api/messages"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line replies as ``|`` blocks so the files read like the phone screen."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
SCRIPTS = sorted(GOLDEN.glob("*.yaml"))
SETUPS = {  # ``setup: [needs]``: the demo census and an open needs assessment
    "needs": needs_set_up,
    # ``setup: [pb_knapsack]``: a PB round with six projects and that ballot, voting open
    **{f"pb_{kind}": golden_setup(kind) for kind in BALLOTS},
}
# A ballot's receipt is random: shown as ###### so the scripts stay the same
RECEIPT = re.compile(r"((?:Receipt|Derbynneb): )[A-Z0-9]{6}")


@pytest.fixture
async def golden(
    sqlite_url: str, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = make_settings(sqlite_url, flows_dir=ballot_flows(tmp_path / "flows"))
    services = build_services(settings, clock=clock, actions={"load_projects": load_projects})
    await upgrade(services.db)
    await load_demo_wards(services)
    transport = httpx.ASGITransport(app=build_app(services), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield services, client
    await services.close()


class Phone:
    """One simulated resident: what they were sent, so taps can find their buttons."""

    def __init__(self, client: httpx.AsyncClient, channel: str, address: str) -> None:
        self.client, self.channel, self.address = client, channel, address
        self.keyboards: dict[str, list[dict[str, str]]] = {}
        self.latest: str | None = None

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(
            API, json={"channel": self.channel, "address": self.address, **body}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        for reply in data["replies"]:
            if reply["buttons"]:
                self.keyboards[reply["id"]] = reply["buttons"]
                self.latest = reply["id"]
        if data.get("edited"):
            self.keyboards[data["edited"]["id"]] = data["edited"]["buttons"]
        return data

    async def tap(self, label: str) -> dict[str, Any]:
        assert self.latest is not None, "no keyboard to tap"
        buttons = self.keyboards[self.latest]
        found = [b for b in buttons if b["label"].startswith(label)]
        assert found, f"no button {label!r} in {[b['label'] for b in buttons]}"
        return await self.post({"choice": found[0]["data"], "message_id": self.latest})


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
async def test_golden_conversation(
    script: Path,
    golden: tuple[Services, httpx.AsyncClient],
    clock: FixedClock,
    request: pytest.FixtureRequest,
) -> None:
    services, client = golden
    spec: dict[str, Any] = yaml.safe_load(script.read_text(encoding="utf-8"))
    update = request.config.getoption("--update-golden")
    phone = Phone(client, spec.get("channel", "sms"), spec.get("address", "+447700900123"))
    for name in spec.get("setup", []):
        await SETUPS[name](services)
    mismatches = []
    for number, step in enumerate(spec["steps"], start=1):
        clock.advance(minutes=step.get("wait_minutes", 1))
        if "tap" in step:
            data = await phone.tap(step["tap"])
            shown = {
                "expect_notice": data["notice"],
                "expect_buttons": [b["label"] for b in data["edited"]["buttons"]]
                if data["edited"]
                else None,
            }
        else:
            body = {"text": step["send"], **({"id": step["id"]} if "id" in step else {})}
            data = await phone.post(body)
            shown = {}
        shown["expect"] = [RECEIPT.sub(r"\1######", r["text"]) for r in data["replies"]]
        keyboards = [r["buttons"] for r in data["replies"] if r["buttons"]]
        shown["expect_keyboard"] = [b["label"] for b in keyboards[-1]] if keyboards else None
        for key, got in shown.items():
            if key != "expect" and got is None and key not in step:
                continue
            if update:
                step[key] = got
            elif got != step.get(key):
                label = step.get("send", f"tap {step.get('tap')!r}")
                mismatches.append((number, label, key, step.get(key), got))
    async with services.sessions() as session:
        contact = (await session.execute(select(Contact).order_by(Contact.id))).scalars().first()
        answers = {
            a.key: a.value
            for a in (await session.execute(select(Answer).order_by(Answer.id))).scalars()
        }
    stored = {
        "expect_contact": None
        if contact is None
        else {
            "language": contact.language,
            "postcode": contact.postcode,
            "ward_code": contact.ward_code,
            "consented": contact.consent_at is not None,
            "opted_out": contact.opted_out_at is not None,
        },
        "expect_answers": answers,
    }
    for key, got in stored.items():
        if update:
            spec[key] = got
        elif got != spec.get(key):
            mismatches.append((0, "(stored)", key, spec.get(key), got))
    if update:
        script.write_text(
            yaml.dump(spec, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=100),
            encoding="utf-8",
        )
    assert not mismatches, "\n".join(
        f"step {n} {sent}, {key}:\n  expected {exp!r}\n  got      {got!r}"
        for n, sent, key, exp, got in mismatches
    )
