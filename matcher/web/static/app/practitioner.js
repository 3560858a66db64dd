// The practitioner's pages: sign in with the helpline's key, open a case (its number and secret
// shown once), add photos, see the case's status, remove one photo or the whole case, and decide
// on paused photos ("To review": restore or remove).

import { api, ApiError, session } from "./api.js";
import { itemToSend } from "./hashing.js";
import { photoPicker, revoke } from "./photos.js";
import { caseStatus, pausedText, rememberThumb, thumbnails } from "./status.js";
import { announce, confirmAction, errorBox, field, h, show, when } from "./ui.js";

let me = null; // {role, organisation} once signed in

function showWho() {
  const who = document.getElementById("who");
  if (!me) {
    who.hidden = true;
    who.replaceChildren();
    return;
  }
  who.hidden = false;
  who.replaceChildren(
    h("span", {}, `Signed in${me.organisation ? `: ${me.organisation}` : ""}`),
    h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
  );
}

function signOut() {
  session.key = "";
  me = null;
  for (const byPhoto of thumbnails.values()) for (const url of byPhoto.values()) revoke(url);
  thumbnails.clear();
  showWho();
  announce("Signed out.");
  signInPage();
}

/** Entry point for #/helper. */
export async function practitionerPage() {
  if (!session.key) return signInPage();
  if (!me) {
    try {
      me = await api.whoAmI();
    } catch {
      session.key = "";
      return signInPage();
    }
  }
  showWho();
  homePage();
}

function signInPage(message = "") {
  const err = errorBox();
  const key = field(
    "Your helpline's access key",
    { type: "password", autocomplete: "off", spellcheck: "false", required: true, name: "key" },
    "The key your organisation was given for this service. It is kept only while this tab is open.",
  );
  const form = h(
    "form",
    { class: "card", novalidate: true },
    key.wrap,
    err.box,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = key.input.value.trim();
    if (!value) {
      err.set("Please enter your access key.");
      key.input.focus();
      return;
    }
    session.key = value;
    try {
      const who = await api.whoAmI();
      if (who.role && who.role !== "practitioner") {
        session.key = "";
        err.set("This key is not a practitioner's key. Cases can only be opened with a practitioner's key.");
        return;
      }
      me = who;
      showWho();
      announce("Signed in.");
      homePage();
    } catch (error) {
      session.key = "";
      err.set(error instanceof ApiError ? error.message : "Signing in did not work. Please try again.");
      key.input.focus();
    }
  });
  show(
    h("h1", {}, "Sign in to help someone"),
    h("p", {}, "Helpline staff: sign in to open a case for the person you are helping and protect their photos."),
    form,
  );
  if (message) err.set(message);
}

function homePage() {
  const err = errorBox();
  const open = h(
    "button",
    {
      type: "button",
      class: "primary",
      onclick: async () => {
        open.disabled = true;
        try {
          const created = await api.createCase();
          announce("A new case is open.");
          casePage(created.number, created.secret);
        } catch (error) {
          err.set(error.message);
          open.disabled = false;
        }
      },
    },
    "Open a new case",
  );
  const lookup = field("Case number", { autocomplete: "off", spellcheck: "false", name: "case" }, "For example K7QP-2MXR-9TDA.");
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("h2", {}, "A case you opened before"),
    lookup.wrap,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "secondary" }, "Show this case")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const number = lookup.input.value.trim().toUpperCase();
    if (number) casePage(number);
  });
  const review = h("div", { class: "review-holder" });
  show(
    h("h1", {}, "Cases"),
    review,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Someone new"),
      h("p", {}, "Open a case for the person you are helping. They get a case number and a secret to check or remove their photos later, without you."),
      err.box,
      h("div", { class: "actions" }, open),
    ),
    form,
  );
  reviewList(review);
}

/** "To review": the organisation's paused photos, each with Restore and Remove. Shown only
 * when there is something to decide. */
async function reviewList(holder) {
  const err = errorBox();
  let entries;
  try {
    entries = await api.reviewQueue();
  } catch (error) {
    err.set(error.message);
    holder.replaceChildren(h("section", { class: "card" }, h("h2", {}, "To review"), err.box));
    return;
  }
  if (!entries.length) {
    holder.replaceChildren();
    return;
  }
  async function decide(entry, name, decision) {
    const restore = decision === "restore";
    const yes = await confirmAction(
      restore
        ? `${name} will be protected again: platforms will be told about copies of it at once. Choose this only if you have checked that it is the person's own photo.`
        : `${name} will be removed from the case. Its digital fingerprints are deleted and platforms will no longer be told about copies of it. This cannot be undone.`,
      restore ? "Yes, restore this photo" : "Yes, remove this photo",
    );
    if (!yes) return;
    try {
      await api.reviewItem(entry.caseNumber, entry.number, decision);
      announce(restore ? `${name} is protected again.` : `${name} removed.`);
      await reviewList(holder);
    } catch (error) {
      err.set(error.message);
    }
  }
  const rows = entries.map((entry) => {
    const name = `Photo ${entry.number} of case ${entry.caseNumber}`;
    const since = entry.quarantine.since ? ` Since ${when(entry.quarantine.since)}.` : "";
    return h(
      "li",
      { class: "status-row review-row" },
      h(
        "div",
        { class: "row-body" },
        h("h3", { class: "row-name" }, entry.label ? `${name}: ${entry.label}` : name),
        h("p", {}, pausedText(entry.quarantine), since),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", class: "secondary", "aria-label": `Restore ${name}`, onclick: () => decide(entry, name, "restore") }, "Restore"),
          h("button", { type: "button", class: "danger", "aria-label": `Remove ${name}`, onclick: () => decide(entry, name, "withdraw") }, "Remove"),
          h("button", { type: "button", class: "link", "aria-label": `Show case ${entry.caseNumber}`, onclick: () => casePage(entry.caseNumber) }, "Show the case"),
        ),
      ),
    );
  });
  holder.replaceChildren(
    h(
      "section",
      { class: "card", "aria-labelledby": "review-title" },
      h("h2", { id: "review-title" }, "To review"),
      h("p", {}, "These photos are paused: they are not matched until you decide. Restore a photo if it is the person's own; remove it if it is not."),
      err.box,
      h("ul", { class: "status-list", "aria-label": "Paused photos" }, rows),
    ),
  );
}

