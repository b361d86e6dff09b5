"""The chat page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_the_page_streams_an_answer_and_shows_its_usage(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(f"{service.base}/?token={service.token(user='browser-user')}")
    page.wait_for_selector("#status.online", timeout=15_000)
    page.fill("#text", "Browsers render streamed answers. What do browsers render?")
    page.press("#text", "Enter")
    answer = page.locator("[data-testid=answer]").first
    answer.locator(".meta").filter(has_text="stop").wait_for(timeout=30_000)
    text = answer.inner_text()
    assert "streamed answers" in text
    assert "in /" in text and "out" in text  # the usage line of the done frame
    page.screenshot(path=str(service.data_dir.parent / "browser.png"))
    page.close()


def test_the_page_shows_errors_from_the_server(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(f"{service.base}/?token={service.token(user='browser-err')}")
    page.wait_for_selector("#status.online", timeout=15_000)
    page.fill("#text", "x" * 40_000)
    page.press("#text", "Enter")
    error = page.locator("[data-testid=error]").first
    error.wait_for(timeout=15_000)
    assert "TOO_LARGE" in error.inner_text()
    page.close()
