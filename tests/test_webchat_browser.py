"""The web chat widget end to end in a real browser: Debian's headless Chromium driven by Playwright.

A visitor opens the page and types; an internal service answers over gRPC
(SendMessage); the answer appears in the page; a reload keeps the
conversation and shows its history. Chromium is the system's
(`/usr/bin/chromium`, `apt-get install chromium`), never a Playwright
download. Without it the test skips locally, but under CI=true it fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from convhub.v1 import conversation_service_pb2
from tests.conftest import Hub, Tenant
from tests.support import Api
from tests.webchat_support import create_webchat_account

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _messages(api: Api, conversation_id: str) -> list[str]:
    response = api.conversations.ListMessages(
        conversation_service_pb2.ListMessagesRequest(conversation_id=conversation_id)
    )
    return [m.text for m in response.result]


def _wait_for(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_visitor_types_an_internal_service_answers_and_a_reload_keeps_the_conversation(
    browser: Any, hub: Hub, channel: grpc.Channel, tenant: Tenant, tmp_path: Path
) -> None:
    api = Api.for_tenant(channel, tenant.metadata)
    account = create_webchat_account(api.accounts)
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []  # CSP violations and script errors surface as console errors
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{hub.http_base}/webchat/{account.id}")
        page.wait_for_selector("#convhub-webchat[data-ready='true']", timeout=WAIT_MS)
        assert page.get_attribute("#convhub-webchat", "data-conversation-id") == ""  # none before a message

        page.fill("#chat-input", "Hi, where is order #5678?")
        page.press("#chat-input", "Enter")
        page.wait_for_selector("li.msg.visitor >> text=Hi, where is order #5678?", timeout=WAIT_MS)
        conversation_id = page.get_attribute("#convhub-webchat", "data-conversation-id")
        assert conversation_id  # the first message opened it; the page follows it with the new token
        _wait_for(lambda: _messages(api, conversation_id) == ["Hi, where is order #5678?"])

        api.conversations.SendMessage(
            conversation_service_pb2.SendMessageRequest(conversation_id=conversation_id, text="It ships tomorrow.")
        )
        page.wait_for_selector("li.msg.agent >> text=It ships tomorrow.", timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "webchat.png"))

        page.reload()
        page.wait_for_selector("#convhub-webchat[data-ready='true']", timeout=WAIT_MS)
        assert page.get_attribute("#convhub-webchat", "data-conversation-id") == conversation_id
        page.wait_for_selector("li.msg.agent >> text=It ships tomorrow.", timeout=WAIT_MS)
        shown = page.eval_on_selector_all("#chat-log li", "items => items.map(i => [i.className, i.textContent])")
        assert shown == [["msg visitor", "Hi, where is order #5678?"], ["msg agent", "It ships tomorrow."]]

        page.fill("#chat-input", "Thanks!")
        page.click("#chat-send")
        page.wait_for_selector("li.msg.visitor >> text=Thanks!", timeout=WAIT_MS)
        _wait_for(lambda: _messages(api, conversation_id)[-1:] == ["Thanks!"])
        assert _messages(api, conversation_id) == ["Hi, where is order #5678?", "It ships tomorrow.", "Thanks!"]
    finally:
        context.close()
    assert problems == [], problems


def test_the_page_outlives_its_visitor_token_renewing_it_and_missing_nothing(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tokens of 5 s: the page renews its session at half-life and its stream resumes after the last event."""
    from tests.conftest import new_tenant, running_hub

    env = {"CONVHUB_WEBCHAT_TOKEN_TTL": "5"}
    with contextlib.contextmanager(running_hub)("sqlite", tmp_path_factory.mktemp("webchat-renewal"), env=env) as hub:
        tenant = new_tenant(hub)
        with grpc.insecure_channel(hub.grpc_target) as channel:
            api = Api.for_tenant(channel, tenant.metadata)
            account = create_webchat_account(api.accounts)
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                page.goto(f"{hub.http_base}/webchat/{account.id}")
                page.wait_for_selector("#convhub-webchat[data-ready='true']", timeout=WAIT_MS)
                page.fill("#chat-input", "first")
                page.press("#chat-input", "Enter")
                page.wait_for_selector("li.msg.visitor >> text=first", timeout=WAIT_MS)
                conversation_id = page.get_attribute("#convhub-webchat", "data-conversation-id")
                assert conversation_id
                for i in range(3):  # answers spread over three token lifetimes
                    time.sleep(5)
                    api.conversations.SendMessage(
                        conversation_service_pb2.SendMessageRequest(conversation_id=conversation_id, text=f"answer {i}")
                    )
                    page.wait_for_selector(f"li.msg.agent >> text=answer {i}", timeout=WAIT_MS)
                page.fill("#chat-input", "still here")
                page.press("#chat-input", "Enter")
                page.wait_for_selector("li.msg.visitor >> text=still here", timeout=WAIT_MS)
                _wait_for(lambda: _messages(api, conversation_id)[-1:] == ["still here"])
                shown = page.eval_on_selector_all("#chat-log li", "items => items.map(i => i.textContent)")
                assert shown == ["first", "answer 0", "answer 1", "answer 2", "still here"]  # each once, in order
                assert page.get_attribute("#convhub-webchat", "data-conversation-id") == conversation_id
            finally:
                context.close()
            assert errors == [], errors
