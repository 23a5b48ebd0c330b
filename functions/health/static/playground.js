"use strict";
// The playground: plain fetch() calls to the API that served this page. The key or client token is read from
// its field when a request is sent and kept nowhere else: no localStorage, no cookie, no URL.
(function () {
  const api = (route) => new URL(route, location.href).toString(); // <base>/v1/playground -> <base>/v1/<route>
  const $ = (id) => document.getElementById(id);

  function credential() {
    return $("credential").value.trim();
  }

  function setBusy(busy, text) {
    $("generate").disabled = busy;
    $("edit").disabled = busy;
    $("status").textContent = text;
  }

  function showError(status, body) {
    const error = (body && body.error) || {};
    const lines = ["HTTP " + status + (error.code ? " " + error.code : "")];
    if (error.message) lines.push(error.message);
    if (!body || !body.error) lines.push(typeof body === "string" ? body : JSON.stringify(body));
    $("error").textContent = lines.join("\n");
    $("error").hidden = false;
    $("error").dataset.status = String(status);
  }

  function clearResult() {
    $("error").hidden = true;
    $("error").textContent = "";
    delete $("error").dataset.status;
    $("images").replaceChildren();
  }

  function showImages(answer) {
    const format = answer.output_format || "png";
    (answer.data || []).forEach((item, index) => showImage(item, index, format));
  }

  function showImage(item, index, format) {
    const source = item.url || (item.b64_json ? "data:image/" + format + ";base64," + item.b64_json : "");
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.alt = "image " + (index + 1);
    image.dataset.index = String(index);
    const caption = document.createElement("figcaption");
    const link = document.createElement("a");
    link.href = source;
    link.download = "image-" + (index + 1) + "." + format;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = "Download";
    const size = document.createElement("span");
    image.addEventListener("load", () => {
      size.textContent = " " + image.naturalWidth + "x" + image.naturalHeight + " " + format;
    });
    image.src = source;
    caption.append(link, size);
    figure.append(image, caption);
    $("images").append(figure);
  }

  // A partial image replaces the preview shown so far; it goes when the finished images come.
  function showPreview(event) {
    let figure = $("preview");
    if (!figure) {
      figure = document.createElement("figure");
      figure.id = "preview";
      figure.className = "preview";
      figure.append(document.createElement("img"), document.createElement("figcaption"));
      $("images").append(figure);
    }
    figure.querySelector("img").src = "data:image/" + (event.output_format || "png") + ";base64," + event.b64_json;
    figure.querySelector("figcaption").textContent = "preview " + (event.partial_image_index + 1);
  }

  // Server-sent events over fetch(): "event: <type>" and "data: <json>" lines, blocks split by a blank line.
  async function readEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = 0;
    let failure = null;
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
        if (name === "error" || event.error) {
          failure = event.error ? event : { error: event };
        } else if (name.endsWith(".partial_image")) {
          showPreview(event);
        } else if (name.endsWith(".completed")) {
          if ($("preview")) $("preview").remove();
          showImage(event, finished, event.output_format || "png");
          finished += 1;
        }
      }
      if (done) break;
    }
    return { finished, failure };
  }

  async function call(route, init, label) {
    clearResult();
    const key = credential();
    if (!key) {
      showError(0, { error: { message: "Paste an API key or a client token first.", code: "missing_key" } });
      return;
    }
    setBusy(true, label + "...");
    const started = performance.now();
    try {
      const response = await fetch(api(route), {
        ...init,
        headers: { ...(init.headers || {}), Authorization: "Bearer " + key },
        credentials: "omit",
        cache: "no-store",
      });
      const type = response.headers.get("Content-Type") || "";
      if (response.ok && type.startsWith("text/event-stream")) {
        const { finished, failure } = await readEvents(response);
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        if (failure) {
          showError(response.status, failure);
          setBusy(false, label + " failed after " + seconds + " s.");
          return;
        }
        setBusy(false, label + ": " + finished + " image" + (finished === 1 ? "" : "s") + " in " + seconds + " s.");
        return;
      }
      const text = await response.text();
      let body = text;
      try {
        body = JSON.parse(text);
      } catch (_) {
        // not JSON: shown as it is
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      if (!response.ok) {
        showError(response.status, body);
        setBusy(false, label + " failed after " + seconds + " s.");
        return;
      }
      showImages(body);
      const count = (body.data || []).length;
      setBusy(false, label + ": " + count + " image" + (count === 1 ? "" : "s") + " in " + seconds + " s.");
    } catch (error) {
      showError(0, { error: { message: "The request did not complete: " + error, code: "network_error" } });
      setBusy(false, label + " failed.");
    }
  }

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {
      prompt: $("prompt").value,
      size: $("size").value,
      quality: $("quality").value,
      output_format: $("output_format").value,
      n: Number($("n").value),
    };
    if ($("stream").checked) {
      body.stream = true;
      body.partial_images = Number($("partial_images").value);
    }
    call("images/generations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }, "Generate");
  });

  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("prompt", $("edit-prompt").value);
    form.append("image[]", $("edit-image").files[0]);
    if ($("edit-mask").files.length) form.append("mask", $("edit-mask").files[0]);
    form.append("size", $("edit-size").value);
    form.append("output_format", $("edit-output_format").value);
    form.append("n", $("edit-n").value);
    call("images/edits", { method: "POST", body: form }, "Edit");
  });
})();
