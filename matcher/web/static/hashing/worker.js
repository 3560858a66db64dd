// The hashing Web Worker: the page hands it a File, it hands back hashes only. The picture
// never leaves this worker, and nothing here touches the network.
//
//   new Worker("/hashing/worker.js", {type: "module"})
//   post    {id, file: File|Blob, profile: "enroll"|"plain", views?: true}
//   answers {id, type: "progress", done, total}            (views hashed so far, or bytes read)
//           {id, type: "result", item: {kind: "image"|"video", hashes: [{signal, hex,
//            quality?, view?}], flat?: true}, views?: [...], thumbnailless: true}
//           {id, type: "error", kind: "unsupported"|"heic"|"corrupt"|"too_large", message}
//
// A picture gives its enroll-profile PDQ views (or, with "plain", its one PDQ hash), its pHash
// (bit for bit the Python library's on the same pixels), MD5 and SHA-256 of the file; a video gives MD5 and SHA-256, read in chunks. As matcher's Python
// enrollment does, PDQ hashes below the quality floor are left out: a flat picture (a sky, a
// wall; `flat: true`) is enrolled by its pHash and file digests only.
// The same value twice (the plain hash is the `full` view) is given once. `views: true` also
// returns every view by name (for the drift benchmark; with "plain", the one hash whatever its
// quality, for the conformance tests). Jobs run one at a time, in order.

import { decodeForHashing, DecodeError, sniff } from "./decode.js";
import { blobDigests } from "./digests.js";
import { phash } from "./phash.js";
import {
  hashTask,
  keptViews,
  keptWhenFlat,
  plainView,
  PROFILES,
  QUALITY_FLOOR,
  viewContext,
  viewTasks,
} from "./views.js";

const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|qt|3gp|3g2|avi|mkv|webm|mpg|mpeg|wmv|flv|ogv|ts|mts)$/i;

function isVideo(file, kind) {
  if (kind === "video") return true;
  if (file.type && file.type.startsWith("video/")) return true;
  return typeof file.name === "string" && VIDEO_EXTENSIONS.test(file.name);
}

async function hashFile(id, file, profile, wantViews) {
  const config = profile === "plain" ? null : PROFILES[profile];
  if (profile !== "plain" && !config) {
    throw new DecodeError("unsupported", `Unknown hashing profile "${profile}".`);
  }
  const kind = sniff(new Uint8Array(await file.slice(0, 64).arrayBuffer()));
  if (isVideo(file, kind)) {
    const digests = await blobDigests(file, {
      onChunk: (done, total) => postMessage({ id, type: "progress", done, total }),
    });
    return {
      item: {
        kind: "video",
        hashes: [
          { signal: "md5", hex: digests.md5 },
          { signal: "sha256", hex: digests.sha256 },
        ],
      },
    };
  }
  const t0 = performance.now();
  const image = await decodeForHashing(file);
  const t1 = performance.now();
  let views;
  let named;
  if (config) {
    views = named = await profileViews(image, profile, config, (done, total) => {
      postMessage({ id, type: "progress", done, total });
    });
  } else {
    named = plainView(image); // with its quality, whatever it is (the conformance tests)
    views = named.filter((v) => v.quality >= QUALITY_FLOOR);
    postMessage({ id, type: "progress", done: 1, total: 1 });
  }
  const grey = phash(image.data, image.width, image.height, image.channels);
  const t2 = performance.now();
  const digests = await blobDigests(file);
  const t3 = performance.now();
  const seen = new Set();
  const hashes = [];
  for (const v of views) {
    if (seen.has(v.hex)) continue;
    seen.add(v.hex);
    hashes.push({ signal: "pdq", hex: v.hex, quality: v.quality, view: v.name });
  }
  hashes.push(
    { signal: "phash", hex: grey },
    { signal: "md5", hex: digests.md5 },
    { signal: "sha256", hex: digests.sha256 },
  );
  const item = { kind: "image", hashes };
  if (!views.length) item.flat = true;
  // How long each step took (ms), for the speed benchmark; no pixel or hash in it.
  const out = { item, timings: { decode: t1 - t0, views: t2 - t1, digests: t3 - t2 } };
  if (wantViews) out.views = named;
  return out;
}

