// A helper of the hashing worker (worker.js): hashes some of a picture's views on a thread of
// its own, so that a phone's cores share the 100 views of the enroll profile. It is handed the
// decoded pixels (never the file) and answers with hashes only.
//
//   post    {job, profile, width, height, channels, data, indices}
//   answers {job, i, hex, quality} per view, then {job, done: true}; or {job, error}

import { hashTask, PROFILES, viewContext, viewTasks } from "./views.js";

self.addEventListener("message", (event) => {
  const { job, profile, width, height, channels, data, indices } = event.data;
  try {
    const tasks = viewTasks(PROFILES[profile]);
    const ctx = viewContext({ data, width, height, channels });
    for (const i of indices) {
      const h = hashTask(ctx, tasks[i]);
      postMessage({ job, i, hex: h.hex, quality: h.quality });
    }
    postMessage({ job, done: true });
  } catch (error) {
    postMessage({ job, error: String(error && error.name) });
  }
});
