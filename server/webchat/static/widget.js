// convhub web chat widget: no build step, no dependencies.
// Opens a visitor session with the page's public widget key, keeps the visitor token in
// localStorage (a reload or a later visit keeps the conversation), posts messages and
// renders the conversation's message stream (server-sent events, resumed by event id).
"use strict";
(() => {
  const root = document.getElementById("convhub-webchat");
  const widgetKey = root.dataset.widgetKey;
  const storageKey = "convhub.webchat." + root.dataset.accountId;
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const statusLine = document.getElementById("chat-status");
  const errorLine = document.getElementById("chat-error");
  const shown = new Set();
  let token = null;
  let conversationId = null;
  let source = null;
  let lastEventId = "";
  let refreshTimer = null;

  const showError = (text) => {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  };

  const render = (message) => {
    if (shown.has(message.id)) return;
    shown.add(message.id);
    const item = document.createElement("li");
    item.className = "msg " + (message.sender === "visitor" ? "visitor" : "agent");
    item.dataset.messageId = message.id;
    item.textContent = message.text;
    // In time order: a first message that joins a conversation with history is shown before its replay arrives.
    const at = Date.parse(message.tm_create) || 0;
    item.dataset.at = String(at);
    const later = Array.from(log.children).find((other) => Number(other.dataset.at) > at);
    log.insertBefore(item, later || null);
    log.scrollTop = log.scrollHeight;
  };

  const adopt = (session) => {
    if (session.conversation_id !== conversationId) {
      conversationId = session.conversation_id;
      lastEventId = ""; // another conversation: replay it from its start
    }
    token = session.visitor_token;
    root.dataset.conversationId = conversationId;
    // The visitor's id (their address is webchat:<id>), for the embedding site to tell support who this is.
    root.dataset.visitorId = session.visitor_id;
    // Embedded in a site's <iframe>: tell the site too (ids only, never the token; they grant nothing alone).
    if (window.parent !== window) {
      const note = { type: "convhub.webchat.session", visitor_id: session.visitor_id, conversation_id: conversationId };
      window.parent.postMessage(note, "*");
    }
    localStorage.setItem(storageKey, token);
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => openSession().then(connect, retryLater), (session.expires_in * 1000) / 2);
  };

  const openSession = async () => {
    const body = { widget_key: widgetKey };
    const saved = localStorage.getItem(storageKey);
    if (saved) body.visitor_token = saved;
    const response = await fetch("/v1.0/webchat/sessions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error("could not open the chat (" + response.status + ")");
    adopt(await response.json());
  };

  const connect = () => {
    if (source) source.close();
    let url = "/v1.0/webchat/events?visitor_token=" + encodeURIComponent(token);
    if (lastEventId) url += "&after=" + encodeURIComponent(lastEventId);
    source = new EventSource(url);
    source.addEventListener("message", (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      render(JSON.parse(event.data));
    });
    source.onopen = () => {
      statusLine.textContent = "online";
      root.dataset.ready = "true";
    };
    source.onerror = () => {
      statusLine.textContent = "reconnecting…";
      // CLOSED: the server refused the stream (an expired token): open a new session, then resume.
      if (source.readyState === EventSource.CLOSED) retryLater();
    };
  };

  const retryLater = () => setTimeout(() => openSession().then(connect, retryLater), 2000);

  const post = async (text) => {
    const send = () =>
      fetch("/v1.0/webchat/messages", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer " + token },
        body: JSON.stringify({ text }),
      });
    let response = await send();
    if (response.status === 401) {
      await openSession();
      connect();
      response = await send();
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : "not sent (" + response.status + ")");
    if (body.visitor_token) {
      adopt(body);
      connect();
    }
    render(body.message);
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    showError("");
    post(text).catch((error) => {
      input.value = text;
      showError(error.message);
    });
  });

  openSession().then(connect, (error) => {
    showError(error.message);
    retryLater();
  });
})();
