// Missive web inbox: progressive enhancement of the server-rendered pages.
// No inline script anywhere (the Content-Security-Policy forbids it); user content is only
// ever inserted with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const me = body.dataset.me || "";
  const openPeer = body.dataset.peer || "";

  function localClock(el) {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      el.title = when.toLocaleString();
    }
  }
  document.querySelectorAll("time.when").forEach(localClock);

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      body: data || new FormData(),
    }).then(function (response) {
      if (response.status === 401) {
        return response.json().then(function (body) {
          window.location.assign(body.location || "/signin?reason=expired");
          throw new Error("signed out");
        });
      }
      return response;
    });
  }

  // -- the open conversation ---------------------------------------------------------------
  const list = document.getElementById("messages");
  const scroller = document.getElementById("scroller");

  function scrollToBottom() {
    if (scroller) scroller.scrollTop = scroller.scrollHeight;
  }

  function hasMessage(id) {
    return list && list.querySelector('li[data-id="' + String(Number(id)) + '"]') !== null;
  }

  function appendMessage(message) {
    if (!list || hasMessage(message.id)) return false;
    const item = document.createElement("li");
    item.className = "message " + (message.sender === me ? "mine" : "theirs");
    item.dataset.id = String(message.id);
    const bubble = document.createElement("p");
    bubble.className = "bubble";
    bubble.textContent = message.content;
    const when = document.createElement("time");
    when.className = "when";
    when.setAttribute("datetime", message.sent_at);
    localClock(when);
    item.append(bubble, when);
    list.append(item);
    const empty = document.getElementById("no-messages");
    if (empty) empty.classList.add("hidden");
    scrollToBottom();
    return true;
  }

  const composer = document.getElementById("composer");
  if (composer) {
    const textarea = composer.querySelector("textarea");
    const problem = document.getElementById("composer-error");
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    composer.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!textarea.value.trim()) return;
      const button = composer.querySelector("button");
      button.disabled = true;
      post(composer.action, new FormData(composer))
        .then(function (response) {
          return response.json().then(function (data) {
            if (response.ok) {
              appendMessage(data.message);
              updateConversation(openPeer, data.message, false);
              textarea.value = "";
              problem.classList.add("hidden");
            } else {
              problem.textContent = data.error || "The message could not be sent.";
              problem.classList.remove("hidden");
            }
          });
        })
        .catch(function () {
          problem.textContent = "The message could not be sent. Check your connection.";
          problem.classList.remove("hidden");
        })
        .finally(function () {
          button.disabled = false;
          textarea.focus();
        });
    });
    scrollToBottom();
  }

  const older = document.getElementById("older");
  if (older) {
    older.addEventListener("click", function (event) {
      event.preventDefault();
      const url = older.dataset.url + "?page_token=" + encodeURIComponent(older.dataset.token);
      fetch(url, { credentials: "same-origin" }).then(function (response) {
        if (!response.ok) return;
        const next = response.headers.get("x-next-page-token") || "";
        return response.text().then(function (html) {
          // Trusted markup: rendered (and escaped) by the server's templates.
          const fragment = document.createRange().createContextualFragment(html);
          const before = scroller.scrollHeight;
          list.prepend(fragment);
          scroller.scrollTop += scroller.scrollHeight - before;
          list.querySelectorAll("time.when").forEach(localClock);
          if (next) older.dataset.token = next;
          else older.parentElement.remove();
        });
      });
    });
  }

  // -- the conversation list and the unread badge ------------------------------------------
  const conversations = document.getElementById("conversations");
  const total = document.getElementById("unread-total");
  const baseTitle = document.title.replace(/^\(\d+\) /, "");

  function setBadge(badge, count) {
    badge.dataset.count = String(count);
    const number = badge.querySelector(".count") || badge;
    number.textContent = String(count);
    badge.classList.toggle("hidden", count === 0);
  }

  function setTotal(count) {
    if (!total) return;
    setBadge(total, count);
    total.parentElement.setAttribute("aria-label", "Inbox, " + count + " unread");
    document.title = (count ? "(" + count + ") " : "") + baseTitle;
    const lead = document.getElementById("lead");
    if (lead) {
      lead.textContent = count
        ? "You have " + count + " unread message" + (count === 1 ? "" : "s") + ". Pick a conversation, or start a new one."
        : "You're all caught up. Pick a conversation, or start a new one.";
    }
  }

  function findConversation(peer) {
    if (!conversations) return null;
    for (const item of conversations.children) {
      if (item.dataset.peer === peer) return item;
    }
    return null;
  }

  function newConversation(peer) {
    const template = document.getElementById("conversation-template");
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.peer = peer;
    item.querySelector("a").href = "/c/" + encodeURIComponent(peer).replace("%40", "@");
    const avatar = item.querySelector(".avatar");
    avatar.textContent = peer.charAt(0).toUpperCase();
    let sum = 0;
    for (let i = 0; i < peer.length; i++) sum += peer.charCodeAt(i);
    avatar.classList.add("hue-" + (sum % 8));  // as the server computes it
    item.querySelector(".peer").textContent = peer;
    const empty = document.getElementById("no-conversations");
    if (empty) empty.classList.add("hidden");
    return item;
  }

  // Returns true when the message is new to this page (newer than what it shows).
  function updateConversation(peer, message, countUnread) {
    if (!conversations) return true;
    let item = findConversation(peer);
    if (item && Number(message.id) <= Number(item.dataset.lastId)) return false;
    if (!item) item = newConversation(peer);
    item.dataset.lastId = String(message.id);
    const preview = item.querySelector(".preview");
    preview.textContent = (message.sender === me ? "You: " : "") + message.content;
    const when = item.querySelector(".when");
    when.setAttribute("datetime", message.sent_at);
    localClock(when);
    if (countUnread) {
      const badge = item.querySelector(".badge.unread");
      setBadge(badge, Number(badge.dataset.count) + 1);
      setTotal(Number(total ? total.dataset.count : 0) + 1);
    }
    conversations.prepend(item);
    return true;
  }

  // -- toasts --------------------------------------------------------------------------------
  const toasts = document.getElementById("toasts");

  function toast(peer, message) {
    if (!toasts) return;
    const link = document.createElement("a");
    link.className = "toast";
    link.href = "/c/" + encodeURIComponent(peer).replace("%40", "@");
    const who = document.createElement("strong");
    who.className = "toast-sender";
    who.textContent = message.sender;
    const text = document.createElement("span");
    text.className = "toast-preview";
    const content = message.content;
    text.textContent = content.length > 120 ? content.slice(0, 119) + "…" : content;
    link.append(who, text);
    toasts.append(link);
    while (toasts.children.length > 4) toasts.firstElementChild.remove();
    setTimeout(function () {
      link.classList.add("leaving");
      setTimeout(function () { link.remove(); }, 400);
    }, 6000);
  }

  // -- the live channel ----------------------------------------------------------------------
  let readTimer = null;
  function markOpenConversationRead() {
    clearTimeout(readTimer);
    readTimer = setTimeout(function () {
      post("/c/" + encodeURIComponent(openPeer).replace("%40", "@") + "/read").catch(function () {});
    }, 300);
  }

  function onMessage(event) {
    const data = JSON.parse(event.data);
    const message = data.message;
    const peer = data.peer;
    if (peer === openPeer) {
      const added = appendMessage(message);
      updateConversation(peer, message, false);
      if (added) markOpenConversationRead();
      return;
    }
    if (updateConversation(peer, message, true)) toast(peer, message);
  }

  if (body.dataset.live === "1" && "EventSource" in window) {
    const source = new EventSource("/events");
    source.addEventListener("message", onMessage);
    source.addEventListener("signed-out", function () {
      source.close();
      window.location.assign("/signin?reason=expired");
    });
    source.addEventListener("open", function () {
      body.classList.remove("offline");
      body.dataset.liveState = "open";
    });
    source.addEventListener("error", function () {
      body.classList.add("offline");
      body.dataset.liveState = "reconnecting";
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
})();
