"""The chat page over a network that fails: a TCP proxy between Chromium and `chatstack up` resets
every connection (a drop) or stops moving bytes while keeping them open (a stall, which TCP alone
does not notice for minutes). The page must say "reconnecting", come back, and finish the answer it
was streaming exactly as stored (protocol v1 `resume`: no gap, no repeat)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.page_support import Proxy, browser, ingest
from tests.helpers.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
__all__ = ["browser"]

QUESTION = "What does the lighthouse keeper write in the logbook during a storm?"
LIGHTHOUSE = (
    "The lighthouse keeper writes the storm in the logbook every hour, noting the wind from the north "
    "west, the height of the swell against the lower rocks, the colour of the sky over the harbour mouth "
    "and the names of every fishing boat that passes the point before the lamp is lit at dusk. "
    "During a storm the lighthouse keeper also writes in the logbook which shutters rattled, which "
    "windows leaked along the seaward wall, how many times the fog horn sounded through the night and "
    "whether the supply boat could land at the jetty below the cliff path in the morning. "
    "At the end of each storm the lighthouse keeper signs the logbook page, copies the summary into the "
    "monthly report for the harbour master and files the carbon copy in the cabinet beside the stairs "
    "that lead up to the lamp room at the very top of the tower."
)
# Short deadlines so a stall shows within seconds; the page's defaults are 8 s / 240 s / 20 s.
FAST = {"timing": {"streamPingS": 1, "idlePingS": 2, "pongDeadlineS": 2, "activePingS": 1}}
RECORD_STATES = """() => { window.__states = [];
    new MutationObserver(() => window.__states.push(document.getElementById("status").dataset.state))
    .observe(document.getElementById("status"), {attributes: true}); }"""


@pytest.fixture
def proxy(service: Service) -> Iterator[Proxy]:
    target = urlsplit(service.base)
    p = Proxy(target.hostname or "127.0.0.1", target.port or 80)
    yield p
    p.close()


def start(service: Service, browser: Any, proxy: Proxy, *, fast: bool) -> tuple[Any, dict[str, str]]:
    tenant = f"net-{uuid.uuid4().hex[:8]}"
    token = service.token(user="sailor", tenant=tenant)
    writer = service.token(user="curator", tenant=tenant, scopes=("documents:write",))
    ingest(service.base, writer, source="logbook.md", title="Keeper's manual", text=LIGHTHOUSE)
    # Playwright's wait_for_function evaluates its predicate with eval, which the page's CSP forbids
    # (script-src 'self'); these tests are about the network, test_browser.py covers the CSP.
    page = browser.new_context(bypass_csp=True).new_page()
    if fast:  # the deployment's page config (static/config.json), with test-sized deadlines
        page.route("**/static/config.json", lambda route: route.fulfill(json=FAST))
    page.goto(f"http://127.0.0.1:{proxy.port}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.evaluate(RECORD_STATES)
    return page, {"Authorization": "Bearer " + token}


def send_and_wait_for_text(page: Any) -> None:
    page.fill("#text", QUESTION)
    page.press("#text", "Enter")
    page.wait_for_function(
        "document.querySelector('[data-testid=answer] .body')?.textContent.length > 20", timeout=60_000
    )  # generous: a fresh service's first question also loads the embedding model


def stored_answer(service: Service, headers: dict[str, str]) -> str:
    conv = httpx.get(service.base + "/v1/conversations", headers=headers).json()["items"][0]["id"]
    items = httpx.get(f"{service.base}/v1/conversations/{conv}/messages", headers=headers).json()["items"]
    return str(next(m["content"] for m in items if m["role"] == "assistant"))


def finished_text(page: Any) -> str:
    """The answer's text as shown, without the citation marks (the stored text has `[n]` there)."""
    page.locator("[data-testid=answer][data-done=true]").wait_for(timeout=30_000)
    return str(page.evaluate("""() => { const body = document.querySelector("[data-testid=answer] .body")
        .cloneNode(true); body.querySelectorAll(".cite").forEach((c) => c.remove());
        return body.textContent.trim(); }"""))


def same_text(shown: str, stored: str) -> bool:
    return shown == re.sub(r"\[\d+\]", "", stored).strip()


def test_a_dropped_connection_shows_reconnecting_then_resumes_the_answer_without_gaps(
    service: Service, browser: Any, proxy: Proxy
) -> None:
    page, headers = start(service, browser, proxy, fast=False)
    send_and_wait_for_text(page)
    proxy.cut()
    page.wait_for_function("window.__states.includes('online')", timeout=15_000)
    states = page.evaluate("window.__states")
    assert states.index("reconnecting") < len(states) - 1 - states[::-1].index("online"), states
    shown = finished_text(page)
    stored = stored_answer(service, headers)
    assert "carbon copy" in stored and same_text(shown, stored), (shown, stored)
    assert page.locator("#status").get_attribute("data-state") == "online"
    page.context.close()


def test_a_stalled_network_is_noticed_by_the_pong_deadline_and_the_answer_still_completes(
    service: Service, browser: Any, proxy: Proxy
) -> None:
    page, headers = start(service, browser, proxy, fast=True)
    send_and_wait_for_text(page)
    proxy.freeze()  # nothing moves, nothing closes: the socket still says OPEN
    # streamPingS (1 s) of silence, then pongDeadlineS (2 s) without an answer to the ping.
    page.wait_for_selector("#status[data-state=reconnecting]", timeout=8_000)
    assert page.evaluate("window.__states")[0] == "reconnecting"
    page.wait_for_timeout(1_000)
    assert page.locator("#status").get_attribute("data-state") == "reconnecting"  # still no network
    proxy.thaw()
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    shown = finished_text(page)
    stored = stored_answer(service, headers)
    assert "carbon copy" in stored and same_text(shown, stored), (shown, stored)
    assert json.dumps(page.evaluate("window.__states")).count("online") >= 1
    page.context.close()


def test_a_gateway_integration_failure_is_sent_again_and_answered(service: Service, browser: Any) -> None:
    """API Gateway answers a route whose Lambda failed with its own frame, `{"message": "Internal server
    error", ...}`, which names no request of ours. Playwright sits on the page's WebSocket: the first
    sendMessage never reaches the service and the page gets that frame instead. The page sends the
    same frame again (same requestId) and shows the answer; it does not wait forever."""
    tenant = f"gw-{uuid.uuid4().hex[:8]}"
    token = service.token(user="sailor", tenant=tenant)
    page = browser.new_context(bypass_csp=True).new_page()
    sends: list[dict[str, Any]] = []

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message) if isinstance(message, str) else {}
            if frame.get("action") == "sendMessage":
                sends.append(frame)
                if len(sends) == 1:  # the integration failed: the gateway's frame, nothing forwarded
                    failure = {"message": "Internal server error", "connectionId": "c", "requestId": "r"}
                    ws.send(json.dumps(failure))
                    return
            server.send(message)

        ws.on_message(from_page)
        server.on_message(lambda message: ws.send(message))

    page.route_web_socket(re.compile(r".*/ws(\?.*)?$"), route)
    page.goto(f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.fill("#text", "Hello there")
    page.press("#text", "Enter")
    page.locator("[data-testid=answer][data-done=true]").wait_for(timeout=60_000)
    assert len(sends) == 2 and sends[0]["requestId"] == sends[1]["requestId"], sends
    assert page.locator("[data-testid=error]").count() == 0
    page.context.close()
