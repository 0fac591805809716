"""The simulator in a real browser (Debian's Chromium driven by Playwright) against a real
`civicbot serve` process on loopback, with its own SQLite file, the demo wards and a few test
flows (a PB vote with a budget, a long pick-several list that pages, a reminder).

Skipped where Chromium is not installed (`apt-get install chromium`); CI installs it and
makes these tests required. Playwright never downloads a browser here: it is pointed at
/usr/bin/chromium. Each test saves screenshots of the states it checks under its pytest
tmp path (never in the repository).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

CHROMIUM = os.environ.get("CIVICBOT_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]

if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}; CI installs Debian's chromium package")
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )

from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright  # noqa: E402

# Patient on slow shared machines (waits end as soon as the page is right, so this costs
# nothing when all is well); a proactive message also waits for the page's next poll (2 s).
expect.set_options(timeout=15_000)
ARRIVES = 30_000  # ms

VOTE_FLOW = """\
id: vote
title: Vote
triggers: [VOTE]
start: pick
nodes:
  pick:
    type: multi
    text: Pick projects for Riverside (budget 10,000)
    budget: 10000
    min: 1
    save_as: projects
    options:
      - {id: park, text: Park benches, cost: 4000}
      - {id: lights, text: Street lights, cost: 5000}
      - {id: garden, text: Community garden, cost: 3000}
    next: done
  done:
    type: end
    text: Thanks, your vote is in.
"""

PRIORITIES = [
    "Parks",
    "Roads",
    "Libraries",
    "Youth clubs",
    "Bus routes",
    "Street lighting",
    "Recycling",
    "Community centres",
    "Public toilets",
    "Cycle lanes",
]
PRIORITIES_FLOW = (
    """\
id: priorities
title: Priorities
triggers: [PRIORITIES]
start: pick
nodes:
  pick:
    type: multi
    text: Which matter most to you?
    max: 3
    save_as: priorities
    next: done
    options:
"""
    + "".join(f"      - {{id: p{i}, text: {name}}}\n" for i, name in enumerate(PRIORITIES))
    + """\
  done:
    type: end
    text: Thanks for telling us.
"""
)

REMINDER_FLOW = """\
id: reminder
title: Reminder
triggers: [REMINDER]
start: say
nodes:
  say:
    type: end
    text: "Reminder: the Riverside vote closes on Friday."
"""

# What the scheduler does for a reminder: a flow broadcast, from another process than the web
# server, through the same services `civicbot serve` builds from the environment.
REMIND = """\
import asyncio
from bot.services import build_services
from bot.settings import load_settings
from flows.broadcasts import BroadcastSpec, Segment

