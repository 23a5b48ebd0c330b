"use strict";
// The playground's conversation panel: POST /v1/responses with the image_generation tool. Each turn after the
// first is sent with the previous response's id, so the text model sees (and can edit) its earlier images; the
// conversation is kept by the service, this page keeps only the last id. The key or client token is read from
// the page's credential field when a turn is sent, as the rest of the playground does.
(function () {
  const api = (route) => new URL(route, location.href).toString();
  const el = (tag, props, ...children) => {
    const node = Object.assign(document.createElement(tag), props || {});
    node.append(...children);
    return node;
  };
  let previousId = null;

  const log = el("div", { id: "conversation-log" });
  const input = el("textarea", { id: "conversation-input", rows: 2, maxLength: 32000, required: true });
  const model = el("input", { id: "conversation-model", value: "gpt-5", spellcheck: false });
  const size = el("select", { id: "conversation-size" });
  ["1024x1024", "1536x1024", "1024x1536", "auto"].forEach((s) => size.append(el("option", { textContent: s })));
  const stream = el("input", { id: "conversation-stream", type: "checkbox", checked: true });
  const send = el("button", { id: "conversation-send", type: "submit", textContent: "Send" });
  const reset = el("button", { id: "conversation-new", type: "button", textContent: "New conversation" });
  const state = el("p", { id: "conversation-status", role: "status", textContent: "A new conversation." });
  const form = el(
    "form",
    { id: "conversation-form" },
    el("label", {}, "Message ", input),
    el(
      "div",
      { className: "row" },
      el("label", {}, "Text model ", model),
      el("label", {}, "Size ", size),
      el("label", { className: "inline" }, stream, " Stream, with previews"),
    ),
    el("div", { className: "row" }, send, reset),
  );
  const panel = el(
    "section",
    { id: "conversation", className: "panel" },
    el("h2", { textContent: "Conversation (POST /v1/responses)" }),
    log,
    form,
    state,
  );

  function credential() {
    const field = document.getElementById("credential");
    return field ? field.value.trim() : "";
  }

  function turn(role) {
    const box = el("div", { className: "turn " + role });
    box.dataset.role = role;
    log.append(box);
    return box;
  }

  function image(box, url, caption, id) {
    let figure = id ? box.querySelector('figure[data-call="' + id + '"]') : null;
    if (!figure) {
      figure = el("figure", {}, el("img", { alt: caption }), el("figcaption"));
      if (id) figure.dataset.call = id;
      box.append(figure);
    }
    figure.querySelector("img").src = url;
    figure.querySelector("figcaption").textContent = caption;
    return figure;
  }

  function source(item, b64, format) {
    return item.url || (b64 ? "data:image/" + (format || "png") + ";base64," + b64 : "");
  }

  function showAnswer(box, response) {
    box.querySelectorAll("figure.preview").forEach((f) => f.classList.remove("preview"));
    (response.output || []).forEach((item) => {
      if (item.type === "image_generation_call") {
        image(box, source(item, item.result, item.output_format), "image " + (item.size || ""), item.id);
      } else if (item.type === "message") {
        const text = (item.content || []).map((part) => part.text || "").join("");
        let p = box.querySelector("p.text");
        if (!p) box.prepend((p = el("p", { className: "text" })));
        p.textContent = text;
      }
    });
  }

  function failed(box, status, body) {
    const error = (body && body.error) || {};
    box.append(el("pre", { className: "error", textContent: "HTTP " + status + " " + (error.code || "") + "\n" + (error.message || "") }));
  }

  async function readEvents(response, box) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    let final = null;
    while (!done) {
      const chunk = await reader.read();
      done = chunk.done;
      buffer += decoder.decode(chunk.value || new Uint8Array(), { stream: !done });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const lines = buffer.slice(0, end).split("\n");
        buffer = buffer.slice(end + 2);
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        const event = JSON.parse(data);
        if (event.error) {
          failed(box, response.status, event);
        } else if (event.type === "response.image_generation_call.partial_image") {
          const url = source(event, event.partial_image_b64, event.output_format);
          image(box, url, "preview " + (event.partial_image_index + 1), event.item_id).classList.add("preview");
        } else if (event.type === "response.output_text.delta") {
          let p = box.querySelector("p.text");
          if (!p) box.prepend((p = el("p", { className: "text" })));
          p.textContent += event.delta;
        } else if (event.type === "response.output_item.done" && event.item.type === "image_generation_call") {
          showAnswer(box, { output: [event.item] });
        } else if (event.type === "response.completed") {
          final = event.response;
        }
      }
    }
    return final;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = credential();
    if (!key) {
      state.textContent = "Paste an API key or a client token first.";
      return;
    }
    const text = input.value;
    turn("user").append(el("p", { className: "text", textContent: text }));
    const box = turn("assistant");
    const body = {
      model: model.value.trim(),
      input: text,
      tools: [{ type: "image_generation", size: size.value, ...(stream.checked ? { partial_images: 2 } : {}) }],
    };
    if (previousId) body.previous_response_id = previousId;
    if (stream.checked) body.stream = true;
    send.disabled = true;
    state.textContent = "Waiting for the answer...";
    const started = performance.now();
    try {
      const response = await fetch(api("responses"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
      let final = null;
      if (response.ok && (response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        final = await readEvents(response, box);
      } else {
        const answer = await response.json().catch(() => ({}));
        if (response.ok) final = answer;
        else failed(box, response.status, answer);
      }
      if (final) {
        showAnswer(box, final);
        previousId = final.id;
        box.dataset.responseId = final.id;
        input.value = "";
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      state.textContent = final ? "Answered in " + seconds + " s; the next message continues it." : "Failed.";
    } catch (error) {
      failed(box, 0, { error: { message: String(error), code: "network_error" } });
      state.textContent = "Failed.";
    } finally {
      send.disabled = false;
    }
  });

  reset.addEventListener("click", () => {
    previousId = null;
    log.replaceChildren();
    state.textContent = "A new conversation.";
  });

  const main = document.querySelector("main") || document.body;
  main.append(panel);
})();