/** The secret, shown this once: the server keeps only a salted hash of it. */
function secretCard(number, secret, onDone) {
  const card = h(
    "section",
    { class: "card secret-card", "aria-labelledby": "secret-title" },
    h("h2", { id: "secret-title" }, "Write this down now"),
    h("p", { class: "strong" }, "Give these to the person you are helping. The secret is shown only this once: nobody can show it again, not even us."),
    h(
      "dl",
      { class: "secret" },
      h("div", {}, h("dt", {}, "Case number"), h("dd", { class: "mono", "data-test": "case-number" }, number)),
      h("div", {}, h("dt", {}, "Secret"), h("dd", { class: "mono", "data-test": "secret" }, secret)),
    ),
    h("p", {}, "With them, the person can see what is protected and remove their photos at any time on this site: choose \u201cI have a case number\u201d."),
    h(
      "div",
      { class: "actions no-print" },
      h("button", { type: "button", class: "secondary", onclick: () => window.print() }, "Print"),
      h("button", { type: "button", class: "primary", onclick: onDone }, "I have written them down"),
    ),
  );
  return card;
}

async function casePage(number, secret = "") {
  const err = errorBox();
  const statusHolder = h("div", { class: "status-holder" });
  const label = field(
    "A short note for these photos (optional)",
    { maxlength: 200, autocomplete: "off", name: "label" },
    "Shown only in this case, for example \u201cbeach, 2023\u201d. Do not type a file name or anyone's name.",
  );

  async function refresh(say = "") {
    try {
      const c = await api.getCase(number);
      statusHolder.replaceChildren(
        caseStatus(c, {
          who: "practitioner",
          onRefresh: () => refresh("Status updated."),
          onWithdrawPhoto: withdrawPhoto,
          onWithdrawCase: withdrawCase,
        }),
      );
      picker.element.hidden = c.withdrawn;
      label.wrap.hidden = c.withdrawn;
      err.set("");
      if (say) announce(say);
    } catch (error) {
      err.set(error.message);
    }
  }

  async function withdrawPhoto(photo, name) {
    const yes = await confirmAction(
      `${name} will be removed from the case. Its digital fingerprints are deleted and platforms will no longer be told about copies of it. This cannot be undone.`,
      "Yes, remove this photo",
    );
    if (!yes) return;
    try {
      await api.withdrawItem(number, photo);
      revoke(thumbnails.get(number)?.get(photo));
      thumbnails.get(number)?.delete(photo);
      await refresh(`${name} removed.`);
    } catch (error) {
      err.set(error.message);
    }
  }

  async function withdrawCase() {
    const yes = await confirmAction(
      "The whole case will be removed: the digital fingerprints of all its photos are deleted and platforms will no longer be told about any of them. This cannot be undone.",
      "Yes, remove the case",
    );
    if (!yes) return;
    try {
      await api.withdrawCase(number);
      for (const url of (thumbnails.get(number) || new Map()).values()) revoke(url);
      thumbnails.delete(number);
      await refresh("The case is removed.");
    } catch (error) {
      err.set(error.message);
    }
  }

  const picker = photoPicker({
    intro: "Add the photos to protect. They stay on this device: only their digital fingerprints are sent.",
    buttonText: "Choose photos",
    onChoose: () => label.input.value.trim(),
    async onReady(file, item, url, row, note) {
      const [enrolled] = await api.addItems(number, [itemToSend(item, note)]);
      if (enrolled) rememberThumb(number, enrolled.number, url);
      row.done(enrolled ? `Protected as photo ${enrolled.number}.` : "Protected.");
      await refresh();
    },
  });

  const head = h("h1", {}, `Case ${number}`);
  const body = [
    head,
    err.box,
    h(
      "section",
      { class: "card", "aria-labelledby": "add-title" },
      h("h2", { id: "add-title" }, "Add photos"),
      label.wrap,
      picker.element,
    ),
    statusHolder,
    h(
      "p",
      {},
      h("button", { type: "button", class: "link", onclick: homePage }, "Back to cases"),
    ),
  ];
  if (secret) {
    const card = secretCard(number, secret, () => {
      card.remove();
      head.focus();
      announce("The secret is hidden now.");
    });
    show(head, card, ...body.slice(1));
  } else {
    show(...body);
  }
  await refresh();
}
