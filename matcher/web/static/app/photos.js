// Choosing photos (file picker, drag and drop, a phone's camera roll) and fingerprinting them
// one after another in the worker, with a progress bar for each. Thumbnails are object URLs of
// the person's own files: they live in this tab's memory and are never sent anywhere.

import { fingerprint, HashingError } from "./hashing.js";
import { announce, h, plural, uid } from "./ui.js";

/** Object URLs made on this page, revoked when the page is left or the photo withdrawn. */
const urls = new Set();

export function thumbnailUrl(file) {
  const url = URL.createObjectURL(file);
  urls.add(url);
  return url;
}

export function revoke(url) {
  if (url && urls.has(url)) {
    URL.revokeObjectURL(url);
    urls.delete(url);
  }
}

export function revokeAll() {
  for (const url of urls) URL.revokeObjectURL(url);
  urls.clear();
}

/** A thumbnail: the local picture if there is one (and the browser can show it), else a
 * neutral tile with the photo's number. */
export function thumb(url, text) {
  const tile = h("div", { class: "thumb", "aria-hidden": "true" }, h("span", {}, text));
  if (url) {
    const img = h("img", { src: url, alt: "", decoding: "async", loading: "lazy" });
    img.addEventListener("error", () => img.remove());
    tile.prepend(img);
  }
  return tile;
}

/**
 * The photo chooser. `onReady(file, item, url, row, context)` is awaited for each photo once
 * fingerprinted (the practitioner's page enrolls it then; self-service collects it); it may call
 * `row.done(text)` or `row.fail(text)`. `context` is what `onChoose()` returned when the photos
 * were chosen. Returns {element, busy()}.
 */
export function photoPicker({ onReady, onChoose = () => null, intro, buttonText = "Choose photos" }) {
  const inputId = uid("photos");
  const input = h("input", {
    id: inputId,
    type: "file",
    accept: "image/*",
    multiple: true,
    class: "file-input",
  });
  const list = h("ul", { class: "photo-list", "aria-label": "Photos chosen" });
  const overall = h("p", { class: "overall", hidden: true });
  let queue = Promise.resolve();
  let running = 0;

  const zone = h(
    "div",
    { class: "drop-zone" },
    h("p", { class: "drop-text" }, intro),
    input,
    h("label", { for: inputId, class: "button primary" }, buttonText),
    h("p", { class: "hint" }, "On a phone you can pick from your camera roll. On a computer you can also drag photos here."),
  );

  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) add(files);
  });
  input.addEventListener("change", () => {
    const files = [...(input.files || [])];
    // Cleared, so choosing the same photo again is noticed.
    input.value = "";
    if (files.length) add(files);
  });

  function add(files) {
    const total = files.length;
    announce(`${plural(total, "photo", "photos")} chosen. Working out their digital fingerprints on this device.`);
    // What the form said when these photos were chosen (the practitioner's note), so typing
    // a new note while they are still being worked on does not relabel them.
    const context = onChoose();
    files.forEach((file, index) => {
      const row = makeRow(file);
      list.append(row.element);
      queue = queue.then(() => run(file, row, index + 1, total, context));
    });
  }

  async function run(file, row, position, total, context) {
    running += 1;
    overall.hidden = false;
    overall.textContent = `Photo ${position} of ${total}`;
    row.working();
    try {
      const item = await fingerprint(file, (done, all) => row.progress(done, all));
      await onReady(file, item, row.url, row, context);
    } catch (error) {
      row.fail(error instanceof HashingError ? error.message : error.message || "This photo could not be added.");
    } finally {
      running -= 1;
      if (position === total) {
        overall.textContent = `Done: ${plural(total, "photo", "photos")} looked at.`;
        announce(overall.textContent);
      }
    }
  }

  return {
    element: h("div", { class: "picker" }, zone, overall, list),
    busy: () => running > 0,
  };
}

function makeRow(file) {
  const url = thumbnailUrl(file);
  const progressId = uid("progress");
  const bar = h("progress", { id: progressId, max: 1, value: 0 });
  const text = h("p", { class: "row-status" }, "Waiting…");
  const barLabel = h("label", { for: progressId, class: "visually-hidden" }, `Progress for ${file.name}`);
  const element = h(
    "li",
    { class: "photo-row" },
    thumb(url, ""),
    h("div", { class: "row-body" }, h("p", { class: "row-name" }, file.name), barLabel, bar, text),
  );
  return {
    url,
    element,
    working() {
      text.textContent = "Working out its digital fingerprint…";
    },
    progress(done, total) {
      if (total > 0) {
        bar.max = total;
        bar.value = done;
      }
    },
    done(message) {
      bar.max = 1;
      bar.value = 1;
      bar.hidden = true;
      barLabel.hidden = true;
      text.textContent = message;
      element.classList.add("ok");
    },
    fail(message) {
      bar.hidden = true;
      barLabel.hidden = true;
      text.textContent = message;
      element.classList.add("failed");
      announce(`${file.name}: ${message}`);
    },
  };
}
