// Small DOM helpers shared by the pages. No framework: the pages are few and plain, and every
// element is built with createElement so nothing is ever parsed as markup from a string:
// labels typed by a person are shown as text, never as markup.

/**
 * Build an element: h("p", {class: "x"}, "text", child). Attributes starting with "on" become
 * listeners; `hidden`, `disabled`, `required`, `multiple` are booleans.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let nextId = 0;
/** A fresh id for label/for and aria-describedby pairs. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled text field: returns {wrap, input}. */
export function field(label, attrs = {}, hint = "") {
  const id = uid("field");
  const hintId = hint ? `${id}-hint` : undefined;
  const input = h("input", { id, type: "text", "aria-describedby": hintId, ...attrs });
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    input,
  );
  return { wrap, input };
}

/** Replace the view with `nodes` and move focus to its first heading, for screen readers and
 * keyboard users alike (a page change must be announced, and Tab must start from the top). */
export function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes.flat());
  const heading = view.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
  window.scrollTo(0, 0);
}

/** Say something politely (progress, done) to screen readers. */
export function announce(text) {
  const region = document.getElementById("status");
  // Clear first so the same message said twice is read twice.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** An error box in the page (role=alert, so it is read at once). */
export function errorBox() {
  const box = h("div", { class: "error", role: "alert", hidden: true });
  return {
    box,
    set(message) {
      box.textContent = message || "";
      box.hidden = !message;
    },
  };
}

/**
 * Ask before something that cannot be undone. Resolves true if the person confirmed. Uses the
 * page's <dialog>: modal, so focus stays inside it; Escape means no.
 */
export function confirmAction(text, yesLabel) {
  const dialog = document.getElementById("confirm");
  const yes = document.getElementById("confirm-yes");
  const no = document.getElementById("confirm-no");
  document.getElementById("confirm-text").textContent = text;
  yes.textContent = yesLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (answer) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = (event) => {
      if (event) event.preventDefault();
      done(false);
    };
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    // The safe answer gets the focus: Enter by reflex must not remove anything.
    no.focus();
  });
}

/** "1 photo", "3 photos". */
export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** A date the person can read, in their own locale. */
export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
