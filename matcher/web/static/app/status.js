// A case's status, the same for the practitioner and the victim: how many photos are held, how
// many matches platforms have reported, and each photo with a button to remove it.

import { thumb } from "./photos.js";
import { h, plural, when } from "./ui.js";

/** Local thumbnails by case number, then photo number: this tab's memory only. */
export const thumbnails = new Map();

export function rememberThumb(caseNumber, photoNumber, url) {
  if (!url) return;
  if (!thumbnails.has(caseNumber)) thumbnails.set(caseNumber, new Map());
  thumbnails.get(caseNumber).set(photoNumber, url);
}

function matchesText(n) {
  if (n === 0) return "No platform has reported finding a copy yet.";
  return `Platforms have reported ${plural(n, "possible copy", "possible copies")}.`;
}

/** Why a photo is paused, in the words of the person reading (the same for both). */
export function pausedText(q) {
  return q.reason === "flood"
    ? "Paused: it matched far more often than usual."
    : "Paused: other services said this may not be your photo; your helpline will check it.";
}

/**
 * The status section. `onWithdrawPhoto(number)` and `onWithdrawCase()` are called after the
 * person has confirmed.
 */
export function caseStatus(c, { onWithdrawPhoto, onWithdrawCase, onRefresh, who }) {
  const local = thumbnails.get(c.number) || new Map();
  const held = c.items.filter((item) => !item.withdrawn);
  const summary = h(
    "dl",
    { class: "summary" },
    h("div", {}, h("dt", {}, "Case number"), h("dd", { class: "mono" }, c.number)),
    h(
      "div",
      {},
      h("dt", {}, "State"),
      h("dd", {}, c.withdrawn ? `Removed${c.withdrawnAt ? ` on ${when(c.withdrawnAt)}` : ""}` : "Protected: platforms check uploads against these photos"),
    ),
    h("div", {}, h("dt", {}, "Photos held"), h("dd", { "data-test": "photos-held" }, String(c.photosHeld))),
    h("div", {}, h("dt", {}, "Copies reported"), h("dd", { "data-test": "matches" }, String(c.matches))),
  );

  const rows = c.items.map((item) => {
    const name = item.label ? `Photo ${item.number}: ${item.label}` : `Photo ${item.number}`;
    const state = item.withdrawn
      ? `Removed${item.withdrawnAt ? ` on ${when(item.withdrawnAt)}` : ""}. Its fingerprints are deleted.`
      : `Protected since ${when(item.created) || "it was added"}. ${matchesText(item.matches)}`;
    // A paused photo is held but not matched until the helpline decides: say so instead of
    // "protected", in words, with why.
    const paused =
      item.quarantine && !item.withdrawn && !c.withdrawn
        ? h("p", { class: "paused", "data-test": "paused" }, pausedText(item.quarantine), item.quarantine.since ? ` Since ${when(item.quarantine.since)}.` : "")
        : null;
    const stateLine = paused ? null : h("p", {}, state);
    const button =
      item.withdrawn || c.withdrawn
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "secondary",
              "aria-label": `Remove ${name}`,
              onclick: () => onWithdrawPhoto(item.number, name),
            },
            "Remove this photo",
          );
    return h(
      "li",
      { class: `status-row${item.withdrawn ? " removed" : ""}` },
      thumb(item.withdrawn ? null : local.get(item.number), String(item.number)),
      h("div", { class: "row-body" }, h("h3", { class: "row-name" }, name), stateLine, paused, button),
    );
  });

  const explain = c.withdrawn
    ? h("p", {}, "This case has been removed. All its digital fingerprints are deleted and no platform will be told about these photos again.")
    : h(
        "p",
        {},
        held.length
          ? `${plural(held.length, "photo is", "photos are")} protected. ${matchesText(c.matches)}`
          : "No photos are protected in this case yet.",
      );

  // Pictures are shown only where they were chosen, in this tab: the service never had them.
  const byNumber =
    rows.length && local.size === 0
      ? h("p", { class: "hint" }, "The service never receives the photos themselves, so they are listed here by number.")
      : null;

  return h(
    "section",
    { class: "card", "aria-labelledby": "status-title" },
    h("h2", { id: "status-title" }, "Case status"),
    summary,
    explain,
    byNumber,
    rows.length ? h("ul", { class: "status-list", "aria-label": "Photos in this case" }, rows) : null,
    h(
      "div",
      { class: "actions" },
      onRefresh ? h("button", { type: "button", class: "secondary", onclick: onRefresh }, "Check again") : null,
      c.withdrawn
        ? null
        : h(
            "button",
            { type: "button", class: "danger", onclick: onWithdrawCase },
            who === "victim" ? "Remove my whole case" : "Remove the whole case",
          ),
    ),
  );
}
