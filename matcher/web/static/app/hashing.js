// Digital fingerprints (hashes) are worked out in a Web Worker (/hashing/worker.js), so the page
// stays responsive while a big photo is decoded and its many views are hashed. The File is
// handed to the worker inside this browser; what comes back is only hashes.

let worker = null;
let nextId = 0;
const pending = new Map();

function getWorker() {
  if (worker) return worker;
  worker = new Worker("/hashing/worker.js", { type: "module" });
  worker.addEventListener("message", (event) => {
    const msg = event.data || {};
    const job = pending.get(msg.id);
    if (!job) return;
    if (msg.type === "progress") {
      job.onProgress(Number(msg.done) || 0, Number(msg.total) || 0);
    } else if (msg.type === "result") {
      pending.delete(msg.id);
      job.resolve(msg.item);
    } else if (msg.type === "error") {
      pending.delete(msg.id);
      job.reject(new HashingError(msg.kind || "corrupt", msg.message || ""));
    }
  });
  worker.addEventListener("error", (event) => {
    // The worker itself failed (it could not load, say): every job waiting on it fails, and
    // the next photo starts a fresh worker.
    event.preventDefault();
    for (const job of pending.values()) {
      job.reject(new HashingError("failed", ""));
    }
    pending.clear();
    worker.terminate();
    worker = null;
  });
  return worker;
}

/** A photo that could not be fingerprinted; `message` is for the person, in plain words. */
export class HashingError extends Error {
  constructor(kind, message) {
    super(message || plainReason(kind));
    this.kind = kind;
  }
}

function plainReason(kind) {
  switch (kind) {
    case "heic":
      return "This photo is in the iPhone HEIC format, which this browser cannot open. On the iPhone, choose the photo again from the Photos app using this page (it is then shared as JPEG), or set Settings > Camera > Formats to Most Compatible.";
    case "unsupported":
      return "This kind of file cannot be opened here. Please choose a photo (JPEG, PNG, WebP or GIF).";
    case "too_large":
      return "This file is too big to open here.";
    case "too_flat":
      return "This photo is too plain (almost one colour) to recognise copies of it.";
    case "corrupt":
      return "This file could not be read. It may be damaged.";
    default:
      return "This photo could not be read here. Please try again, or try another browser.";
  }
}

/**
 * Fingerprint one file: resolves to the item to enroll, `{kind, hashes: [{signal, hex,
 * quality?}]}`. `onProgress(done, total)` is told as views are hashed.
 */
export function fingerprint(file, onProgress = () => {}, profile = "enroll") {
  nextId += 1;
  const id = nextId;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    try {
      getWorker().postMessage({ id, file, profile });
    } catch (error) {
      pending.delete(id);
      reject(new HashingError("failed", ""));
    }
  });
}

/** Only the fields the server needs: the worker's item may carry more, and nothing else is
 * ever sent. */
export function itemToSend(item, label) {
  const out = {
    kind: item.kind === "video" ? "video" : "image",
    hashes: (item.hashes || []).map((hash) => {
      const h = { signal: String(hash.signal), hex: String(hash.hex) };
      if (hash.quality !== undefined && hash.quality !== null) h.quality = Number(hash.quality);
      return h;
    }),
  };
  if (label) out.label = label;
  return out;
}
