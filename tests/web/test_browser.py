"""The web inbox in Chromium, against the system started from its real entry points."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from missive_client import Client
from playwright.sync_api import Dialog, Page, expect

from tests.web.conftest import PASSWORD, PHONE, Site, screenshot, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

XSS = "<img src=x onerror=alert(1)>"


def _no_reload_marker(page: Page) -> None:
    page.evaluate("window.missiveTestMarker = 42")


def _not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.missiveTestMarker") == 42)


def _send(page: Page, text: str) -> None:
    """Type ``text`` in the open conversation and send it; returns once the service stored it."""
    page.get_by_label(re.compile("^Message to ")).fill(text)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/messages" in r.url, timeout=20_000
    ) as r:
        page.get_by_role("button", name="Send").click()
    assert r.value.status == 201, r.value.text()


def _message_count(page: Page, text: str) -> int:
    return page.locator("#messages .bubble", has_text=re.compile(f"^{re.escape(text)}$")).count()


def test_register_sign_out_and_sign_in(site: Site) -> None:
    context = site.context()
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "signin-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "signin-phone")
    page.get_by_role("link", name="Create an account").click()
    # Every visible field has a label (get_by_label finds them), and the keyboard submits.
    page.get_by_label("Name").fill("Dora")
    page.get_by_label("Email").fill("dora@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    expect(page.get_by_text("You're all caught up.")).to_be_visible()
    expect(page.locator(".me")).to_have_text("dora@example.com")
    cookie = next(c for c in context.cookies() if c["name"] == "missive_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("missive_session") == -1, "never visible to JS"

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin\?reason=signed-out$"))
    expect(page.get_by_role("status")).to_have_text("You have signed out.")
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.get_by_label("Email").fill("dora@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    context.close()


def test_a_message_arrives_live_with_toast_and_badge(site: Site) -> None:
    alice, bob = site.register("alice"), site.register("bob")
    bob_context, alice_context = site.context(), site.context()
    bob_page = site.sign_in(bob_context, bob)
    site.wait_live(bob_page)
    _no_reload_marker(bob_page)
    alice_page = site.sign_in(alice_context, alice)
    alice_page.goto(f"/c/{bob}")

    _send(alice_page, "Hello Bob, lunch at noon?")
    returned = time.monotonic()
    toast = bob_page.locator(".toast")
    expect(toast).to_contain_text(alice, timeout=1000)
    shown = time.monotonic() - returned
    expect(toast).to_contain_text("Hello Bob, lunch at noon?")
    assert shown < 1.0, f"shown after {shown:.2f}s"
    item = bob_page.locator(f'li.conversation[data-peer="{alice}"]')
    expect(item.locator(".badge.unread .count")).to_have_text("1")
    expect(item.locator(".preview")).to_have_text("Hello Bob, lunch at noon?")
    expect(bob_page.locator("#unread-total")).to_have_text("1")
    expect(bob_page).to_have_title("(1) Inbox · Missive")
    assert _not_reloaded(bob_page)

    for text in ("Sounds good, see you there", "I'll book a table for two"):
        _send(alice_page, text)
    expect(item.locator(".badge.unread .count")).to_have_text("3")
    expect(bob_page.locator("#unread-total")).to_have_text("3")
    expect(bob_page.locator("#lead")).to_contain_text("You have 3 unread messages.")
    bob_page.wait_for_timeout(400)  # the last toast's entrance animation
    screenshot(bob_page, "inbox-desktop")

    # Opening the conversation marks it read; new messages then appear in it.
    item.locator("a").click()
    expect(bob_page).to_have_url(re.compile(f"/c/{re.escape(alice)}$"))
    expect(bob_page.locator("#messages .message")).to_have_count(3)
    expect(bob_page.locator("#unread-total")).to_be_hidden()
    site.wait_live(bob_page)
    _no_reload_marker(bob_page)
    _send(alice_page, "Table booked for noon")
    returned = time.monotonic()
    expect(bob_page.locator("#messages .message").last).to_have_text(
        re.compile("Table booked"), timeout=1000
    )
    assert time.monotonic() - returned < 1.0
    assert _not_reloaded(bob_page)
    _send_from(bob_page, "Perfect, thank you!")
    screenshot(bob_page, "conversation-desktop")
    # Read on screen: after a reload nothing is unread.
    wait_until(lambda: _unread_after_reload(site, bob_context, alice) == 0, what="marked read")

    phone = site.context(PHONE)
    phone_page = site.sign_in(phone, bob)
    screenshot(phone_page, "inbox-phone")
    phone_page.goto(f"/c/{alice}")
    expect(phone_page.locator("#messages .message")).to_have_count(5)
    screenshot(phone_page, "conversation-phone")
    for context in (alice_context, bob_context, phone):
        context.close()


def _send_from(page: Page, text: str) -> None:
    _send(page, text)
    expect(page.locator("#messages .message.mine").last).to_have_text(re.compile(re.escape(text)))


def _unread_after_reload(site: Site, context: object, peer: str) -> int:
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto("/inbox")
    count = int(
        page.locator(f'li.conversation[data-peer="{peer}"] .badge').get_attribute("data-count") or 0
    )
    page.close()
    return count


def test_frontend_restart_loses_and_repeats_nothing(site: Site) -> None:
    carol, dave, quinn = site.register("carol"), site.register("dave"), site.register("quinn")
    # Dave has the conversation open (messages appear in it and are marked read); Quinn has
    # the inbox open (messages count as unread there).
    conversation = site.sign_in(site.context(), dave)
    conversation.goto(f"/c/{carol}")
    inbox = site.sign_in(site.context(), quinn)
    for page in (conversation, inbox):
        site.wait_live(page)
        _no_reload_marker(page)
    sender = site.sign_in(site.context(), carol)

    def send(text: str) -> None:
        for peer in (dave, quinn):
            sender.goto(f"/c/{peer}")
            _send(sender, text)

    send("before the restart")
    expect(conversation.locator("#messages .message")).to_have_count(1)
    site.system.stop("frontend")
    sent = [f"while FrontendService was down #{i}" for i in range(3)]
    for text in sent:
        send(text)
    site.system.start("frontend")
    send("after the restart")

    # The bridge reconnects upstream with the SDK's backoff (at most 5 s between attempts).
    for text in [*sent, "after the restart"]:
        expect(conversation.locator("#messages .bubble", has_text=text)).to_have_count(
            1, timeout=15_000
        )
    badge = inbox.locator(f'li.conversation[data-peer="{carol}"] .badge .count')
    expect(badge).to_have_text("5", timeout=15_000)
    time.sleep(1.5)  # a late duplicate would show up now
    for text in ["before the restart", *sent, "after the restart"]:
        assert _message_count(conversation, text) == 1, text
    expect(conversation.locator("#messages .message")).to_have_count(5)
    expect(badge).to_have_text("5")
    expect(inbox.locator("#unread-total")).to_have_text("5")
    assert _not_reloaded(conversation) and _not_reloaded(inbox)


def test_a_browser_that_leaves_closes_its_upstream_stream(site: Site) -> None:
    erin = site.register("erin")
    wait_until(lambda: site.live_streams() == 0, what="earlier tests' streams closed")
    before = 0
    context = site.context()
    pages = [site.sign_in(context, erin)]
    pages.append(context.new_page())
    pages[1].goto("/inbox")
    for page in pages:
        site.wait_live(page)
    wait_until(lambda: site.live_streams() == before + 2, what="two live streams")
    log = site.system.services["frontend"].log_path
    opened = log.read_text().count(f"stream opened for {erin}")
    assert opened == 2
    pages[0].close()
    wait_until(lambda: site.live_streams() == before + 1, what="one stream closed")
    context.close()
    wait_until(lambda: site.live_streams() == before, what="every stream closed")
    wait_until(
        lambda: log.read_text().count(f"stream closed for {erin}") == 2,
        what="FrontendService saw both upstream streams end",
    )


def test_hostile_content_is_shown_as_text(site: Site) -> None:
    frank, grace = site.register("frank"), site.register("grace")
    grace_context = site.context()
    grace_page = site.sign_in(grace_context, grace)
    site.wait_live(grace_page)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    grace_page.on("dialog", on_dialog)
    frank_context = site.context()
    frank_page = site.sign_in(frank_context, frank)
    frank_page.goto(f"/c/{grace}")
    _send(frank_page, XSS)
    expect(grace_page.locator(".toast-preview")).to_have_text(XSS)
    expect(grace_page.locator(".conversation .preview").first).to_have_text(XSS)
    grace_page.goto(f"/c/{frank}")
    expect(grace_page.locator("#messages .bubble")).to_have_text(XSS)
    assert grace_page.locator("main img").count() == 0
    assert grace_page.locator(".toasts img, .conversations img").count() == 0
    grace_page.wait_for_timeout(300)
    assert dialogs == []
    frank_context.close()
    grace_context.close()


def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    heidi, ivan = site.register("heidi"), site.register("ivan")
    context = site.context()
    page = site.sign_in(context, heidi)
    forms: list[dict[str, str | float | bool]] = [
        {"to": ivan, "content": "forged"},
        {"to": ivan, "content": "forged", "csrf_token": "0" * 64},
    ]
    for form in forms:
        reply = context.request.post("/send", form=form, max_redirects=0)
        assert reply.status == 403, reply.text()
        assert "did not come from this site" in reply.text()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    cross_site = context.request.post(
        "/send",
        form={"to": ivan, "content": "forged", "csrf_token": token},
        headers={"origin": "https://evil.example"},
        max_redirects=0,
    )
    assert cross_site.status == 403
    signout = context.request.post("/signout", form={}, max_redirects=0)
    assert signout.status == 403
    page.goto(f"/c/{ivan}")
    expect(page.get_by_text("No messages yet. Say hello!")).to_be_visible()
    assert "forged" not in page.content()
    context.close()


def test_another_users_conversation_shows_nothing_of_theirs(site: Site) -> None:
    judy, kim, mallory = site.register("judy"), site.register("kim"), site.register("mallory")
    judy_context = site.context()
    judy_page = site.sign_in(judy_context, judy)
    judy_page.goto(f"/c/{kim}")
    _send(judy_page, "the secret recipe")
    mallory_context = site.context()
    page = site.sign_in(mallory_context, mallory)
    for url in (f"/c/{kim}", f"/c/{judy}", f"/c/{kim}?user={judy}", "/inbox"):
        page.goto(url)
        assert "the secret recipe" not in page.content(), url
    page.goto(f"/c/{kim}/older?page_token=x")
    assert "the secret recipe" not in page.content()
    judy_context.close()
    mallory_context.close()


def test_an_expired_session_goes_back_to_sign_in(site: Site) -> None:
    lena = site.register("lena")
    context = site.context()
    context.add_cookies(
        [{"name": "missive_session", "value": site.token(lena, -60), "url": site.url}]
    )
    page = context.new_page()
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/signin\?reason=expired$"))
    expect(page.get_by_role("status")).to_have_text(
        "Your session has expired. Please sign in again."
    )
    # A session that expires while the page is open: the next step signs out.
    expires = time.time() + 4
    context.add_cookies(
        [{"name": "missive_session", "value": site.token(lena, 4), "url": site.url}]
    )
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    page.wait_for_timeout(max(0.0, expires - time.time() + 1.2) * 1000)
    page.get_by_role("link", name="Missive").click()
    expect(page).to_have_url(re.compile(r"/signin\?reason=expired$"))
    # A token the services refuse (not signed by them) is a signed-out session too.
    forged = site.token(lena, 600)[:-4] + "AAAA"
    context.add_cookies([{"name": "missive_session", "value": forged, "url": site.url}])
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/signin\?reason=expired$"))
    assert not [c for c in context.cookies() if c["name"] == "missive_session"]
    context.close()


def _events(
    client: httpx.Client, count: int, last_event_id: str | None = None
) -> list[dict[str, str]]:
    """The first ``count`` message events of a new /events connection (then it disconnects)."""
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    found: list[dict[str, str]] = []
    event: dict[str, str] = {}
    with client.stream("GET", "/events", headers=headers, timeout=10) as stream:
        for line in stream.iter_lines():
            if not line:
                if event.get("event") == "message":
                    found.append(event)
                    if len(found) == count:
                        return found
                event = {}
                continue
            field, _, value = line.partition(":")
            event[field] = value.strip()
    return found


def test_a_reconnect_with_last_event_id_neither_loses_nor_repeats(site: Site) -> None:
    mia, noah = site.register("mia"), site.register("noah")
    with httpx.Client(base_url=site.url, trust_env=False) as client:
        form = client.get("/signin").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        signed_in = client.post(
            "/signin", data={"email": noah, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert signed_in.status_code == 303
        sender = site.context()
        page = site.sign_in(sender, mia)
        page.goto(f"/c/{noah}")
        for text in ("one", "two", "three"):
            _send(page, text)
        # First connection: the unread replay, oldest first.
        first = _events(client, 3)
        assert [json.loads(e["data"])["message"]["content"] for e in first] == [
            "one",
            "two",
            "three",
        ]
        # The browser went away after the second event; two more messages arrive meanwhile.
        for text in ("four", "five"):
            _send(page, text)
        resumed = _events(client, 3, last_event_id=first[1]["id"])
        contents = [json.loads(e["data"])["message"]["content"] for e in resumed]
        assert contents == ["three", "four", "five"]
        # Resuming from the last one: nothing is repeated, the next new one comes.
        _send(page, "six")
        latest = _events(client, 1, last_event_id=resumed[-1]["id"])
        assert [json.loads(e["data"])["message"]["content"] for e in latest] == ["six"]
        # A malformed Last-Event-ID is a full replay, not an error.
        assert len(_events(client, 6, last_event_id="not-a-cursor")) == 6
        sender.close()


def test_older_messages_load_on_demand_above_the_newest(site: Site) -> None:
    olga, pete = site.register("olga"), site.register("pete")
    with Client.connect(
        user_url=site.system.rest_url("user"),
        user_grpc=site.system.grpc_addr("user"),
        message_grpc=site.system.grpc_addr("message"),
        notification_grpc=site.system.grpc_addr("notification"),
        frontend_grpc=site.system.grpc_addr("frontend"),
    ) as client:
        client.login(olga, PASSWORD)
        for n in range(35):
            client.messages.send(pete, f"note {n}")
    context = site.context()
    page = site.sign_in(context, pete)
    page.goto(f"/c/{olga}")
    bubbles = page.locator("#messages .bubble")
    expect(bubbles).to_have_count(30)
    expect(bubbles.first).to_have_text("note 5")
    expect(bubbles.last).to_have_text("note 34")
    older = page.get_by_role("link", name="Load older messages")
    older.focus()
    page.keyboard.press("Enter")
    expect(bubbles).to_have_count(35)
    expect(bubbles.first).to_have_text("note 0")
    expect(bubbles.last).to_have_text("note 34")
    expect(older).to_have_count(0)
    context.close()