async def main() -> None:
    services = build_services(load_settings())
    try:
        spec = BroadcastSpec(flow_id="reminder", segment=Segment(channels=("sms",)),
                             label="reminder", actor="test")
        print(await services.broadcasts.send(spec))
    finally:
        await services.close()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]
    civicbot: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A civicbot command (or, with args starting "-c", Python) as another tool would run
        it, with the server's environment."""
        command = [sys.executable, *args] if args[0] == "-c" else [self.civicbot, *args]
        return subprocess.run(
            command,
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`civicbot serve` with a fresh database, the demo wards and the test flows."""
    tmp = tmp_path_factory.mktemp("browser")
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "vote.yaml").write_text(VOTE_FLOW)
    (flows / "priorities.yaml").write_text(PRIORITIES_FLOW)
    (flows / "reminder.yaml").write_text(REMINDER_FLOW)
    port = _free_port()
    env = {
        **os.environ,
        "CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/browser.db",
        "CIVICBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CIVICBOT_PORT": str(port),
        "CIVICBOT_HOST": "127.0.0.1",
        "CIVICBOT_FLOWS_DIR": str(flows),
    }
    civicbot = shutil.which("civicbot", path=str(Path(sys.executable).parent)) or "civicbot"
    url = f"http://127.0.0.1:{port}"
    ready = Server(url, env, civicbot)
    ready.run("flows", "check", str(flows))
    ready.run("db", "upgrade")
    ready.run("wards", "load", "admin/data/demo_wards.csv")
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([civicbot, "serve"], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "serve.log").read_text())
            time.sleep(0.2)
        yield ready
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


Opener = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, server: Server) -> Iterator[Opener]:
    """Open the simulator at a viewport size, for a channel and resident (default: the page's
    own defaults); every page must finish without a script error."""
    contexts = []
    errors: list[str] = []

    def opener(
        width: int = 1100, height: int = 800, channel: str | None = None, address: str = ""
    ) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        p = context.new_page()
        p.on("pageerror", lambda exc: errors.append(str(exc)))
        query = urlencode({"channel": channel, "address": address}) if channel else ""
        p.goto(f"{server.url}/simulator" + (f"?{query}" if query else ""))
        return p

    yield opener
    for context in contexts:
        context.close()
    assert errors == []  # no script errors on the page


@pytest.fixture
def page(open_page: Opener) -> Page:
    return open_page()


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Page, str], None]:
    def save(p: Page, name: str) -> None:
        p.screenshot(path=tmp_path / f"{name}.png", full_page=True)

    return save


def _posts(p: Page) -> list[str]:
    """Every POST the page makes from now on."""
    seen: list[str] = []
    p.on("request", lambda r: seen.append(r.url) if r.method == "POST" else None)
    return seen


def _send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def _texts(locator: Locator) -> list[str]:
    return [t.strip() for t in locator.locator(".text").all_inner_texts()]


def _bubbles(page: Page) -> list[str]:
    """The thread as (who, text) lines, as a screen reader hears who sent each message."""
    return [" ".join(t.split()) for t in page.locator("#thread .bubble .body").all_text_contents()]


def _join(page: Page, address: str, channel: str = "sms") -> None:
    """Consent and pick English, so the resident can be sent broadcasts."""
    _send(page, "HI")
    if channel == "telegram":
        page.get_by_role("button", name="Yes, I agree").click()
        page.get_by_role("button", name="English", exact=True).click()
    else:
        expect(page.locator(".bubble.in").last).to_contain_text("Reply 1 or 2")
        _send(page, "1")
        expect(page.locator(".bubble.in").last).to_contain_text("Which language")
        _send(page, "1")
    expect(page.locator(".bubble.in").last).to_contain_text("postcode")


def test_sms_onboarding_in_the_browser(page: Page, shot: Callable[[Page, str], None]) -> None:
    expect(page.get_by_role("heading", name="Try")).to_be_visible()
    expect(page.locator("#phone-header")).to_have_text("SMS · +447700900123")
    _send(page, "HI")
    expect(page.locator(".bubble.in").last).to_contain_text("Reply 1 or 2")
    expect(page.locator(".bubble.in .keyboard")).to_have_count(0)  # SMS: numbered lines only
    _send(page, "1")
    _send(page, "English")
    _send(page, "CF10 1EP")
    expect(page.locator(".bubble.in", has_text="CF10 1EP is in Cathays ward")).to_be_visible()
    expect(page.locator(".bubble.out")).to_have_count(4)
    shot(page, "sms-onboarding")


def test_each_bubble_says_who_sent_it(open_page: Opener, shot: Callable[[Page, str], None]) -> None:
    page = open_page(channel="sms", address="+447700900201")
    thread = page.locator("#thread")
    expect(thread).to_have_attribute("aria-live", "polite")
    _send(page, "HI")
    expect(page.locator(".bubble.in")).to_have_count(1)
    expect(thread).to_have_attribute("aria-busy", "false")  # else nothing is read out
    bubbles = _bubbles(page)
    assert bubbles[0] == "You said: HI"
    assert bubbles[1].startswith("civicbot said: Welcome to civicbot")
    # The labels are in the accessibility tree (hidden visually, not from screen readers)...
    tree = thread.aria_snapshot()
    assert "You said: HI" in tree and "civicbot said: Welcome to civicbot" in tree
    # ...and not on screen.
    for who in page.locator("#thread .who").all():
        box = who.bounding_box()
        assert box is not None and box["width"] <= 1 and box["height"] <= 1
    shot(page, "screen-reader-labels")


@pytest.mark.parametrize(("width", "height"), [(320, 568), (375, 667), (1280, 800)])
def test_no_sideways_scroll_and_send_on_screen(
    open_page: Opener, shot: Callable[[Page, str], None], width: int, height: int
) -> None:
    """Issue #11 item 6 (WCAG 1.4.10 reflow): the page never scrolls sideways, Send is inside
    the viewport and the conversation panel, and on a phone the conversation comes first."""
    page = open_page(width, height, channel="sms", address=f"+447700900{width}")

    def check(state: str) -> None:
        shot(page, f"{width}px-{state}")
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"{state}: page is {widths[0]}px wide in {widths[1]}px"
        send = page.get_by_role("button", name="Send").bounding_box()
        panel = page.locator("#phone").bounding_box()
        assert send is not None and panel is not None
        assert send["x"] >= 0 and send["x"] + send["width"] <= width, state
        assert send["y"] >= 0 and send["y"] + send["height"] <= height, state
        assert send["x"] + send["width"] <= panel["x"] + panel["width"], state
        settings = page.locator(".controls").bounding_box()
        assert settings is not None
        if width < 641:  # one column: conversation first, both panels the full width
            assert panel["y"] < settings["y"], state
            assert panel["width"] == settings["width"], state

    expect(page.locator("#empty")).to_have_text("No messages yet. Send HI to start.")
    check("empty")
    _send(page, "HI")
    expect(page.locator(".bubble.in")).to_have_count(1)
    _send(page, "https://example.org/" + "a-very-long-unbroken-address" * 8)
    expect(page.locator(".bubble.in")).to_have_count(2)
    check("sms")
    page.get_by_label("Telegram").check()
    _send(page, "HI")
    expect(page.locator(".bubble.in .keyboard button").first).to_be_visible()
    check("telegram-keyboard")


def test_a_reload_keeps_the_thread(open_page: Opener, shot: Callable[[Page, str], None]) -> None:
    page = open_page(channel="sms", address="+447700900202")
    _send(page, "HI")
    _send(page, "1")
    expect(page.locator(".bubble.in")).to_have_count(2)
    before = _bubbles(page)
    shot(page, "before-reload")
    page.reload()
    expect(page.locator(".bubble")).to_have_count(4)
    assert _bubbles(page) == before
    expect(page.locator("#phone-header")).to_have_text("SMS · +447700900202")
    shot(page, "after-reload")

    # Typing a resident in (rather than opening a link) is kept over a reload too.
    page.get_by_label("Pretend to be").fill("+447700900203")
    page.get_by_label("Pretend to be").press("Enter")
    expect(page.locator("#empty")).to_have_text("No messages yet. Send HI to start.")
    _send(page, "HELP")
    expect(page.locator(".bubble.in")).to_have_count(1)
    page.reload()
    expect(page.locator("#phone-header")).to_have_text("SMS · +447700900203")
    expect(page.locator(".bubble")).to_have_count(2)


def test_channels_and_residents_have_separate_threads(
    open_page: Opener, shot: Callable[[Page, str], None]
) -> None:
    page = open_page(channel="sms", address="+447700900204")
    _send(page, "HI")
    expect(page.locator(".bubble.in")).to_have_count(1)
    sms = _bubbles(page)
    assert "Reply 1 or 2" in sms[1]

    page.get_by_label("Telegram").check()
    expect(page.locator("#phone-header")).to_have_text("Telegram · +447700900204")
    expect(page.locator("#thread .bubble")).to_have_count(0)
    _send(page, "HI")
    expect(page.locator(".bubble.in .keyboard")).to_have_count(1)
    page.get_by_role("button", name="Yes, I agree").click()
    expect(page.locator(".bubble.in")).to_have_count(2)
    telegram = _bubbles(page)
    assert not any("Reply 1 or 2" in b for b in telegram)  # no SMS text in this thread
    shot(page, "telegram-thread")

    page.get_by_label("SMS (any phone)").check()
    expect(page.locator("#phone-header")).to_have_text("SMS · +447700900204")
    expect(page.locator("#thread .bubble")).to_have_count(2)
    assert _bubbles(page) == sms
    expect(page.locator(".keyboard")).to_have_count(0)
    shot(page, "sms-thread-again")

    page.get_by_label("Telegram").check()
    expect(page.locator("#thread .bubble")).to_have_count(len(telegram))
    assert _bubbles(page) == telegram

    # Another resident on the same channel: a thread of their own.
    page.get_by_label("Pretend to be").fill("Sam")
    page.get_by_label("Pretend to be").press("Enter")
    expect(page.locator("#phone-header")).to_have_text("Telegram · Sam")
    expect(page.locator("#thread .bubble")).to_have_count(0)


def test_new_resident_fits_the_channel(open_page: Opener) -> None:
    page = open_page(channel="sms", address="+447700900205")
    _send(page, "HI")
    expect(page.locator(".bubble")).to_have_count(2)
    page.get_by_role("button", name="New resident").click()
    # Ofcom's drama range: 07700 900000 to 900999.
    expect(page.locator("#phone-header")).to_have_text(re.compile(r"^SMS · \+447700900\d{3}$"))
    expect(page.locator("#phone-header")).not_to_have_text("SMS · +447700900205")
    expect(page.locator("#thread .bubble")).to_have_count(0)
    expect(page.get_by_label("Pretend to be")).to_have_value(re.compile(r"^\+447700900\d{3}$"))

    page.get_by_label("Telegram").check()
    page.get_by_role("button", name="New resident").click()
    expect(page.locator("#phone-header")).to_have_text(re.compile(r"^Telegram · [1-9]\d{9}$"))
    expect(page.locator("#thread .bubble")).to_have_count(0)


def test_telegram_buttons_and_a_new_resident(page: Page) -> None:
    page.get_by_label("Telegram").check()
    page.get_by_role("button", name="New resident").click()
    expect(page.locator("#phone-header")).to_have_text(re.compile(r"^Telegram · \d+$"))
    expect(page.locator(".thread li")).to_have_count(0)
    _send(page, "HI")
    buttons = page.locator(".bubble.in .keyboard button")
    expect(buttons.first).to_be_visible()
    labels = buttons.all_inner_texts()
    assert labels == ["Yes, I agree", "No thanks"]
    buttons.first.click()  # a choice: the thread shows what was chosen, and the next question
    expect(page.locator(".bubble.in")).to_have_count(2)
    expect(page.locator(".bubble.out .text").last).to_have_text(labels[0])
    expect(page.locator(".bubble.in").last).to_contain_text("Which language")


def test_telegram_toggles_update_in_place(
    open_page: Opener, shot: Callable[[Page, str], None]
) -> None:
    page = open_page(channel="telegram", address="5550101")
    _join(page, "5550101", "telegram")
    _send(page, "VOTE")
    vote = page.locator(".bubble.in", has_text="Pick projects for Riverside")
    expect(vote.get_by_role("button")).to_have_count(4)
    vote.evaluate("li => { li.dataset.marker = 'the same element' }")
    sent_before = page.locator(".bubble.out").count()
    bubbles_before = page.locator(".bubble").count()

    vote.get_by_role("button", name="⬜ Park benches (4,000)", exact=True).click()
    expect(vote.get_by_role("button", name="✅ Park benches (4,000)", exact=True)).to_be_visible()
    expect(vote.get_by_role("button", name="Done: 4,000 of 10,000", exact=True)).to_be_visible()
    vote.get_by_role("button", name="⬜ Street lights (5,000)", exact=True).click()
    expect(vote.get_by_role("button", name="Done: 9,000 of 10,000", exact=True)).to_be_visible()
    # Redrawn in place: the same bubble, nothing added to the thread.
    expect(vote).to_have_attribute("data-marker", "the same element")
    expect(page.locator(".bubble")).to_have_count(bubbles_before)
    shot(page, "toggled")

    vote.get_by_role("button", name="⬜ Community garden (3,000)", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("2,000 over the budget of 10,000")
    expect(vote.get_by_role("button", name="Done: 9,000 of 10,000", exact=True)).to_be_visible()
    shot(page, "over-budget-notice")

    vote.get_by_role("button", name="Done: 9,000 of 10,000", exact=True).click()
    expect(page.locator(".bubble.in").last).to_have_text(re.compile("Thanks, your vote is in"))
    # The status line is emptied, and stays in the accessibility tree for the next notice.
    expect(page.get_by_role("status")).to_have_text("")
    assert page.locator(".bubble.out").count() == sent_before + 1  # Done answers; toggles don't
    expect(page.locator(".bubble.out .text").last).to_have_text("Done: 9,000 of 10,000")

    # The old keyboard is still there, as on a phone; a tap on it is answered with a notice.
    vote.get_by_role("button", name="⬜ Community garden (3,000)", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("That question has closed.")
    shot(page, "closed-notice")


def test_telegram_pages_by_keyboard(open_page: Opener, shot: Callable[[Page, str], None]) -> None:
    """A long pick-several list: Previous / page / Next share a row; every button is reached
    with Tab and pressed with Enter; a page turn or toggle keeps the keyboard focus."""
    page = open_page(channel="telegram", address="5550102")
    _join(page, "5550102", "telegram")
    _send(page, "PRIORITIES")
    question = page.locator(".bubble.in", has_text="Which matter most to you?")
    expect(question.get_by_role("button")).to_have_count(11)  # 8 options, 1/2 and Next, Done
    rows = question.locator(".keyboard-row")
    expect(rows).to_have_count(10)
    expect(rows.nth(8).get_by_role("button")).to_have_text(["1/2", "Next »"])
    shot(page, "page-1")

    page.get_by_label("Message").focus()
    page.keyboard.press("Shift+Tab")
    expect(page.locator(":focus")).to_have_text("Done (0 chosen)")
    page.keyboard.press("Shift+Tab")
    expect(page.locator(":focus")).to_have_text("Next »")
    page.keyboard.press("Enter")
    expect(question.get_by_role("button", name="⬜ Cycle lanes", exact=True)).to_be_visible()
    expect(question.get_by_role("button", name="⬜ Parks", exact=True)).to_have_count(0)
    expect(question.locator(".keyboard-row").nth(2).get_by_role("button")).to_have_text(
        ["« Previous", "2/2"]
    )
    expect(page.locator(":focus")).to_have_attribute("data-data", re.compile("^p:"))
    expect(page.locator(".bubble.in")).to_have_count(4)  # consent, language, area, this
    shot(page, "page-2")

    for name in ("Public toilets", "Cycle lanes"):
        question.get_by_role("button", name=f"⬜ {name}", exact=True).focus()
        page.keyboard.press("Enter")
        expect(page.locator(":focus")).to_have_text(f"✅ {name}")
    question.get_by_role("button", name="« Previous", exact=True).click()
    # A resident sees each tick before the next tap (a tap on the copy drawn before the
    # previous tap's redraw changes nothing; tests/telegram/test_webhook.py covers that).
    question.get_by_role("button", name="⬜ Parks", exact=True).click()
    expect(question.get_by_role("button", name="✅ Parks", exact=True)).to_be_visible()
    question.get_by_role("button", name="⬜ Roads", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Please choose no more than 3.")
    expect(question.get_by_role("button", name="Done (3 chosen)", exact=True)).to_be_visible()
    shot(page, "too-many-notice")


def test_an_empty_resident_field_is_explained_and_nothing_is_sent(
    page: Page, shot: Callable[[Page, str], None]
) -> None:
    posts = _posts(page)
    page.get_by_label("Pretend to be").fill("   ")
    page.get_by_label("Pretend to be").press("Tab")
    _send(page, "HI")
    friendly = "Enter who you are pretending to be, such as a phone number or a name"
    expect(page.locator("#address-error")).to_have_text(f"Error: {friendly}")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(friendly)
    expect(page.get_by_role("alert")).not_to_contain_text("String should have")
    expect(page.get_by_label("Pretend to be")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#thread .bubble")).to_have_count(0)
    expect(page.locator("#phone-header")).to_have_text("SMS · no resident")
    expect(page.get_by_label("Message")).to_have_value("HI")  # kept, to send when fixed
    shot(page, "empty-resident")
    assert posts == []

    # The summary's link goes to the field; a resident put in, the message goes.
    page.get_by_role("link", name=friendly).click()
    expect(page.get_by_label("Pretend to be")).to_be_focused()
    page.get_by_label("Pretend to be").fill("+447700900206")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".bubble.in")).to_have_count(1)
    expect(page.locator(".bubble.out .text")).to_have_text(["HI"])
    expect(page.locator("#address-error")).to_be_hidden()
    expect(page.get_by_role("alert")).to_be_hidden()
    assert len(posts) == 1


def test_a_resident_too_long_for_the_server_is_explained(open_page: Opener) -> None:
    """The field's maxlength does not hold for a link: the page checks the length itself."""
    page = open_page(channel="sms", address="x" * 65)
    posts = _posts(page)
    expect(page.locator("#address-error")).to_contain_text("64 characters or fewer")
    _send(page, "HI")
    expect(page.get_by_role("alert")).to_contain_text("64 characters or fewer")
    expect(page.locator("#thread .bubble")).to_have_count(0)
    assert posts == []


def test_a_refused_message_is_marked_not_sent(
    open_page: Opener, shot: Callable[[Page, str], None]
) -> None:
    """What the server refuses is never shown as sent, and its raw validation text is not
    shown: here the server's answer is replaced at the network edge."""
    page = open_page(channel="sms", address="+447700900207")
    page.route(
        "**/simulator/api/messages",
        lambda route: (
            route.fulfill(
                status=422,
                json={
                    "detail": "address: String should have at least 1 character",
                    "errors": [
                        {"field": "address", "message": "String should have at least 1 character"}
                    ],
                },
            )
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    _send(page, "HI")
    failed = page.locator(".bubble.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("Not sent.")
    expect(page.locator(".bubble.out")).to_have_count(0)
    expect(page.get_by_role("alert")).to_contain_text("Enter who you are pretending to be")
    expect(page.locator("body")).not_to_contain_text("String should have")
    expect(page.get_by_label("Message")).to_have_value("HI")
    shot(page, "refused")
    page.unroute("**/simulator/api/messages")

    page.route("**/simulator/api/messages", lambda route: route.abort())
    _send(page, "HELP")
    expect(page.locator(".bubble.failed")).to_have_count(2)
    expect(page.get_by_role("alert")).to_contain_text("could not be reached")


def test_a_reminder_appears_without_sending(
    open_page: Opener, server: Server, shot: Callable[[Page, str], None]
) -> None:
    """A message nobody asked for (the scheduler's reminder, started by another process)
    shows up on its own."""
    page = open_page(channel="sms", address="+447700900208")
    _join(page, "+447700900208")
    _send(page, "CF10 1EP")
    expect(page.locator(".bubble.in").last).to_contain_text("What would you like to do?")
    _send(page, "3")  # About: the end of the menu, so nothing is waiting for an answer
    expect(page.locator(".bubble.in").last).to_contain_text("civicbot is run for your council")
    count = page.locator(".bubble").count()
    posts = _posts(page)
    server.run("-c", REMIND)
    reminder = page.locator(".bubble.in", has_text="Reminder: the Riverside vote closes on Friday.")
    expect(reminder).to_have_count(1, timeout=ARRIVES)
    expect(page.locator(".bubble")).to_have_count(count + 1)
    assert posts == []
    shot(page, "reminder")
    page.reload()  # and it is part of the thread from then on
    expect(page.locator(".bubble")).to_have_count(count + 1)


def test_a_broadcast_appears_without_sending(
    open_page: Opener, server: Server, shot: Callable[[Page, str], None]
) -> None:
    page = open_page(channel="sms", address="+447700900209")
    _join(page, "+447700900209")
    count = page.locator(".bubble").count()
    posts = _posts(page)
    server.run(
        "broadcast",
        "send",
        "--channel",
        "sms",
        "--key",
        "browser-test",
        "--text-en",
        "Bins are collected on Tuesday this week.",
    )
    broadcast = page.locator(".bubble.in", has_text="Bins are collected on Tuesday this week.")
    expect(broadcast).to_have_count(1, timeout=ARRIVES)
    expect(page.locator(".bubble")).to_have_count(count + 1)
    assert posts == []
    shot(page, "broadcast")
