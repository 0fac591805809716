"""Golden conversations: scripted inbound texts and the exact replies, through the simulator
API with a fixed clock. ``pytest --update-golden`` rewrites the expected replies; review the
diff before committing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.clock import FixedClock

GOLDEN = Path(__file__).parent / "golden"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line replies as ``|`` blocks so the files read like the phone screen."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)
SCRIPTS = sorted(GOLDEN.glob("*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
async def test_golden_conversation(
    script: Path, client: httpx.AsyncClient, clock: FixedClock, request: pytest.FixtureRequest
) -> None:
    spec: dict[str, Any] = yaml.safe_load(script.read_text(encoding="utf-8"))
    update = request.config.getoption("--update-golden")
    address = spec.get("address", "+447700900123")
    mismatches = []
    for number, step in enumerate(spec["steps"], start=1):
        clock.advance(minutes=step.get("wait_minutes", 1))
        body = {"channel": spec.get("channel", "sms"), "address": address, "text": step["send"]}
        if "id" in step:
            body["id"] = step["id"]
        response = await client.post("/simulator/api/messages", json=body)
        assert response.status_code == 200, response.text
        replies = [r["text"] for r in response.json()["replies"]]
        if update:
            step["expect"] = replies
        elif replies != step.get("expect"):
            mismatches.append((number, step["send"], step.get("expect"), replies))
    if update:
        script.write_text(
            yaml.dump(spec, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=100),
            encoding="utf-8",
        )
    assert not mismatches, "\n".join(
        f"step {n} {sent!r}:\n  expected {exp!r}\n  got      {got!r}"
        for n, sent, exp, got in mismatches
    )