// Helpers (views-worker.js), one per core up to 4, made once: the views are independent, so a
// phone with 4+ cores hashes a photo several times faster. Where helpers cannot start (an old
// browser without nested workers) or one fails, the views are hashed here, one by one.
const HELPERS = Math.max(1, Math.min(4, (self.navigator && self.navigator.hardwareConcurrency) || 1));
let pool = null;
let nextJob = 0;

function helpers() {
  if (pool) return pool;
  pool = [];
  if (HELPERS < 2 || typeof Worker === "undefined") return pool;
  try {
    for (let k = 0; k < HELPERS; k++) {
      pool.push(new Worker(new URL("./views-worker.js", import.meta.url), { type: "module" }));
    }
  } catch {
    for (const w of pool) w.terminate();
    pool = [];
  }
  return pool;
}

function dropHelpers() {
  for (const w of pool || []) w.terminate();
  pool = [];
}

// The profile's views of a decoded picture, `[{name, hex, quality}]` as enrollViews gives
// them, spread over the helpers; onProgress(done, total) after each view.
async function profileViews(image, profile, config, onProgress) {
  const tasks = viewTasks(config);
  const total = tasks.length;
  const ctx = viewContext(image);
  const hashes = new Array(total);
  hashes[0] = hashTask(ctx, tasks[0]);
  const flat = hashes[0].quality < QUALITY_FLOOR;
  const todo = [];
  for (let i = 1; i < total; i++) if (!flat || keptWhenFlat(tasks[i])) todo.push(i);
  let done = total - todo.length;
  onProgress(done, total);
  const workers = helpers();
  if (workers.length >= 2) {
    const job = ++nextJob;
    try {
      await Promise.all(
        workers.map(
          (w, k) =>
            new Promise((resolve, reject) => {
              w.onmessage = (event) => {
                const m = event.data;
                if (m.job !== job) return;
                if (m.error) reject(new Error(m.error));
                else if (m.done) resolve();
                else {
                  hashes[m.i] = { hex: m.hex, quality: m.quality };
                  onProgress(++done, total);
                }
              };
              w.onerror = (event) => {
                event.preventDefault();
                reject(new Error("helper failed"));
              };
              // Every k-th view: the costly rotations, at the end of the list, are shared too.
              const indices = todo.filter((_, j) => j % workers.length === k);
              const { width, height, channels, data } = image;
              w.postMessage({ job, profile, width, height, channels, data, indices });
            }),
        ),
      );
    } catch {
      dropHelpers(); // and finish here whatever they did not
    }
  }
  for (const i of todo) {
    if (hashes[i]) continue;
    hashes[i] = hashTask(ctx, tasks[i]);
    onProgress(++done, total);
  }
  return keptViews(tasks, hashes);
}

let queue = Promise.resolve();

self.addEventListener("message", (event) => {
  const { id, file, profile = "enroll", views = false } = event.data || {};
  queue = queue.then(async () => {
    try {
      if (!(file instanceof Blob)) {
        throw new DecodeError("unsupported", "Nothing to read: please choose a photo.");
      }
      const result = await hashFile(id, file, profile, views);
      postMessage({ id, type: "result", ...result, thumbnailless: true });
    } catch (error) {
      if (error instanceof DecodeError) {
        postMessage({ id, type: "error", kind: error.kind, message: error.message });
      } else if (error && error.name === "RangeError") {
        // Out of memory for a huge picture, typically.
        postMessage({
          id,
          type: "error",
          kind: "too_large",
          message: "This photo is too big to work on in this browser.",
        });
      } else {
        postMessage({
          id,
          type: "error",
          kind: "corrupt",
          message: "This file could not be read. It may be damaged.",
        });
      }
    }
  });
});
