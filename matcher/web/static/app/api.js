// The page's only door to the server: the HTTP/JSON API under /api/v1/ on our own origin (the
// CSP's connect-src allows nothing else). Every body sent is JSON of form fields and digital
// fingerprints (hashes); no function here takes a file or image.
//
// Responses are read through `normCase` / `normItem`, which accept both the protobuf JSON
// spellings (lowerCamelCase, int64 as strings, enum names like ITEM_STATE_ACTIVE) and the proto
// field names, so the pages do not depend on which one the gateway prints.

const KEY = "matcher.apiKey";

/** The practitioner's API key, for this tab only: sessionStorage ends with the tab, and
 * localStorage (which outlives it, on a shared helpline computer too) is never used. */
export const session = {
  get key() {
    return window.sessionStorage.getItem(KEY) || "";
  },
  set key(value) {
    if (value) window.sessionStorage.setItem(KEY, value);
    else window.sessionStorage.removeItem(KEY);
  },
};

/** An error the page can show as it is: `message` is plain language. */
export class ApiError extends Error {
  constructor(status, message, problem) {
    super(message);
    this.status = status;
    this.problem = problem || null;
  }
}

// Plain words for each HTTP status, by who is asking: a victim is told what to do next, never a
// status code or a field name.
function plainMessage(status, problem, who) {
  const retry = problem && problem.retryAfter;
  switch (status) {
    case 400:
      return "Something in this form is not right. Please check it and try again.";
    case 401:
      return who === "victim"
        ? "That case number and secret do not match a case. Please check them and try again."
        : "That key was not accepted. Check it and sign in again.";
    case 403:
      return "This key is not allowed to do that. Ask the person who runs this service for a practitioner key.";
    case 404:
      return who === "victim"
        ? "That case number and secret do not match a case. Please check both, letter by letter, and try again."
        : "That case was not found (or belongs to another organisation).";
    case 409:
    case 422:
      return "That was already done, or cannot be done any more (the case may have been removed).";
    case 413:
      return "That was too much at once. Please try with fewer photos.";
    case 429:
      return `Too many tries in a short time. Please wait${retry ? ` ${retry} seconds` : " a few minutes"} and try again.`;
    case 503:
      return "The service is busy or starting. Please try again in a minute.";
    default:
      return "Something went wrong on our side. Please try again later.";
  }
}

