"use strict";
// The playground's image panels: Generate (JSON, optionally streamed with previews) and Edit (multipart: 1 to
// 16 images and an optional mask). Sizes: every preset of the contract, auto, or a custom WxH checked here
// with the contract's rules before anything is sent (the API checks them again).
(function () {
  const { $, send, addImage, showPreview, plural } = window.playground;
  const MAX_EDGE = 3840;
  const EDGE_MULTIPLE = 16;
  const MAX_RATIO = 3;
  const MIN_PIXELS = 655360;
  const MAX_PIXELS = 8294400;
  const MAX_IMAGES = 16;
  const LONG_PIXELS = 2560 * 1440; // larger sizes are slow: up to 5 minutes

  // Why a WxH is not a size the contract allows ("" when it is).
  function sizeProblem(width, height) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      return "give a width and a height in pixels";
    }
    if (width > MAX_EDGE || height > MAX_EDGE) return "each edge is at most " + MAX_EDGE + " px";
    if (width % EDGE_MULTIPLE || height % EDGE_MULTIPLE) return "each edge is a multiple of " + EDGE_MULTIPLE + " px";
    if (Math.max(width, height) > MAX_RATIO * Math.min(width, height)) return "the long edge is at most 3 times the short one";
    const pixels = width * height;
    if (pixels < MIN_PIXELS || pixels > MAX_PIXELS) {
      return "the image has " + MIN_PIXELS.toLocaleString() + " to " + MAX_PIXELS.toLocaleString() + " pixels (this one " + pixels.toLocaleString() + ")";
    }
    return "";
  }

  // The size a form asks for: a preset, auto, or its custom width and height (checked: null when invalid).
  function chosenSize(prefix) {
    const choice = $(prefix + "size").value;
    const note = $(prefix + "size-note");
    if (choice !== "custom") {
      note.textContent = slowNote(choice);
      note.classList.remove("invalid");
      return choice;
    }
    const width = Number($(prefix + "width").value);
    const height = Number($(prefix + "height").value);
    const problem = sizeProblem(width, height);
    note.textContent = problem ? "Not a valid size: " + problem + "." : slowNote(width + "x" + height);
    note.classList.toggle("invalid", Boolean(problem));
    return problem ? null : width + "x" + height;
  }

  function slowNote(size) {
    const match = /^(\d+)x(\d+)$/.exec(size);
    return match && Number(match[1]) * Number(match[2]) > LONG_PIXELS ? "A large size: it may take up to 5 minutes." : "";
  }

  function watchSize(prefix) {
    const update = () => {
      $(prefix + "custom").hidden = $(prefix + "size").value !== "custom";
      chosenSize(prefix);
    };
    [prefix + "size", prefix + "width", prefix + "height"].forEach((id) => $(id).addEventListener("input", update));
    $(prefix + "size").addEventListener("change", update);
    update();
  }

  function waitingText(size, streamed) {
    const slow = slowNote(size) ? " Large sizes take minutes." : "";
    return streamed
      ? "waiting for the first preview..." + slow
      : "the image is drawn in one piece, nothing shows until it is done (usually 20 to 90 s)." + slow;
  }

  // Each finished image of a stream joins its card; each preview shows, with how far the stream is.
  function streamHandler(previews, count) {
    let finished = 0;
    return (card, name, event, progress) => {
      if (name.endsWith(".partial_image")) {
        showPreview(card, event);
        progress.step(event.partial_image_index + 1, previews + 1);
        progress.state("streaming", "Preview " + (event.partial_image_index + 1) + " of " + previews + " received...");
      } else if (name.endsWith(".completed")) {
        if ($("preview")) $("preview").remove();
        addImage(card, event, finished, event.output_format || "png");
        finished += 1;
        progress.step(previews + 1, previews + 1);
        progress.state("streaming", plural(finished, "image") + " of " + count + " received...");
      }
      return true;
    };
  }

  watchSize("");
  watchSize("edit-");

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const size = chosenSize("");
    if (!size) return;
    const body = {
      prompt: $("prompt").value,
      size: size,
      quality: $("quality").value,
      output_format: $("output_format").value,
      n: Number($("n").value),
    };
    const streamed = $("stream").checked;
    if (streamed) {
      body.stream = true;
      body.partial_images = Number($("partial_images").value);
    }
    send({
      route: "images/generations",
      init: { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) },
      label: "Generate",
      details: {
        prompt: body.prompt.length > 80 ? body.prompt.slice(0, 80) + "..." : body.prompt,
        asked: [size, body.quality, body.output_format, "n=" + body.n, streamed ? "streamed" : ""].join(" ").trim(),
      },
      waiting: waitingText(size, streamed),
      onEvent: streamed ? streamHandler(body.partial_images, body.n) : undefined,
    });
  });

  // The files chosen for an edit: at most 16 images, listed by name and size.
  function editImages() {
    return Array.from($("edit-image").files);
  }

  function showChosen() {
    const files = editImages();
    const note = $("edit-image-note");
    note.classList.toggle("invalid", files.length > MAX_IMAGES);
    note.textContent = files.length > MAX_IMAGES
      ? plural(files.length, "image") + " chosen: an edit takes at most " + MAX_IMAGES + "."
      : files.map((file) => file.name + " (" + Math.ceil(file.size / 1024) + " KB)").join(", ");
  }

  $("edit-image").addEventListener("change", showChosen);

  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const size = chosenSize("edit-");
    const files = editImages();
    if (!size || !files.length || files.length > MAX_IMAGES) {
      showChosen();
      return;
    }
    const form = new FormData();
    form.append("prompt", $("edit-prompt").value);
    files.forEach((file) => form.append(files.length === 1 ? "image" : "image[]", file));
    const mask = $("edit-mask").files[0];
    if (mask) form.append("mask", mask);
    form.append("size", size);
    form.append("quality", $("edit-quality").value);
    form.append("output_format", $("edit-output_format").value);
    form.append("n", $("edit-n").value);
    send({
      route: "images/edits",
      init: { method: "POST", body: form },
      label: "Edit",
      details: {
        prompt: $("edit-prompt").value.slice(0, 80),
        inputs: plural(files.length, "image") + (mask ? " and a mask" : ""),
        asked: [size, $("edit-quality").value, $("edit-output_format").value, "n=" + $("edit-n").value].join(" "),
      },
      waiting: waitingText(size, false),
    });
  });
})();
