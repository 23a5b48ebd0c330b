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
    (answer.data || []).forEach((item, index) => {
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
    });
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
