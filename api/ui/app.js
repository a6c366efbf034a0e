// The app: sign-in, the shell (navigation, shortcuts), and which view and dialog are open.
import { CalendarView } from "./calendar.js";
import { Dialog } from "./dialog.js";
import { HistoryDialog } from "./history.js";
import { SecretsView } from "./secrets.js";
import { ApiError, Toasts, auth, get, html, post, render, useEffect, useErrorBoundary, useLayoutEffect, useState } from "./lib.js";
import { TaskList } from "./tasks.js";
import { Wizard } from "./wizard.js";

// `cronpilot dev` prints `/#token=...`: exchange it at once and take it out of the address bar.
async function exchangeDevToken() {
  const match = location.hash.match(/[#&]token=([^&]+)/);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    const { api_key } = await post("/api/dev/sign-in", { token: decodeURIComponent(match[1]) });
    auth.set(api_key);
    return null;
  } catch (error) {
    return error.status === 401
      ? "This sign-in link is out of date: use the one cronpilot dev printed last, or paste the API key."
      : `The sign-in link did not work (${error.message}). Paste the API key instead.`;
  }
}

function SignIn({ onSignedIn, notice }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    auth.set(key.trim());
    try {
      const me = await get("/api/me");
      onSignedIn(me);
    } catch (e) {
      auth.clear();
      setError(e.status === 401 ? "That API key is not valid." : e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="sign-in">
    <form class="card" onSubmit=${submit}>
      <h1><img class="logo" src="/ui/favicon.svg" alt="" width="22" height="22" /> Cronpilot</h1>
      <p class="muted">Sign in with an API key. <code>cronpilot dev</code> prints one, and a link that signs you in.</p>
      <label for="api-key">API key</label>
      <input id="api-key" type="password" autocomplete="off" spellcheck="false" required
        value=${key} onInput=${(e) => setKey(e.target.value)} autofocus />
      ${error && html`<p class="error-note" role="alert">${error}</p>`}
      <button class="btn primary" type="submit" disabled=${busy}>Sign in</button>
      <p class="muted small">The key stays in this tab (sessionStorage) until you sign out or close it.</p>
    </form>
  </main>`;
}

const SHORTCUTS = [
  ["n", "New task"],
  ["/", "Search tasks"],
  ["c", "Calendar"],
  ["t", "Tasks"],
  ["?", "This list"],
  ["Esc", "Close a dialog"],
];

function Shortcuts({ onClose }) {
  return html`<${Dialog} title="Keyboard shortcuts" onClose=${onClose}>
    <div class="dialog-body">
      <dl class="shortcuts">
        ${SHORTCUTS.map(([key, what]) => html`<div><dt><kbd>${key}</kbd></dt><dd>${what}</dd></div>`)}
      </dl>
    </div>
    <footer class="dialog-foot"><button type="button" class="btn primary" onClick=${onClose}>Close</button></footer>
  <//>`;
}

const viewOf = () =>
  location.hash.startsWith("#/calendar") ? "calendar" : location.hash.startsWith("#/secrets") ? "secrets" : "tasks";

function Shell({ me, onSignOut }) {
  const [view, setView] = useState(viewOf());
  // {kind: "wizard", task?} | {kind: "history", task} | {kind: "shortcuts"}
  const [dialog, setDialog] = useState(null);
  const [changed, setChanged] = useState(0); // bumps when a dialog saved something
  useEffect(() => {
    const onHash = () => setView(viewOf());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  // Listening from the first paint on (a layout effect): a key pressed at once is not lost.
  useLayoutEffect(() => {
    const onKey = (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const target = event.target;
      const typing =
        target.closest &&
        target.closest('input:not([type="checkbox"]):not([type="radio"]), textarea, select, [contenteditable], .CodeMirror');
      if (typing || document.querySelector(".backdrop")) return;
      if (event.key === "n") {
        event.preventDefault();
        setDialog({ kind: "wizard" });
      } else if (event.key === "/") {
        event.preventDefault();
        location.hash = "#/tasks";
        setTimeout(() => document.getElementById("task-search")?.focus(), 0);
      } else if (event.key === "c") {
        location.hash = "#/calendar";
      } else if (event.key === "t") {
        location.hash = "#/tasks";
      } else if (event.key === "?") {
        setDialog({ kind: "shortcuts" });
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);
  const openTask = async (taskId) => {
    try {
      setDialog({ kind: "wizard", task: await get(`/api/tasks/${taskId}`) });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) setDialog({ kind: "gone" });
    }
  };
  const close = () => setDialog(null);
  const saved = () => setChanged((n) => n + 1);
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <span class="brand"><img class="logo" src="/ui/favicon.svg" alt="" width="22" height="22" /> Cronpilot</span>
      <nav aria-label="Main">
        <a href="#/tasks" aria-current=${view === "tasks" ? "page" : undefined}>Tasks</a>
        <a href="#/calendar" aria-current=${view === "calendar" ? "page" : undefined}>Calendar</a>
        <a href="#/secrets" aria-current=${view === "secrets" ? "page" : undefined}>Secrets</a>
      </nav>
      <span class="spacer"></span>
      <button type="button" class="btn primary" onClick=${() => setDialog({ kind: "wizard" })}
        aria-keyshortcuts="n">New task</button>
      <button type="button" class="icon-btn" aria-label="Keyboard shortcuts"
        onClick=${() => setDialog({ kind: "shortcuts" })}>?</button>
      <span class="user muted" title="Signed in as">${me.name}</span>
      <button type="button" class="btn" onClick=${onSignOut}>Sign out</button>
    </header>
    <main id="main" tabindex="-1"><${Guard}>
      ${view === "tasks"
        ? html`<${TaskList} changed=${changed}
            onNew=${() => setDialog({ kind: "wizard" })}
            onEdit=${(task) => setDialog({ kind: "wizard", task })}
            onHistory=${(task) => setDialog({ kind: "history", task })} />`
        : view === "calendar"
          ? html`<${CalendarView} onOpenTask=${openTask} />`
          : html`<${SecretsView} />`}
    <//></main>
    ${dialog?.kind === "wizard" &&
    html`<${Guard}><${Wizard} task=${dialog.task} onClose=${close} onSaved=${saved} /><//>`}
    ${dialog?.kind === "history" && html`<${Guard}><${HistoryDialog} task=${dialog.task} onClose=${close} /><//>`}
    ${dialog?.kind === "shortcuts" && html`<${Shortcuts} onClose=${close} />`}
    ${dialog?.kind === "gone" &&
    html`<${Dialog} title="Task not found" onClose=${close}>
      <div class="dialog-body"><p>This task was deleted.</p></div>
      <footer class="dialog-foot"><button type="button" class="btn" onClick=${close}>Close</button></footer>
    <//>`}
    <${Toasts} />
  </div>`;
}

// A bug in one view shows a note with a way out, instead of a frozen page.
function Guard({ children }) {
  const [error, reset] = useErrorBoundary((e) => console.error(e));
  if (!error) return children;
  return html`<div class="error-note" role="alert">
    <span>Something went wrong in this view: ${String(error.message || error)}</span>
    <button type="button" class="btn small" onClick=${reset}>Try again</button>
    <button type="button" class="btn small" onClick=${() => location.reload()}>Reload</button>
  </div>`;
}

function App() {
  const [me, setMe] = useState(undefined); // undefined: checking; null: signed out
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    auth.onUnauthorized = () => {
      auth.clear();
      setNotice("Your session ended (the API key was refused). Sign in again.");
      setMe(null);
    };
    const start = async () => {
      const problem = await exchangeDevToken();
      if (problem) setNotice(problem);
      if (!auth.key()) return setMe(null);
      try {
        setMe(await get("/api/me"));
      } catch (error) {
        if (error.status !== 401) setNotice(error.message);
        setMe(null);
      }
    };
    start();
    // The dev link pasted into a tab already showing the UI changes only the fragment.
    const onHash = () => /[#&]token=/.test(location.hash) && start();
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  if (me === undefined) return html`<p class="boot">Loading Cronpilot…</p>`;
  if (me === null) return html`<${SignIn} notice=${notice} onSignedIn=${(user) => (setNotice(null), setMe(user))} />`;
  const signOut = () => {
    auth.clear();
    setNotice(null);
    setMe(null);
  };
  return html`<${Shell} me=${me} onSignOut=${signOut} />`;
}

render(html`<${App} />`, document.getElementById("app"));
