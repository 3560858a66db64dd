// The victim's pages: with a case number and secret, see what is protected and remove one photo
// or the whole case; and, when the operator has turned it on, protect photos yourself.
// The number and secret travel only in request bodies (never in a URL, which servers log), and
// are kept in this page's memory only while it is open.

import { api } from "./api.js";
import { itemToSend } from "./hashing.js";
import { photoPicker } from "./photos.js";
import { caseStatus, rememberThumb } from "./status.js";
import { announce, confirmAction, errorBox, field, h, plural, show } from "./ui.js";

/** Entry point for #/case. */
export function victimPage() {
  const err = errorBox();
  const number = field("Case number", { autocomplete: "off", spellcheck: "false", required: true, name: "case" }, "For example K7QP-2MXR-9TDA.");
  const secret = field(
    "Secret",
    { type: "password", autocomplete: "off", spellcheck: "false", required: true, name: "secret" },
    "The secret you were given with your case number.",
  );
  const showId = "show-secret";
  const toggle = h("input", { type: "checkbox", id: showId });
  toggle.addEventListener("change", () => {
    secret.input.type = toggle.checked ? "text" : "password";
  });
  const form = h(
    "form",
    { class: "card", novalidate: true },
    number.wrap,
    secret.wrap,
    h("div", { class: "check" }, toggle, h("label", { for: showId }, "Show the secret as I type")),
    err.box,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "See my case")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const n = number.input.value.trim().toUpperCase();
    const s = secret.input.value.trim();
    if (!n || !s) {
      err.set("Please enter both your case number and your secret.");
      (n ? secret.input : number.input).focus();
      return;
    }
    try {
      const c = await api.victimStatus(n, s);
      casePage(n, s, c);
    } catch (error) {
      err.set(error.message);
    }
  });
  show(
    h("h1", {}, "Check or remove your photos"),
    h("p", {}, "Enter the case number and secret you were given. You can see which photos are protected and remove any of them, or the whole case, at any time."),
    form,
  );
}

function casePage(number, secret, initial, justOpened = false) {
  const err = errorBox();
  const holder = h("div", { class: "status-holder" });

  function render(c) {
    holder.replaceChildren(
      caseStatus(c, {
        who: "victim",
        onRefresh: () => refresh("Status updated."),
        onWithdrawPhoto: withdrawPhoto,
        onWithdrawCase: withdrawCase,
      }),
    );
  }

  async function refresh(say = "") {
    try {
      render(await api.victimStatus(number, secret));
      err.set("");
      if (say) announce(say);
    } catch (error) {
      err.set(error.message);
    }
  }

  async function withdrawPhoto(photo, name) {
    const yes = await confirmAction(
      `${name} will be removed. Its digital fingerprints are deleted and platforms will no longer look for copies of it. This cannot be undone.`,
      "Yes, remove this photo",
    );
    if (!yes) return;
    try {
      await api.victimWithdraw(number, secret, photo);
      await refresh(`${name} removed.`);
    } catch (error) {
      err.set(error.message);
    }
  }

  async function withdrawCase() {
    const yes = await confirmAction(
      "Your whole case will be removed: the digital fingerprints of all your photos are deleted and platforms will no longer look for copies. This cannot be undone.",
      "Yes, remove my case",
    );
    if (!yes) return;
    try {
      await api.victimWithdraw(number, secret);
      await refresh("Your case is removed.");
    } catch (error) {
      err.set(error.message);
    }
  }

  show(
    h("h1", {}, justOpened ? "Your photos are protected" : "Your case"),
    err.box,
    holder,
    h("p", {}, h("a", { href: "#/" }, "Leave (you will need your case number and secret to come back)")),
  );
  render(initial);
}

/** Entry point for #/protect: self-service, when the operator turned it on. */
export function selfServicePage() {
  const err = errorBox();
  const ready = []; // {item, url}
  const count = h("p", { class: "hint", "aria-live": "polite" }, "No photos ready yet.");
  const protect = h("button", { type: "button", class: "primary", disabled: true }, "Protect these photos");

  const picker = photoPicker({
    intro: "Choose the photos you want platforms to watch for. They stay on this device: only their digital fingerprints are sent.",
    buttonText: "Choose photos",
    async onReady(file, item, url, row) {
      ready.push({ item: itemToSend(item), url });
      row.done("Ready.");
      count.textContent = `${plural(ready.length, "photo", "photos")} ready to protect.`;
      protect.disabled = false;
    },
  });

  protect.addEventListener("click", async () => {
    if (picker.busy()) {
      err.set("Please wait until every photo is ready.");
      return;
    }
    protect.disabled = true;
    try {
      const created = await api.selfService(ready.map((r) => r.item));
      // The server enrolls the photos in the order sent, numbering them 1, 2, ...
      ready.forEach((r, index) => rememberThumb(created.number, index + 1, r.url));
      announce("Your photos are protected.");
      secretPage(created.number, created.secret);
    } catch (error) {
      err.set(error.message);
      protect.disabled = false;
    }
  });

  show(
    h("h1", {}, "Protect my photos"),
    h(
      "p",
      {},
      "If someone has shared, or threatens to share, intimate photos of you, this page makes a digital fingerprint of each photo on your own device. Platforms that work with this service compare uploads against these fingerprints to find copies. Your photos are not uploaded.",
    ),
    h("section", { class: "card", "aria-labelledby": "pick-title" }, h("h2", { id: "pick-title" }, "Your photos"), picker.element, count, err.box, h("div", { class: "actions" }, protect)),
  );
}

function secretPage(number, secret) {
  const go = async () => {
    try {
      casePage(number, secret, await api.victimStatus(number, secret), true);
    } catch (error) {
      casePage(number, secret, { number, items: [], photosHeld: 0, matches: 0, withdrawn: false }, true);
    }
  };
  show(
    h("h1", {}, "Write this down now"),
    h(
      "section",
      { class: "card secret-card", "aria-labelledby": "secret-title" },
      h("h2", { id: "secret-title" }, "Your case number and secret"),
      h("p", { class: "strong" }, "You need both to check or remove your photos later. The secret is shown only this once: nobody can show it to you again."),
      h(
        "dl",
        { class: "secret" },
        h("div", {}, h("dt", {}, "Case number"), h("dd", { class: "mono", "data-test": "case-number" }, number)),
        h("div", {}, h("dt", {}, "Secret"), h("dd", { class: "mono", "data-test": "secret" }, secret)),
      ),
      h("p", {}, "Keep them somewhere safe that only you can see."),
      h(
        "div",
        { class: "actions no-print" },
        h("button", { type: "button", class: "secondary", onclick: () => window.print() }, "Print"),
        h("button", { type: "button", class: "primary", onclick: go }, "I have written them down"),
      ),
    ),
  );
}
