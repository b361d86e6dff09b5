"""Sign-in from the chat page through an OIDC provider's hosted UI: the authorization-code flow with
PKCE (RFC 7636, S256), as Cognito's hosted UI runs it
(https://docs.aws.amazon.com/cognito/latest/developerguide/using-pkce-in-authorization-code.html).

The provider here is a small real HTTP server on another origin that does what the hosted UI and
token endpoint do: it hands out a one-time code bound to the code challenge and gives a token only
for the matching verifier. The token it gives is one the running service accepts (the service's
development issuer stands in for the pool's keys)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.e2e.page_support import browser
from tests.helpers.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
__all__ = ["browser"]

CLIENT_ID = "page-client"


@dataclass
class Provider:
    mint: Any
    url: str = ""
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    exchanges: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def serve_provider(provider: Provider) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")  # the page is on another origin
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                return self.reply(200, {"issuer": provider.url,
                                        "authorization_endpoint": provider.url + "/authorize",
                                        "token_endpoint": provider.url + "/token",
                                        "code_challenge_methods_supported": ["S256"]})
            if url.path == "/authorize":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                ok = (q.get("response_type") == "code" and q.get("client_id") == CLIENT_ID
                      and q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43
                      and q.get("state"))
                if not ok:
                    return self.reply(400, {"error": "invalid_request"})
                code = secrets.token_urlsafe(16)
                provider.codes[code] = q
                target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                return self.reply(302, headers={"Location": target})
            self.reply(404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            asked = provider.codes.pop(form.get("code", ""), None)  # one use only
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            good = (asked is not None and form.get("grant_type") == "authorization_code"
                    and form.get("client_id") == CLIENT_ID
                    and form.get("redirect_uri") == asked["redirect_uri"]
                    and challenge == asked["code_challenge"])
            provider.exchanges.append((200 if good else 400, form))
            if not good:
                return self.reply(400, {"error": "invalid_grant"})
            self.reply(200, {"access_token": provider.mint(), "id_token": "unused", "token_type": "Bearer",
                             "expires_in": 3600})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def provider(service: Service) -> Iterator[Provider]:
    tenant = f"sso-{uuid.uuid4().hex[:8]}"
    p = Provider(mint=lambda: service.token(user="signed-in", tenant=tenant))
    server = serve_provider(p)
    yield p
    server.shutdown()


def test_the_page_signs_in_with_the_code_flow_and_pkce_and_keeps_no_code_or_token_in_the_url(
    service: Service, browser: Any, provider: Provider
) -> None:
    # The local page's CSP allows no other origin; a deployment's (cdk/constructs/web_hosting.py) adds
    # its issuer to connect-src. Here the issuer is a test server, so the CSP is bypassed.
    page = browser.new_context(bypass_csp=True).new_page()
    config = {"oidc": {"issuer": provider.url, "clientId": CLIENT_ID, "scope": "openid email"}}
    page.route("**/static/config.json", lambda route: route.fulfill(json=config))
    page.goto(service.base + "/")
    page.wait_for_selector("#status[data-state=signed-out]", timeout=15_000)
    page.locator("#banner button", has_text="Sign in").click()

    page.wait_for_selector("#status[data-state=online]", timeout=20_000)
    assert page.url == service.base + "/"  # the one-time code and state are gone from the address bar
    [(status, form)] = provider.exchanges
    assert status == 200 and 43 <= len(form["code_verifier"]) <= 128
    assert page.evaluate("sessionStorage.getItem('chatstack.pkce')") is None  # the verifier is spent
    page.fill("#text", "Signed-in users can chat. Can signed-in users chat?")
    page.press("#text", "Enter")
    page.locator("[data-testid=answer][data-done=true]").wait_for(timeout=30_000)
    assert not page.locator("#signout").is_hidden()

    # A sign-in answer that does not match what this tab asked for (a forged or replayed redirect).
    page.goto(service.base + "/?code=stolen&state=forged")
    page.wait_for_selector("#status[data-state=signed-out]", timeout=15_000)
    assert "Sign-in could not be completed" in page.locator("#banner").inner_text()
    assert "code=" not in page.url and len(provider.exchanges) == 1  # nothing was sent to the provider
    page.context.close()
