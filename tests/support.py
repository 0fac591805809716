"""Small helpers shared by tests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from channels.base import Content
from channels.render import render_sms
from channels.sms_text import DEFAULT_MAX_SEGMENTS
from flows.catalogue import load_catalogue
from flows.events import ActionResult, MessageCreated
from storage import schema

CATALOGUE = load_catalogue()
assert schema.TABLE_MODULES  # every table is on SQLModel.metadata for dump_database


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler],
    *,
    daemon_threads: bool = False,
    poll_interval: float = 0.5,
) -> Iterator[str]:
    """``handler`` served on a loopback port from a thread, for the block: the base URL. The
    fake providers (Twilio, the Bot API, tender feeds) run this way in tests and bench/. With
    ``daemon_threads`` the end does not wait for requests still being answered."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = daemon_threads
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def sms(
    message: MessageCreated, language: str = "en", max_segments: int = DEFAULT_MAX_SEGMENTS
) -> Content:
    """SMS content for a message, with the shipped catalogue."""
    return render_sms(message, language, max_segments, CATALOGUE)


# ---- a ballot with 40 projects built from data (the platform's long lists) -----------------

BALLOT_FLOW = """\
id: ballot
title: {en: Riverside fund, cy: Cronfa Glan-yr-afon}
triggers: [VOTE, PLEIDLAIS]
keyword: {en: VOTE, cy: PLEIDLAIS}
start: load
nodes:
  load:
    type: action
    action: load_projects
    outcomes: {ok: pick}
  pick:
    type: multi
    text: {en: "Choose up to 5 projects for Riverside", cy: "Dewiswch hyd at 5 prosiect"}
    options_from: vars.projects
    budget: vars.budget
    max: vars.most
    save_as: projects
    next: done
  done:
    type: end
    text: {en: "Thanks, your choices are in.", cy: "Diolch, mae eich dewisiadau i mewn."}
"""


def forty_projects() -> list[dict[str, object]]:
    return [
        {
            "id": f"p{k}",
            "text": {"en": f"Project number {k}", "cy": f"Prosiect rhif {k}"},
            "cost": 1000 * k,
        }
        for k in range(1, 41)
    ]


async def load_projects(ctx: object) -> ActionResult:
    """The action the ballot flow calls: 40 projects, a 50,000 budget, at most 5 picks."""
    return ActionResult("ok", {"projects": forty_projects(), "budget": 50_000, "most": 5})


def ballot_flows(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ballot.yaml").write_text(BALLOT_FLOW)
    return folder


async def dump_database(sessions: async_sessionmaker[AsyncSession]) -> str:
    """Every row of every table as text, for searching what a database still holds."""
    lines: list[str] = []
    async with sessions() as session:
        for table in SQLModel.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                values = [json.dumps(v, default=str, ensure_ascii=False) for v in row]
                lines.append(f"{table.name}: {' | '.join(values)}")
    return "\n".join(lines)


FEEDBACK_FLOW = """\
id: feedback
title: Feedback
triggers: [FEEDBACK]
start: rate
nodes:
  rate:
    type: choice
    text: How is the park?
    options:
      - {id: good, text: Good}
      - {id: poor, text: Poor}
    save_as: rating
    next: say
  say:
    type: input
    text: Tell us more
    personal: true
    save_as: comment
    next: done
  done:
    type: end
    text: Thank you.
"""