async function call(method, path, { body, auth = false, who = "practitioner" } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = `Bearer ${session.key}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "The service cannot be reached. Check your connection and try again.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = data && typeof data === "object" ? data : {};
    problem.retryAfter = response.headers.get("Retry-After");
    throw new ApiError(response.status, plainMessage(response.status, problem, who), problem);
  }
  return data;
}

// --- reading responses -----------------------------------------------------------------------

function camel(name) {
  return name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

/** obj[name] under its proto name or its JSON (camelCase) name. */
function pick(obj, name) {
  if (!obj || typeof obj !== "object") return undefined;
  if (name in obj) return obj[name];
  return obj[camel(name)];
}

function num(value) {
  const n = Number(value ?? 0);
  return Number.isFinite(n) ? n : 0;
}

function withdrawn(state) {
  return String(state || "").toUpperCase().includes("WITHDRAWN");
}

/** An item (one photo) as the pages use it. */
export function normItem(raw) {
  return {
    number: num(pick(raw, "number")),
    kind: String(pick(raw, "kind") || "").toLowerCase().includes("video") ? "video" : "image",
    withdrawn: withdrawn(pick(raw, "state")),
    label: pick(raw, "label") || "",
    matches: num(pick(raw, "match_count")),
    reportedCorrect: num(pick(raw, "reported_correct")),
    reportedWrong: num(pick(raw, "reported_wrong")),
    created: pick(raw, "create_time") || "",
    withdrawnAt: pick(raw, "withdraw_time") || "",
    quarantine: quarantine(pick(raw, "quarantine")),
    reviewedAt: pick(raw, "review_time") || "",
  };
}

/** An item's quarantine ({reason: "reports"|"flood", since}), or null when it is not paused. */
function quarantine(raw) {
  if (!raw || typeof raw !== "object") return null;
  const reason = String(pick(raw, "reason") || "").toLowerCase().includes("flood") ? "flood" : "reports";
  return { reason, since: pick(raw, "since") || "" };
}

/** One entry of the review queue (a paused photo waiting for the practitioner). */
function normReview(raw) {
  return {
    caseNumber: pick(raw, "case_number") || "",
    number: num(pick(raw, "item") ?? pick(raw, "item_number")),
    label: pick(raw, "label") || "",
    quarantine: quarantine(pick(raw, "quarantine")) || { reason: "reports", since: "" },
    reportedWrong: num(pick(raw, "reported_wrong")),
  };
}

/** A case as the pages use it (accepts {case: {...}} or the case itself). */
export function normCase(raw) {
  const c = pick(raw, "case") && typeof pick(raw, "case") === "object" ? pick(raw, "case") : raw;
  const items = (pick(c, "items") || []).map(normItem);
  return {
    number: pick(c, "case_number") || String(pick(c, "name") || "").replace(/^cases\//, ""),
    withdrawn: withdrawn(pick(c, "state")),
    photosHeld: num(pick(c, "item_count")),
    matches: num(pick(c, "match_count")),
    reportedCorrect: num(pick(c, "reported_correct")),
    reportedWrong: num(pick(c, "reported_wrong")),
    created: pick(c, "create_time") || "",
    withdrawnAt: pick(c, "withdraw_time") || "",
    items,
  };
}

/** {number, secret} of a newly opened case. */
function newCase(raw) {
  const c = normCase(raw);
  const secret =
    pick(raw, "secret") || pick(raw, "withdrawal_secret") || pick(pick(raw, "case"), "secret") || "";
  const number = pick(raw, "case_number") || c.number;
  return { number, secret, case: c };
}

function casePath(number) {
  return `/api/v1/cases/${encodeURIComponent(number)}`;
}

// --- the calls -------------------------------------------------------------------------------

export const api = {
  /** Who the key belongs to: {role, organisation}. */
  async whoAmI() {
    const data = await call("GET", "/api/v1/session", { auth: true });
    const org = pick(data, "organisation") ?? pick(data, "organization") ?? pick(data, "organization_name");
    return {
      role: String(pick(data, "role") || "").toLowerCase().split(/[._]/).pop(),
      organisation: typeof org === "object" && org ? pick(org, "display_name") || pick(org, "name") || "" : org || "",
    };
  },
  async createCase() {
    return newCase(await call("POST", "/api/v1/cases", { body: {}, auth: true }));
  },
  async getCase(number) {
    return normCase(await call("GET", casePath(number), { auth: true }));
  },
  /** Enroll items; resolves to the enrolled items, one per item sent, in order. */
  async addItems(number, items) {
    const data = await call("POST", `${casePath(number)}/items`, { body: { items }, auth: true });
    return (pick(data, "items") || []).map(normItem);
  },
  async withdrawCase(number) {
    return call("POST", `${casePath(number)}/withdraw`, { body: {}, auth: true });
  },
  async withdrawItem(number, item) {
    return call("POST", `${casePath(number)}/items/${encodeURIComponent(item)}/withdraw`, {
      body: {},
      auth: true,
    });
  },
  /** The organisation's paused photos, waiting for a decision (the oldest first). */
  async reviewQueue() {
    const data = await call("GET", "/api/v1/review", { auth: true });
    return (pick(data, "entries") || []).map(normReview);
  },
  /** Restore ("restore") or remove ("withdraw") a paused photo. */
  async reviewItem(number, item, decision) {
    return call("POST", `${casePath(number)}/items/${encodeURIComponent(item)}/review`, {
      body: { decision },
      auth: true,
    });
  },
  async victimStatus(caseNumber, secret) {
    const body = { case_number: caseNumber, secret };
    return normCase(await call("POST", "/api/v1/victim/status", { body, who: "victim" }));
  },
  async victimWithdraw(caseNumber, secret, item) {
    const body = { case_number: caseNumber, secret };
    if (item !== undefined) body.item = item;
    return call("POST", "/api/v1/victim/withdraw", { body, who: "victim" });
  },
  /** Self-service: open a case holding `items`. */
  async selfService(items) {
    return newCase(await call("POST", "/api/v1/victim/cases", { body: { items }, who: "victim" }));
  },
  /** Whether the operator turned self-service on (`GET /api/v1/features`). Any failure means
   * "no": the door is simply not shown. */
  async selfServiceOn() {
    try {
      const data = await call("GET", "/api/v1/features", { who: "victim" });
      return Boolean(data && data.self_service === true);
    } catch {
      return false;
    }
  },
};
