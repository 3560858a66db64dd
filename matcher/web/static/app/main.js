// The start page and the routes. Routes live in the URL fragment (#/helper, #/case, #/protect),
// which the browser never sends to the server; case numbers and secrets are never put there.

import { api } from "./api.js";
import { revokeAll } from "./photos.js";
import { practitionerPage } from "./practitioner.js";
import { h, show } from "./ui.js";
import { selfServicePage, victimPage } from "./victim.js";

let selfService = false;

function door(href, title, text, testId) {
  return h(
    "li",
    {},
    h("a", { class: "door", href, "data-test": testId }, h("span", { class: "door-title" }, title), h("span", { class: "door-text" }, text)),
  );
}

function startPage() {
  show(
    h("h1", {}, "Stop intimate photos being shared"),
    h(
      "p",
      { class: "lead" },
      "Platforms that work with this service can spot copies of your photos when someone uploads them. Your photos never leave your device: only a digital fingerprint of each one is sent.",
    ),
    h(
      "ul",
      { class: "doors", "aria-label": "Choose what you want to do" },
      selfService
        ? door("#/protect", "Protect my photos", "Make digital fingerprints of your photos here and get a case number.", "door-protect")
        : null,
      door("#/case", "I have a case number", "See what is protected, or remove your photos, with your case number and secret.", "door-victim"),
      door("#/helper", "I am helping someone", "For helpline staff: sign in to open a case and add photos.", "door-helper"),
    ),
  );
}

function route() {
  const path = window.location.hash.replace(/^#/, "") || "/";
  if (path !== "/protect") revokeAll();
  if (path === "/helper") return practitionerPage();
  if (path === "/case") return victimPage();
  if (path === "/protect" && selfService) return selfServicePage();
  return startPage();
}

async function start() {
  selfService = await api.selfServiceOn();
  window.addEventListener("hashchange", route);
  route();
}

start();
