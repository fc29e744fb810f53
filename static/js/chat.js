// The chat page: sends through the JSON API, follows answers over SSE (resuming after a
// reload from the first event, so nothing is missed or repeated), stops them, and swaps in
// the server-rendered, sanitised answer when it ends. Token text is only ever inserted as
// text, never as HTML.

(function () {
  "use strict";

  var messages = document.getElementById("messages");
  var composer = document.getElementById("composer");
  if (!messages || !composer) {
    return;
  }
  var conversationId = composer.dataset.conversationId;
  var textarea = document.getElementById("content");
  var sendButton = document.getElementById("send");
  var stopButton = document.getElementById("stop");
  var errorBox = document.getElementById("composer-error");
  var promptSelect = document.getElementById("prompt");
  var active = new Map(); // message id -> EventSource

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function api(method, path, body) {
    return fetch(path, {
      method: method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function errorText(response) {
    try {
      var body = await response.json();
      if (body && body.error && body.error.message) {
        return body.error.message;
      }
    } catch (ignored) {
      // Not JSON.
    }
    return "Request failed (" + response.status + ").";
  }

  function updateStop() {
    stopButton.hidden = active.size === 0;
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function addUserMessage(text) {
    var hint = messages.querySelector(".empty-hint");
    if (hint) {
      hint.remove();
    }
    var article = element("article", "message message-user");
    article.setAttribute("aria-label", "Your message");
    var meta = element("header", "message-meta");
    meta.appendChild(element("span", "font-semibold", "You"));
    article.appendChild(meta);
    article.appendChild(element("div", "message-body whitespace-pre-wrap", text));
    messages.appendChild(article);
    return article;
  }

  function addAnswer(messageId) {
    var article = element("article", "message message-assistant");
    article.id = "message-" + messageId;
    article.dataset.messageId = String(messageId);
    article.dataset.conversationId = conversationId;
    article.setAttribute("aria-label", "Answer");
    var meta = element("header", "message-meta");
    meta.appendChild(element("span", "font-semibold", "Assistant"));
    article.appendChild(meta);
    article.appendChild(element("ul", "tool-calls live-calls"));
    var body = element("div", "message-body stream-text whitespace-pre-wrap");
    body.setAttribute("aria-live", "polite");
    body.setAttribute("aria-busy", "true");
    article.appendChild(body);
    var thinking = element("p", "thinking", "Thinking…");
    thinking.dataset.thinking = "";
    article.appendChild(thinking);
    messages.appendChild(article);
    return article;
  }

  async function swapFinal(article, messageId) {
    var response = await fetch("/c/" + conversationId + "/m/" + messageId, { credentials: "same-origin" });
    if (!response.ok) {
      return;
    }
    var holder = document.createElement("div");
    holder.innerHTML = await response.text(); // server-rendered and sanitised
    var fresh = holder.firstElementChild;
    if (fresh) {
      article.replaceWith(fresh);
    }
  }

  // Follows one answer from its first event: the page shows nothing of it yet, so a
  // reload starts over and replays every token once.
  function follow(article) {
    var messageId = article.dataset.messageId;
    if (active.has(messageId)) {
      return;
    }
    var body = article.querySelector(".stream-text");
    var thinking = article.querySelector("[data-thinking]");
    var calls = article.querySelector(".live-calls");
    body.textContent = "";
    calls.textContent = "";
    var url = "/api/v1/conversations/" + conversationId + "/messages/" + messageId + "/events";
    var source = new EventSource(url);
    active.set(messageId, source);
    updateStop();

    function firstText() {
      if (thinking) {
        thinking.remove();
        thinking = null;
      }
    }
    source.addEventListener("token", function (event) {
      firstText();
      body.textContent += JSON.parse(event.data).text;
    });
    source.addEventListener("snapshot", function (event) {
      firstText();
      body.textContent = JSON.parse(event.data).content;
    });
    source.addEventListener("error", function (event) {
      if (!event.data) {
        return; // a connection hiccup: EventSource reconnects with Last-Event-ID itself
      }
      firstText();
      var note = element("p", "message-error", JSON.parse(event.data).message);
      note.setAttribute("role", "alert");
      article.appendChild(note);
    });
    source.addEventListener("notice", function (event) {
      var note = element("p", "notice-line", JSON.parse(event.data).message);
      note.setAttribute("role", "status");
      article.insertBefore(note, calls);
    });
    source.addEventListener("tool_call", function (event) {
      var call = JSON.parse(event.data);
      var item = element("li", "tool-call");
      item.id = "call-" + messageId + "-" + call.call_id;
      item.dataset.status = call.writes ? "pending" : "running";
      var details = element("details");
      var summary = element("summary");
      summary.appendChild(element("span", "tool-name", call.name));
      summary.appendChild(document.createTextNode(" "));
      summary.appendChild(element("span", "tool-status", call.writes ? "waiting for approval" : "running…"));
      details.appendChild(summary);
      details.appendChild(element("p", "tool-label", "Arguments"));
      details.appendChild(element("pre", "tool-data", JSON.stringify(call.arguments, null, 2)));
      item.appendChild(details);
      calls.appendChild(item);
    });
    source.addEventListener("approval_required", function (event) {
      var call = JSON.parse(event.data);
      var item = document.getElementById("call-" + messageId + "-" + call.call_id);
      if (!item) {
        return;
      }
      var card = element("div", "approval");
      card.setAttribute("role", "group");
      card.setAttribute("aria-label", "Approve " + call.name);
      card.appendChild(element("p", "mb-2", "The assistant wants to run " + call.name + ", which changes something. Nothing is written until you approve."));
      var approve = element("button", "btn btn-primary mr-2", "Approve");
      var refuse = element("button", "btn", "Refuse");
      approve.type = "button";
      refuse.type = "button";
      function decide(yes) {
        approve.disabled = true;
        refuse.disabled = true;
        var path = "/api/v1/conversations/" + conversationId + "/messages/" + messageId + "/approvals/" + encodeURIComponent(call.call_id);
        api("POST", path, { approve: yes }).then(function (response) {
          if (response.ok || response.status === 409) {
            card.remove();
          } else {
            approve.disabled = false;
            refuse.disabled = false;
          }
        });
      }
      approve.addEventListener("click", function () { decide(true); });
      refuse.addEventListener("click", function () { decide(false); });
      card.appendChild(approve);
      card.appendChild(refuse);
      item.appendChild(card);
    });
    source.addEventListener("tool_result", function (event) {
      var result = JSON.parse(event.data);
      var item = document.getElementById("call-" + messageId + "-" + result.call_id);
      if (!item) {
        return;
      }
      item.dataset.status = result.status;
      var card = item.querySelector(".approval");
      if (card) {
        card.remove();
      }
      item.querySelector(".tool-status").textContent = result.status;
      var details = item.querySelector("details");
      details.appendChild(element("p", "tool-label", "Result"));
      details.appendChild(element("pre", "tool-data", result.content));
    });
    source.addEventListener("done", function () {
      source.close();
      active.delete(messageId);
      updateStop();
      swapFinal(article, messageId);
    });
  }

  async function send() {
    var content = textarea.value;
    var prompt = promptSelect ? promptSelect.value : "";
    var variables = {};
    if (prompt) {
      var fieldset = composer.querySelector('fieldset[data-prompt="' + CSS.escape(prompt) + '"]');
      fieldset.querySelectorAll("[data-variable]").forEach(function (input) {
        variables[input.dataset.variable] = input.value;
      });
    }
    if (!content.trim() && !prompt) {
      showError("Write a message or pick a prompt.");
      return;
    }
    showError("");
    sendButton.disabled = true;
    try {
      var response = await api("POST", "/api/v1/conversations/" + conversationId + "/messages", {
        content: content,
        prompt: prompt || null,
        variables: variables,
      });
      if (!response.ok) {
        showError(await errorText(response));
        return;
      }
      var sent = await response.json();
      addUserMessage(prompt ? "[" + promptSelect.options[promptSelect.selectedIndex].text + "] " + content : content);
      textarea.value = "";
      var article = addAnswer(sent.message_id);
      follow(article);
      article.scrollIntoView({ block: "end" });
    } catch (failure) {
      showError("The server cannot be reached. Check your connection and try again.");
    } finally {
      sendButton.disabled = false;
      textarea.focus();
    }
  }

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });

  stopButton.addEventListener("click", function () {
    active.forEach(function (source, messageId) {
      api("POST", "/api/v1/conversations/" + conversationId + "/messages/" + messageId + "/cancel");
    });
  });

  if (promptSelect) {
    promptSelect.addEventListener("change", function () {
      composer.querySelectorAll("fieldset[data-prompt]").forEach(function (fieldset) {
        var chosen = fieldset.dataset.prompt === promptSelect.value;
        fieldset.hidden = !chosen;
        fieldset.disabled = !chosen;
      });
    });
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });

  messages.querySelectorAll("article[data-streaming]").forEach(follow);
})();
