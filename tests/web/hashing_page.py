"""Hash files in a real Chromium through the hashing worker (shared by tests and benchmarks)."""

from __future__ import annotations

from typing import Any

# Runs in the page: fetch each URL as a File, post it to one worker, collect every message.
_RUN = """
async ({urls, profile, views}) => {
  const worker = new Worker("/hashing/worker.js", {type: "module"});
  const out = [];
  for (const [i, url] of urls.entries()) {
    const response = await fetch(url);
    const blob = await response.blob();
    const name = url.split("/").pop();
    const file = new File([blob], name, {type: blob.type});
    const t0 = performance.now();
    const result = await new Promise((resolve) => {
      const progress = [];
      worker.onmessage = (event) => {
        const m = event.data;
        if (m.id !== i) return;
        if (m.type === "progress") progress.push([m.done, m.total]);
        else resolve({...m, progress});
      };
      worker.onerror = (event) => resolve({type: "crash", message: String(event.message)});
      worker.postMessage({id: i, file, profile, views});
    });
    result.ms = performance.now() - t0;
    out.push(result);
  }
  worker.terminate();
  return out;
}
"""


def hash_in_browser(
    page: Any, site_url: str, urls: list[str], *, profile: str = "enroll", views: bool = False
) -> list[dict[str, Any]]:
    """The worker's final message for each URL (``result`` or ``error``), with ``progress``
    (every progress message's ``[done, total]``) and ``ms`` (the time the worker took)."""
    if not page.url.startswith(site_url):
        page.goto(site_url + "/__test__/blank.html")
    return list(page.evaluate(_RUN, {"urls": urls, "profile": profile, "views": views}))
