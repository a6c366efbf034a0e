// Shared pieces of the web UI: Preact + htm, the REST client, formatting, small hooks.
// The UI speaks only the public REST API, with the key kept in sessionStorage.
export {
  html,
  render,
  useState,
  useEffect,
  useRef,
  useMemo,
  useCallback,
  useContext,
  useLayoutEffect,
  createContext,
  useErrorBoundary,
} from "./vendor/preact-htm/standalone.module.js";
import { html, useEffect, useRef, useState } from "./vendor/preact-htm/standalone.module.js";

const KEY = "cronpilot.apiKey";

export const auth = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
  // Set by the app: called when the API answers 401, to return to sign-in.
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.errors = (problem && problem.errors) || [];
  }
}

// One REST call. JSON in and out; a problem+json answer becomes an ApiError.
export async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = auth.key();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { detail: "Cannot reach the Cronpilot API. Is it running?" });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/dev/sign-in") auth.onUnauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path, options) => api("GET", path, undefined, options);
export const post = (path, body, options) => api("POST", path, body === undefined ? {} : body, options);

export function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}

// -- formatting ---------------------------------------------------------------------------

export const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

// Whether the browser knows an IANA zone (a half-typed one would make Intl throw).
export function validZone(zone) {
  if (!zone) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export function zones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC", browserZone()];
  }
}

export function formatTime(iso, { zone, withSeconds = false } = {}) {
  if (!iso) return "—";
  const options = {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    ...(withSeconds ? { second: "2-digit" } : {}),
    ...(zone ? { timeZone: zone, timeZoneName: "short" } : {}),
  };
  return new Date(iso).toLocaleString(undefined, options);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// "in 4 min 10 s", "2 h ago": a countdown or an age, from now.
export function relative(iso, now = Date.now()) {
  if (!iso) return "—";
  const delta = Math.round((new Date(iso).getTime() - now) / 1000);
  const span = Math.abs(delta);
  let text;
  if (span < 60) text = `${span} s`;
  else if (span < 3600) text = `${Math.floor(span / 60)} min ${span % 60} s`;
  else if (span < 86400) text = `${Math.floor(span / 3600)} h ${Math.floor((span % 3600) / 60)} min`;
  else text = `${Math.floor(span / 86400)} d ${Math.floor((span % 86400) / 3600)} h`;
  if (delta >= 0) return span < 1 ? "now" : `in ${text}`;
  return `${text} ago`;
}

export const TYPE_LABELS = { one_time: "One-time", recurring: "Recurring", trigger: "Trigger" };
export const ACTION_LABELS = {
  webhook: "Webhook",
  ai_prompt: "AI prompt",
  send_email: "Send email",
  run_code: "Run code",
  generate_report: "Generate report",
  web_scrape: "Web scrape",
  task_chain: "Task chain",
  file_operation: "File operation",
  google_workspace: "Google Workspace",
};
export const TRIGGER_LABELS = {
  schedule: "schedule",
  manual: "manual",
  webhook: "webhook",
  event: "event",
  email: "email",
  chain: "chain",
};

// What a task as returned adds to its spec: PUT and POST /api/tasks/validate refuse these.
const READ_ONLY = [
  "id", "status", "created_at", "updated_at", "next_run_at", "last_run_at", "last_status",
  "run_count", "failure_count", "temporal",
];

// A task's spec (the body PUT and validate take), from the task as the API returned it.
export function specOf(task) {
  const spec = structuredClone(task);
  for (const name of READ_ONLY) delete spec[name];
  return spec;
}

// "timed_out" as people read it.
export const statusWord = (status) => (status || "").replace("_", " ");

// A status word in a coloured badge; the word itself carries the meaning (not the colour).
export function Badge({ status, kind = "status" }) {
  return html`<span class=${`badge ${kind}-${status || "none"}`}>${statusWord(status) || "—"}</span>`;
}

// -- hooks --------------------------------------------------------------------------------

export function useInterval(callback, ms, active = true) {
  const saved = useRef(callback);
  saved.current = callback;
  useEffect(() => {
    if (!active) return undefined;
    const id = setInterval(() => saved.current(), ms);
    return () => clearInterval(id);
  }, [ms, active]);
}

// The current time, re-rendered every `ms` (countdowns).
export function useNow(ms = 1000) {
  const [now, setNow] = useState(Date.now());
  useInterval(() => setNow(Date.now()), ms);
  return now;
}

export function useDebounced(value, ms) {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const id = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(id);
  }, [value, ms]);
  return debounced;
}

export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

// A unique id for label/field pairs.
let counter = 0;
export const uid = (prefix = "f") => `${prefix}-${++counter}`;

// -- toasts -------------------------------------------------------------------------------

const toastListeners = new Set();
export function toast(message, kind = "info") {
  for (const listener of toastListeners) listener({ message, kind, id: uid("t") });
}
export function Toasts() {
  const [items, setItems] = useState([]);
  useEffect(() => {
    const listener = (item) => {
      setItems((now) => [...now.slice(-3), item]);
      setTimeout(() => setItems((now) => now.filter((i) => i.id !== item.id)), 5000);
    };
    toastListeners.add(listener);
    return () => toastListeners.delete(listener);
  }, []);
  return html`<div class="toasts" role="status" aria-live="polite">
    ${items.map((i) => html`<div key=${i.id} class=${`toast toast-${i.kind}`}>${i.message}</div>`)}
  </div>`;
}

export function ErrorNote({ error, onRetry }) {
  if (!error) return null;
  return html`<div class="error-note" role="alert">
    <span>${error.message || String(error)}</span>
    ${onRetry && html`<button type="button" class="btn small" onClick=${onRetry}>Retry</button>`}
  </div>`;
}

export function Spinner({ label = "Loading" }) {
  return html`<div class="loading" role="status"><span class="spinner" aria-hidden="true"></span>${label}…</div>`;
}

// A collapsible, copyable JSON viewer.
export function JsonView({ value, label = "JSON", open = false }) {
  const text = JSON.stringify(value, null, 2);
  return html`<details class="json" open=${open}>
    <summary>${label}</summary>
    <button type="button" class="btn small copy" onClick=${async () => toast((await copy(text)) ? "Copied" : "Copy failed")}
      aria-label=${`Copy ${label}`}>Copy</button>
    <pre>${text}</pre>
  </details>`;
}
