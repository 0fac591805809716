"""The simulator in a real browser (Debian's Chromium driven by Playwright) against a real
`civicbot serve` process on loopback, with its own SQLite file and the demo wards.

Skipped where Chromium is not installed (`apt-get install chromium`); CI installs it and
makes these tests required. Playwright never downloads a browser here: it is pointed at
/usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`civicbot serve` with a fresh database and the demo wards; yields its base URL."""
    tmp = tmp_path_factory.mktemp("browser")
    port = _free_port()
    env = {
        **os.environ,
        "CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/browser.db",
        "CIVICBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CIVICBOT_PORT": str(port),
        "CIVICBOT_HOST": "127.0.0.1",
    }
    civicbot = shutil.which("civicbot", path=str(Path(sys.executable).parent)) or "civicbot"
    for args in (["db", "upgrade"], ["wards", "load", "admin/data/demo_wards.csv"]):
        subprocess.run([civicbot, *args], env=env, cwd=ROOT, check=True, capture_output=True)
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([civicbot, "serve"], env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "serve.log").read_text())
            time.sleep(0.2)
        yield url
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


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.goto(f"{server}/simulator")
    yield p
    context.close()
    assert errors == []  # no script errors on the page


def _send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_sms_onboarding_in_the_browser(page: Page) -> None:
    expect(page.get_by_role("heading", name="Try")).to_be_visible()
    expect(page.locator("#phone-header")).to_have_text("SMS · +447700900123")
    _send(page, "HI")
    expect(page.locator(".bubble.in").last).to_contain_text("Reply 1 or 2")
    _send(page, "1")
    _send(page, "English")
    _send(page, "CF10 1EP")
    expect(page.locator(".bubble.in", has_text="CF10 1EP is in Cathays ward")).to_be_visible()
    expect(page.locator(".bubble.out")).to_have_count(4)


def test_telegram_buttons_and_a_new_resident(page: Page) -> None:
    page.get_by_label("Telegram").check()
    page.get_by_role("button", name="New resident").click()
    expect(page.locator("#phone-header")).to_contain_text("Telegram · +4477009")
    expect(page.locator(".thread li")).to_have_count(0)
    _send(page, "HI")
    buttons = page.locator(".bubble.in .buttons button")
    expect(buttons.first).to_be_visible()
    labels = buttons.all_inner_texts()
    assert len(labels) >= 2
    buttons.first.click()  # a tap sends the button's label and its data
    expect(page.locator(".bubble.out").last).to_have_text(labels[0])
    expect(page.locator(".bubble.in")).to_have_count(2)


def test_a_refused_message_shows_the_reason(page: Page) -> None:
    page.locator("#address").fill("")
    page.locator("#address").dispatch_event("change")
    _send(page, "HI")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).not_to_have_text("")
