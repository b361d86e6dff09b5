"""The chat page in real headless Chromium (Debian's package, driven by Playwright) against a running
`chatstack up`: send, markdown, citations, XSS carried by a document, history after a reload,
rename and delete, upload, and bad or expired tokens. Each test is its own tenant."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.page_support import browser, ingest, seed_messages
from tests.helpers.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
__all__ = ["browser"]  # the fixture, imported for the tests below

DONE = "[data-testid=answer][data-done=true]"


def tenant() -> str:
    return f"web-{uuid.uuid4().hex[:8]}"


def open_page(browser: Any, url: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    return page


def ask(page: Any, text: str) -> Any:
    before = page.locator(DONE).count()
    page.fill("#text", text)
    page.press("#text", "Enter")
    page.locator(DONE).nth(before).wait_for(timeout=30_000)
    return page.locator(DONE).nth(before)


ROLLOUT = (
    "The **blue-green** rollout runs `chatstack deploy --region all` and shifts traffic in steps of ten "
    "percent. Operators watch the error dashboards while each step settles. A step lasts five minutes "
    "unless an alarm fires first. Alarms page the operator on call. The deployment log records who "
    "started it, which build it carries and when each step began. Rollouts never start on Fridays. "
    "Each region has its own dashboard, its own alarms and its own log of steps taken.\n\n"
    "Every blue-green rollout keeps the old fleet for an hour so that it can shift traffic back. The old "
    "fleet is scaled down afterwards by the cleanup job. Cleanup removes unused images older than a week. "
    "Nobody needs to approve the cleanup job. It writes a summary to the release channel when it ends. "
    "The summary lists the images removed and the space saved. Failed cleanups retry on the next day.\n"
)


def test_an_answer_streams_as_rendered_markdown_with_one_numbered_source_per_document(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    t = tenant()
    token = service.token(user="reader", tenant=t)
    writer = service.token(user="curator", tenant=t, scopes=("documents:write",))
    ingest(service.base, writer, source="runbooks/rollout.md", title="Rollout runbook", text=ROLLOUT)
    page = open_page(browser, f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    assert "token" not in page.url  # taken from the address bar into this tab's storage
    answer = ask(page, "How does a blue-green rollout shift traffic?")

    body = answer.locator(".body")
    assert body.locator("strong", has_text="blue-green").count() == 1  # **...** became bold
    assert body.locator("code", has_text="chatstack deploy --region all").count() == 1
    assert "**" not in answer.inner_text() and "`" not in answer.inner_text()
    # Two passages of one document are cited: one source line, and both marks carry its number.
    sources = answer.locator("ol.sources > li")
    assert sources.count() == 1 and "Rollout runbook" in sources.inner_text()
    marks = body.locator(".cite")
    numbers = {marks.nth(i).get_attribute("data-source") for i in range(marks.count())}
    assert marks.count() == 2 and numbers == {"1"}
    # No internal details (finish reason, token counts) are shown to users.
    shown = answer.inner_text()
    assert " in /" not in shown and "stop" not in shown.lower().split()
    marks.first.hover()
    assert marks.first.locator(".tip").is_visible()
    page.screenshot(path=str(tmp_path / "page.png"))
    assert page.errors == []
    page.context.close()


MARKDOWN = """## Regions

| region | role |
| --- | --- |
| us-east-1 | primary |

```python
def greet(name):
    return f"hello {name}"
```

