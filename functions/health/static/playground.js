"use strict";
// The playground's core, shared by its panels (each panel is a <section> of the page with a script of its own,
// e.g. playground-images.js): the credential, calls to the API that served this page, the progress of the
// running request (state and elapsed time), server-sent events, and the results list that keeps every answer.
// The key or client token is read from its field when a request is sent and kept nowhere else: no
// localStorage, no cookie, no URL.
(function () {
  const $ = (id) => document.getElementById(id);
  const api = (route) => new URL(route, location.href).toString(); // <base>/v1/playground -> <base>/v1/<route>

  function credential() {
    return $("credential").value.trim();
  }

  function element(tag, properties, ...children) {
    const made = Object.assign(document.createElement(tag), properties || {});
    made.append(...children.filter((child) => child !== null && child !== undefined));
    return made;
  }

  // --- progress: one request at a time; its state and its elapsed time stay on screen ---------------------
  const progress = {
    timer: null,
    started: 0,
    start(label, waiting) {
      this.started = performance.now();
      document.querySelectorAll("button[data-sends]").forEach((button) => (button.disabled = true));
      $("progress").hidden = false;
      $("progress-bar").removeAttribute("value"); // indeterminate until a stream says how far it is
      this.state("waiting", label + ": sent; " + (waiting || "waiting for the answer..."));
      this.tick();
      this.timer = setInterval(() => this.tick(), 100);
    },
    state(state, text) {
      $("progress").dataset.state = state;
      $("status").textContent = text;
    },
    step(done, total) {
      $("progress-bar").max = total;
      $("progress-bar").value = done;
    },
    seconds() {
      return (performance.now() - this.started) / 1000;
    },
    tick() {
      $("elapsed").textContent = this.seconds().toFixed(1) + " s";
    },
    stop(state, text) {
      clearInterval(this.timer);
      this.tick();
      this.state(state, text);
      $("progress-bar").max = 1;
      $("progress-bar").value = state === "done" ? 1 : 0;
      document.querySelectorAll("button[data-sends]").forEach((button) => (button.disabled = false));
    },
  };

  // --- results: every answer is kept, newest first, with its images, links and details ----------------------
  let counter = 0;

  function newResult(label, details) {
    counter += 1;
    const card = element("article", { className: "result running", id: "result-" + counter });
    card.dataset.outcome = "running";
    card.append(
      element("h3", { textContent: "#" + counter + " " + label }),
      element("dl", { className: "details" }),
      element("div", { className: "figures" }),
    );
    $("images").prepend(card);
    addDetails(card, details);
    return card;
  }

  function addDetails(card, details) {
    const list = card.querySelector(".details");
    for (const [name, value] of Object.entries(details || {})) {
      if (value === undefined || value === null || value === "") continue;
      list.append(element("dt", { textContent: name }), element("dd", { textContent: String(value) }));
    }
  }

  // The presigned URL's own expiry (X-Amz-Date + X-Amz-Expires), so the page can say until when it works.
  function linkExpiry(url) {
    try {
      const query = new URL(url).searchParams;
      const date = query.get("X-Amz-Date");
      const seconds = Number(query.get("X-Amz-Expires"));
      if (!date || !seconds) return "";
      const iso = date.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z");
      return new Date(Date.parse(iso) + seconds * 1000).toLocaleTimeString();
    } catch (_) {
      return "";
    }
  }

  function addImage(card, item, index, format) {
    const source = item.url || (item.b64_json ? "data:image/" + format + ";base64," + item.b64_json : "");
    const image = element("img", { alt: "image " + (index + 1) });
    image.dataset.index = String(index);
    const link = element("a", {
      href: source,
      download: "image-" + (index + 1) + "." + format,
      target: "_blank",
      rel: "noopener noreferrer",
      textContent: "Download",
    });
    const size = element("span", { className: "size" });
    const expiry = item.url ? linkExpiry(item.url) : "";
    image.addEventListener("load", () => {
      size.textContent = " " + image.naturalWidth + "x" + image.naturalHeight + " " + format;
    });
    image.src = source;
    const caption = element(
      "figcaption",
      null,
      link,
      size,
      expiry ? element("span", { className: "expiry", textContent: " link valid until " + expiry }) : null,
      item.revised_prompt ? element("p", { className: "revised", textContent: item.revised_prompt }) : null,
    );
    card.querySelector(".figures").append(element("figure", null, image, caption));
  }

  // A partial image replaces the preview shown so far; it goes when the finished images come.
  function showPreview(card, event) {
    let figure = $("preview");
    if (!figure) {
      figure = element("figure", { id: "preview", className: "preview" }, element("img"), element("figcaption"));
      card.querySelector(".figures").append(figure);
    }
    figure.querySelector("img").src = "data:image/" + (event.output_format || "png") + ";base64," + event.b64_json;
    figure.querySelector("figcaption").textContent = "preview " + (event.partial_image_index + 1);
  }

  function finish(card, outcome) {
    card.classList.remove("running");
    card.classList.add(outcome);
    card.dataset.outcome = outcome;
  }

  // Why a request failed, in words: the status, the error's code and message, the field it names, and when
  // to try again (Retry-After).
  function explain(status, body, retryAfter) {
    const error = (body && body.error) || {};
    const lines = [status ? "HTTP " + status + (error.code ? " " + error.code : "") : error.code || "failed"];
    if (error.message) lines.push(error.message);
    if (error.param) lines.push("field: " + error.param);
    if (retryAfter) lines.push("try again in " + retryAfter + " s");
    if (!body || !body.error) lines.push(typeof body === "string" ? body : JSON.stringify(body));
    return lines.join("\n");
  }

  function showError(card, status, body, retryAfter) {
    const text = explain(status, body, retryAfter);
    $("error").textContent = text;
    $("error").hidden = false;
    $("error").dataset.status = String(status);
    if (card) card.append(element("pre", { className: "why", textContent: text }));
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
    delete $("error").dataset.status;
  }

  // Server-sent events over fetch(): "event: <type>" and "data: <json>" lines, blocks split by a blank line.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const lines = block.split("\n");
        const name = (lines.find((l) => l.startsWith("event:")) || "").slice(6).trim();
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue; // a keep-alive comment
        const event = JSON.parse(data);
        if (onEvent(name || event.type || "", event) === false) return;
      }
      if (done) return;
    }
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  // One request: progress while it runs, then a result card (its images, or why it failed). A panel gives
  // the route, the fetch init, a label, the details to show, and for a stream what to do with each event
  // (``onEvent(card, name, event)``, returning a failure body to stop).
  async function send({ route, init, label, details, onEvent, waiting }) {
    clearError();
    const key = credential();
    if (!key) {
      showError(null, 0, { error: { message: "Paste an API key or a client token first.", code: "missing_key" } });
      $("status").textContent = "Nothing sent: no key.";
      return null;
    }
    const card = newResult(label, details);
    progress.start(label, waiting);
    try {
      const response = await fetch(api(route), {
        ...init,
        headers: { ...(init.headers || {}), Authorization: "Bearer " + key },
        credentials: "omit",
        cache: "no-store",
      });
      const requestId = response.headers.get("x-amzn-RequestId");
      const type = response.headers.get("Content-Type") || "";
      if (response.ok && type.startsWith("text/event-stream")) {
        progress.state("streaming", label + ": receiving the stream...");
        let failure = null;
        await readEvents(response, (name, event) => {
          if (name === "error" || event.error) {
            failure = event.error ? event : { error: event };
            return false;
          }
          return onEvent ? onEvent(card, name, event, progress) : true;
        });
        const elapsed = progress.seconds().toFixed(1) + " s";
        addDetails(card, { status: response.status, elapsed: elapsed, "request id": requestId });
        if (failure) {
          finish(card, "failed");
          showError(card, response.status, failure);
          progress.stop("failed", label + " failed after " + elapsed + ".");
          return null;
        }
        const count = card.querySelectorAll(".figures figure:not(.preview)").length;
        finish(card, "done");
        progress.stop("done", label + ": " + plural(count, "image") + " in " + elapsed + ".");
        return card;
      }
      progress.state("receiving", label + ": answered, reading it...");
      const text = await response.text();
      let body = text;
      try {
        body = JSON.parse(text);
      } catch (_) {
        // not JSON: shown as it is
      }
      const elapsed = progress.seconds().toFixed(1) + " s";
      addDetails(card, { status: response.status, elapsed: elapsed, "request id": requestId });
      if (!response.ok) {
        finish(card, "failed");
        showError(card, response.status, body, response.headers.get("Retry-After"));
        progress.stop("failed", label + " failed after " + elapsed + ".");
        return null;
      }
      const format = body.output_format || "png";
      (body.data || []).forEach((item, index) => addImage(card, item, index, format));
      const usage = body.usage || {};
      addDetails(card, {
        answered: [body.size, body.quality, body.output_format].filter(Boolean).join(" "),
        tokens: usage.total_tokens,
      });
      const count = (body.data || []).length;
      finish(card, "done");
      progress.stop("done", label + ": " + plural(count, "image") + " in " + elapsed + ".");
      return body;
    } catch (error) {
      finish(card, "failed");
      showError(card, 0, {
        error: {
          message: "The request did not complete: " + error + " (the API could not be reached, or the browser refused it).",
          code: "network_error",
        },
      });
      progress.stop("failed", label + " failed after " + progress.seconds().toFixed(1) + " s.");
      return null;
    }
  }

  // What the panels use. A new panel is a <section> in playground.html and a script that calls these.
  window.playground = { $, api, element, credential, send, addImage, showPreview, addDetails, plural };
})();