<img src=x onerror="window.__xss = 'img'"><script>window.__xss = 'script'</script>
[a link](javascript:window.__xss='link') and <a href="https://example.com/doc">a web link</a>
"""


def test_the_renderer_draws_tables_and_highlighted_code_and_strips_anything_executable(
    service: Service, browser: Any
) -> None:
    """The page's own renderer module in the page's own origin: what a model could send, verbatim."""
    page = open_page(browser, f"{service.base}/?token={service.token(user='md', tenant=tenant())}")
    html = page.evaluate(
        """async (md) => {
            const m = await import("/static/render.js");
            const el = document.createElement("div");
            document.body.append(el);
            m.renderMarkdown(el, md);
            await new Promise((r) => setTimeout(r, 300));  // give a stray onerror time to run
            return {html: el.innerHTML, xss: window.__xss ?? null,
                    heading: el.querySelector("h2")?.textContent,
                    cells: [...el.querySelectorAll("td")].map((td) => td.textContent),
                    highlighted: el.querySelectorAll("pre code.hljs .hljs-keyword").length,
                    links: [...el.querySelectorAll("a")].map((a) => [a.getAttribute("href"), a.rel])};
        }""",
        MARKDOWN,
    )
    assert html["xss"] is None
    assert not any(bad in html["html"] for bad in ("onerror", "<script", "javascript:"))
    assert html["heading"] == "Regions" and html["cells"] == ["us-east-1", "primary"]
    assert html["highlighted"] >= 2  # `def` and `return`
    assert html["links"] == [[None, ""], ["https://example.com/doc", "noopener noreferrer"]]
    page.context.close()


EVIL_TITLE = '<img src=x onerror="window.__xss=\'title\'">Launch notes'
EVIL_TEXT = (
    "The launch code word is <img src=x onerror=\"window.__xss='answer'\"> tangerine "
    "<script>window.__xss='script'</script> for the spring launch."
)


def test_markup_inside_a_cited_document_is_shown_as_text_or_removed_and_never_runs(
    service: Service, browser: Any
) -> None:
    t = tenant()
    token = service.token(user="victim", tenant=t)
    writer = service.token(user="curator", tenant=t, scopes=("documents:write",))
    ingest(service.base, writer, source="notes/launch.html.txt", title=EVIL_TITLE, text=EVIL_TEXT)
    page = open_page(browser, f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    answer = ask(page, "What is the launch code word for the spring launch?")
    assert "tangerine" in answer.inner_text()
    answer.locator(".cite").first.hover()
    tip = answer.locator(".cite .tip").first
    assert tip.is_visible() and EVIL_TITLE in tip.inner_text()  # the title, as text
    page.wait_for_timeout(300)

    def clean() -> None:
        found = page.evaluate(
            """() => ({xss: window.__xss ?? null,
                      scripts: document.querySelectorAll("#log script").length,
                      handlers: [...document.querySelectorAll("#log *")].flatMap((el) =>
                          [...el.attributes].map((a) => a.name).filter((n) => n.startsWith("on")))})"""
        )
        assert found == {"xss": None, "scripts": 0, "handlers": []}

    clean()
    page.reload()  # the same answer again, this time from the stored history
    page.locator(DONE).first.wait_for(timeout=15_000)
    assert "tangerine" in page.locator(DONE).first.inner_text()
    clean()
    assert page.errors == []
    page.context.close()


def test_history_survives_a_reload_and_conversations_are_renamed_and_deleted_by_keyboard(
    service: Service, browser: Any
) -> None:
    t = tenant()
    token = service.token(user="keeper", tenant=t)
    headers = {"Authorization": "Bearer " + token}
    page = open_page(browser, f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    ask(page, "Remember that my favourite colour is teal.")
    ask(page, "What is my favourite colour?")
    page.locator("[data-testid=conversation]").first.wait_for(timeout=10_000)
    conv = httpx.get(service.base + "/v1/conversations", headers=headers).json()["items"][0]["id"]
    assert f"#c={conv}" in page.url

    page.reload()  # no token in the URL any more: the tab keeps it
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.locator(DONE).nth(1).wait_for(timeout=15_000)
    assert page.locator(".msg.user").all_inner_texts() == [
        "Remember that my favourite colour is teal.",
        "What is my favourite colour?",
    ]
    assert "teal" in page.locator(DONE).nth(1).inner_text()

    row = page.locator(f"[data-testid=conversation][data-id='{conv}']")
    row.locator(".rename").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Control+A")
    page.keyboard.type("Colours")
    page.keyboard.press("Enter")
    row.locator(".open", has_text="Colours").wait_for(timeout=10_000)
    assert httpx.get(f"{service.base}/v1/conversations/{conv}", headers=headers).json()["title"] == "Colours"
    assert page.locator("#title").inner_text() == "Colours"

    page.once("dialog", lambda d: d.accept())
    row.locator(".delete").focus()
    page.keyboard.press("Enter")
    row.wait_for(state="detached", timeout=10_000)
    assert httpx.get(f"{service.base}/v1/conversations/{conv}", headers=headers).status_code == 404
    assert page.locator(".msg").count() == 0 and page.locator("#title").inner_text() == "New chat"
    page.context.close()


def test_an_uploaded_document_shows_progress_and_is_cited_and_a_bad_file_gets_a_clear_error(
    service: Service, browser: Any, tmp_path: Path
) -> None:
    t = tenant()
    reader = open_page(browser, f"{service.base}/?token={service.token(user='reader', tenant=t)}")
    reader.wait_for_selector("#status[data-state=online]", timeout=15_000)
    assert reader.locator(".attach").is_hidden()  # readers only: adding needs documents:write
    reader.context.close()
    token = service.token(user="uploader", tenant=t, scopes=("chat", "documents:write"))
    doc = tmp_path / "harbour.md"
    filler = "Seagulls circle the old pier while the tide comes in. " * 150  # ~8 KB
    doc.write_text(f"# Harbour\n\nThe harbour ferry leaves at seven fifteen every morning.\n\n{filler}")
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x90\x00")
    page = open_page(browser, f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.evaluate(
        """() => { window.__progress = [];
                   new MutationObserver(() => document.querySelectorAll("#uploads progress")
                       .forEach((p) => window.__progress.push(p.value)))
                   .observe(document.getElementById("uploads"), {subtree: true, childList: true,
                                                               attributes: true}); }"""
    )
    page.set_input_files("#file", str(doc))
    row = page.locator("[data-testid=upload][data-state=done]")
    row.wait_for(timeout=120_000)
    assert "harbour.md" in row.inner_text() and "added" in row.inner_text()
    assert max(page.evaluate("window.__progress")) == 100
    auth = {"Authorization": "Bearer " + token}
    docs = httpx.get(f"{service.base}/v1/documents", headers=auth).json()["items"]
    assert [d["source"] for d in docs] == ["harbour.md"]
    answer = ask(page, "When does the harbour ferry leave?")
    assert "seven fifteen" in answer.inner_text()
    assert docs[0]["title"] in answer.locator("ol.sources").inner_text()

    page.set_input_files("#file", str(bad))
    error = page.locator("[data-testid=upload][data-state=error]")
    error.wait_for(timeout=30_000)
    assert "tool.exe" in error.inner_text() and len(error.inner_text()) > len("tool.exe") + 10
    page.context.close()


def test_a_refused_message_gets_a_plain_sentence_not_an_error_code(service: Service, browser: Any) -> None:
    page = open_page(browser, f"{service.base}/?token={service.token(user='verbose', tenant=tenant())}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.fill("#text", "x" * 40_000)
    page.press("#text", "Enter")
    error = page.locator("[data-testid=error]").first
    error.wait_for(timeout=15_000)
    assert error.get_attribute("data-code") == "TOO_LARGE"
    assert "too long" in error.inner_text() and "TOO_LARGE" not in error.inner_text()
    assert page.locator("[data-testid=answer]").count() == 0  # no empty answer left behind
    assert page.input_value("#text") == "x" * 40_000  # kept, to be shortened
    page.context.close()


def test_a_message_over_the_frame_limit_is_refused_in_the_page_and_never_sent(
    service: Service, browser: Any
) -> None:
    """Over 128 KB the server closes the socket (1009, docs/protocol.md). The page sent such a frame
    again on every reconnect, every 200 ms, for ever, and answered nothing after it."""
    page = browser.new_context().new_page()
    sent: list[int] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(len(payload))))
    page.goto(f"{service.base}/?token={service.token(user='paster', tenant=tenant())}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    pasted = "é" * 70_000  # 70,000 characters but 140,000 bytes: over the frame, under no char limit alone
    page.fill("#text", pasted)
    page.press("#text", "Enter")
    error = page.locator("[data-testid=error]").first
    error.wait_for(timeout=15_000)
    assert error.get_attribute("data-code") == "TOO_LARGE"
    page.wait_for_timeout(1000)
    assert not [n for n in sent if n > 100_000] and page.input_value("#text") == pasted
    page.fill("#text", "How do rollouts work?")  # and the page still answers
    page.press("#text", "Enter")
    page.locator(DONE).first.wait_for(timeout=30_000)
    assert page.locator("#status").get_attribute("data-state") == "online"
    page.context.close()


def test_an_answer_cannot_take_over_the_pages_element_ids(service: Service, browser: Any) -> None:
    """The extractive model quotes the question back, so markup in it reaches an answer. With an
    element `id="stop"` in an answer, the page's Stop button was never shown again (getElementById
    found the answer's element first); `id="send"` kept Send enabled after sign-out."""
    page = open_page(browser, f"{service.base}/?token={service.token(user='clobber', tenant=tenant())}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    answer = ask(page, 'What does <span id="stop">stop</span> <b id="send" name="text">send</b> mean?')
    assert answer.locator("[id], [name]").count() == 0
    assert page.locator("[id=stop]").count() == 1 and page.locator("[id=send]").count() == 1
    page.context.close()


def _forged(token: str) -> str:
    head, claims, signature = token.split(".")
    return f"{head}.{claims}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"


@pytest.mark.parametrize(
    ("kind", "state", "says"),
    [
        ("expired", "expired", "expired"),
        ("forged", "unauthorized", "not accepted"),
        ("none", "signed-out", "not signed in"),
    ],
)
def test_a_bad_expired_or_missing_token_says_so_and_stops_retrying(
    service: Service, browser: Any, kind: str, state: str, says: str
) -> None:
    good = service.token(user="someone", tenant=tenant())
    token = {"expired": service.token(user="late", tenant=tenant(), ttl_s=-60), "forged": _forged(good),
             "none": ""}[kind]
    sockets: list[str] = []
    page = browser.new_context().new_page()
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{service.base}/?token={token}" if token else service.base + "/")
    page.wait_for_selector(f"#status[data-state={state}]", timeout=15_000)
    banner = page.locator("#banner")
    assert banner.is_visible() and says in banner.inner_text()
    assert "chatstack token" in banner.inner_text()  # locally: how to get a working link
    page.wait_for_timeout(2500)  # long enough for two more retries if the page kept trying
    assert len(sockets) <= 1 and page.locator("#status").get_attribute("data-state") == state
    assert page.locator("#send").is_disabled()
    page.context.close()


def test_a_narrow_screen_reaches_the_conversation_list_and_sends_by_keyboard(
    service: Service, browser: Any
) -> None:
    token = service.token(user="phone", tenant=tenant())
    page = open_page(browser, f"{service.base}/?token={token}", viewport={"width": 390, "height": 760})
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    box = page.locator("#sidebar").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1  # the list waits off-screen
    assert page.evaluate("document.activeElement.id") == "text"  # ready to type
    page.keyboard.type("Small screens work too. Do small screens work?")
    page.keyboard.press("Enter")
    page.locator(DONE).first.wait_for(timeout=30_000)
    page.click("#open-side")
    page.locator("[data-testid=conversation]").first.wait_for(state="visible", timeout=10_000)
    page.keyboard.press("Escape")
    page.wait_for_timeout(400)  # the slide-out transition
    box = page.locator("#sidebar").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    page.context.close()


STRICT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def test_the_page_works_under_a_strict_content_security_policy(service: Service, browser: Any) -> None:
    """No inline script, inline handler, inline style or eval: the page runs under the policy the
    hosting sends (cdk/constructs/web_hosting.py), here added to the local page's response."""
    page = browser.new_context().new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.extend([m.text] if "Content Security Policy" in m.text else []))

    def with_csp(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    page.route(lambda url: urlsplit(url).path == "/", with_csp)
    page.goto(f"{service.base}/?token={service.token(user='csp', tenant=tenant())}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.fill("#text", "Policies protect pages. What protects pages?")
    page.press("#text", "Enter")
    page.locator(DONE).first.wait_for(timeout=30_000)
    assert violations == []
    # The policy is in force (and a violation would be seen): an inline handler added now is refused.
    page.evaluate("""() => { const b = document.createElement("button"); b.id = "probe";
        b.setAttribute("onclick", "window.__ran = 1"); document.body.append(b); }""")
    page.click("#probe")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__ran ?? null") is None and len(violations) == 1
    page.context.close()


def test_the_sidebar_pages_past_100_conversations_and_a_long_conversation_opens_whole(
    service: Service, browser: Any
) -> None:
    """The sidebar showed the 100 most recent conversations and no more; a conversation opened with
    its first 500 messages only (the page ignored `nextCursor` and `nextAfterSeq`)."""
    who = tenant()
    long_one = seed_messages(service.data_dir, tenant=who, user="keeper", conversations=1, messages=510)[0]
    seed_messages(service.data_dir, tenant=who, user="keeper", conversations=104)
    page = open_page(browser, f"{service.base}/?token={service.token(user='keeper', tenant=who)}")
    rows = page.locator("[data-testid=conversation]")
    more = page.locator("[data-testid=more-conversations]")
    more.wait_for(timeout=15_000)
    assert rows.count() == 100
    more.click()
    expect(rows).to_have_count(105)
    assert more.count() == 0
    page.locator(f"[data-testid=conversation][data-id='{long_one}'] .open").click()
    expect(page.locator("#log .msg.user")).to_have_count(510, timeout=30_000)
    assert page.locator("#log .msg.user").last.inner_text() == "turn 509"
    assert page.errors == []
    page.context.close()


def test_a_conversation_deleted_in_another_window_while_answering_says_so_and_starts_a_new_chat(
    service: Service, browser: Any
) -> None:
    """The answer stopped with "Stopped." as if the user had stopped it, and every later message
    failed with "That conversation no longer exists" until the user found "New chat"."""
    who, user = tenant(), "two-tabs"
    token = service.token(user=user, tenant=who)
    page = open_page(browser, f"{service.base}/?token={token}")
    page.wait_for_selector("#status[data-state=online]", timeout=15_000)
    page.fill("#text", "Tell me everything about blue-green rollouts, step by step, at length. " * 20)
    page.press("#text", "Enter")
    page.wait_for_url("**#c=*", timeout=15_000)
    conversation = urlsplit(page.url).fragment.removeprefix("c=")
    answer = page.locator("[data-testid=answer]").first
    for _ in range(150):  # streaming: some text is on screen, the answer is not done
        if len(answer.inner_text()) > 20:
            break
        page.wait_for_timeout(100)
    assert answer.get_attribute("data-done") != "true"
    r = httpx.delete(f"{service.base}/v1/conversations/{conversation}",
                     headers={"Authorization": f"Bearer {token}"}, timeout=10)  # the other window
    assert r.status_code == 204, r.text
    error = page.locator("[data-testid=error][data-code=DELETED_ELSEWHERE]")
    error.wait_for(timeout=15_000)
    assert "deleted" in error.inner_text()
    assert page.locator("#title").inner_text() == "New chat" and "#c=" not in page.url
    assert page.errors == []
    page.context.close()
