// The task list: search and filters, badges, countdowns, quick and bulk actions, live updates.
//
// Live updates poll (every POLL_MS, only while the tab is visible): runs are written to the
// database by the worker, another process, so a server push would itself have to poll the
// database (SQLite has no LISTEN/NOTIFY); two small keyset reads per poll are cheaper.
import { Confirm } from "./dialog.js";
import {
  ACTION_LABELS,
  Badge,
  ErrorNote,
  Spinner,
  TYPE_LABELS,
  api,
  get,
  html,
  post,
  query,
  relative,
  toast,
  useDebounced,
  useEffect,
  useNow,
  useRef,
  useState,
} from "./lib.js";

const POLL_MS = 1000;
const PAGE = 50;

function useVisible() {
  const [visible, setVisible] = useState(!document.hidden);
  useEffect(() => {
    const on = () => setVisible(!document.hidden);
    document.addEventListener("visibilitychange", on);
    return () => document.removeEventListener("visibilitychange", on);
  }, []);
  return visible;
}

function successRate(task) {
  if (!task.run_count) return null;
  return Math.round((100 * (task.run_count - task.failure_count)) / task.run_count);
}

function NextRun({ task, now }) {
  if (task.type === "trigger") {
    const kind = task.trigger?.kind;
    return html`<span class="muted">on ${kind === "event" ? `event ${task.trigger.event}` : kind}</span>`;
  }
  if (task.status !== "active" || !task.next_run_at) return html`<span class="muted">—</span>`;
  return html`<time datetime=${task.next_run_at} title=${new Date(task.next_run_at).toLocaleString()}>
    ${relative(task.next_run_at, now)}</time>`;
}

function Row({ task, now, running, selected, onSelect, onAction }) {
  const rate = successRate(task);
  const name = task.name;
  const can = {
    pause: task.status === "active",
    resume: task.status === "paused",
  };
  return html`<tr class=${selected ? "selected" : ""}>
    <td class="check"><input type="checkbox" aria-label=${`Select ${name}`} checked=${selected}
      onChange=${(e) => onSelect(task.id, e.target.checked)} /></td>
    <td class="name">
      <button type="button" class="link" onClick=${() => onAction("edit", task)}>${name}</button>
      ${task.description && html`<div class="muted small clip">${task.description}</div>`}
      ${task.tags?.length > 0 && html`<div class="tags">${task.tags.map((t) => html`<span class="tag">${t}</span>`)}</div>`}
    </td>
    <td><span class=${`badge type-${task.type}`}>${TYPE_LABELS[task.type]}</span>
      <div class="muted small">${ACTION_LABELS[task.action?.type] || task.action?.type}</div></td>
    <td><${Badge} status=${task.status} /></td>
    <td><${NextRun} task=${task} now=${now} /></td>
    <td>
      ${running > 0
        ? html`<span class="badge status-running">running${running > 1 ? ` ×${running}` : ""}</span>`
        : task.last_status
          ? html`<span class="sr-only">last run </span><${Badge} status=${task.last_status} />`
          : html`<span class="muted">never run</span>`}
      ${task.last_run_at && html`<div class="muted small">${relative(task.last_run_at, now)}</div>`}
    </td>
    <td class="num">${rate === null ? html`<span class="muted">—</span>` : html`<span title=${`${task.run_count} runs, ${task.failure_count} failed`}>${rate}%</span>`}</td>
    <td class="actions"><div class="row-actions">
      ${(can.pause || can.resume) &&
      html`<button type="button" class="btn small" aria-label=${`${can.pause ? "Pause" : "Resume"} ${name}`}
        onClick=${() => onAction(can.pause ? "pause" : "resume", task)}>${can.pause ? "Pause" : "Resume"}</button>`}
      <button type="button" class="btn small" aria-label=${`Run now ${name}`} onClick=${() => onAction("run", task)}>Run now</button>
      <button type="button" class="btn small" aria-label=${`History ${name}`} onClick=${() => onAction("history", task)}>History</button>
      <button type="button" class="btn small" aria-label=${`Edit ${name}`} onClick=${() => onAction("edit", task)}>Edit</button>
      <button type="button" class="btn small danger-text" aria-label=${`Delete ${name}`} onClick=${() => onAction("delete", task)}>Delete</button>
    </div></td>
  </tr>`;
}

function EmptyState({ onNew, filtered }) {
  if (filtered) {
    return html`<div class="empty"><h2>No task matches these filters</h2><p class="muted">Clear the search or the filters to see every task.</p></div>`;
  }
  return html`<div class="empty">
    <h2>No tasks yet</h2>
    <p>A task runs an action (an HTTP call, a Claude prompt, an email, code, a scrape, a report,
      a file operation, Google Workspace, or a chain of steps) once, on a schedule, or when a
      webhook, an event or an email arrives. Temporal runs it durably and retries it honestly.</p>
    <button type="button" class="btn primary" onClick=${onNew}>Create your first task</button>
    <p class="muted small">Tip: press <kbd>n</kbd> for a new task and <kbd>?</kbd> for every shortcut. The REST API is documented at <a href="/docs">/docs</a>.</p>
  </div>`;
}

export function TaskList({ onNew, onEdit, onHistory, changed }) {
  const [q, setQ] = useState("");
  const [status, setStatus] = useState("");
  const [type, setType] = useState("");
  const [tag, setTag] = useState("");
  const [items, setItems] = useState(null);
  const [cursor, setCursor] = useState(null);
  const [error, setError] = useState(null);
  const [running, setRunning] = useState({});
  const [selected, setSelected] = useState(new Set());
  const [confirm, setConfirm] = useState(null);
  const [busy, setBusy] = useState(false);
  const visible = useVisible();
  const now = useNow(1000);
  const search = useDebounced(q, 250);
  const tagFilter = useDebounced(tag, 250);
  const filters = { q: search.trim(), status, type, tag: tagFilter.trim() };
  const key = JSON.stringify(filters);
  const loaded = useRef(PAGE);
  const generation = useRef(0);
  const polling = useRef(false);

  const refresh = async (reset = false) => {
    if (!reset && polling.current) return; // the last poll has not answered yet
    polling.current = true;
    const mine = reset ? ++generation.current : generation.current;
    if (reset) loaded.current = PAGE;
    const limit = Math.min(200, Math.max(PAGE, loaded.current));
    try {
      const [page, runs] = await Promise.all([
        get(`/api/tasks${query({ ...filters, limit })}`),
        get(`/api/executions${query({ status: "running", limit: 200 })}`),
      ]);
      if (mine !== generation.current) return; // the filters changed meanwhile
      setItems((old) => (old && !reset && old.length > limit ? [...page.items, ...old.slice(limit)] : page.items));
      if (reset || loaded.current <= 200) setCursor(page.next_cursor);
      const counts = {};
      for (const run of runs.items) counts[run.task_id] = (counts[run.task_id] || 0) + 1;
      setRunning(counts);
      setError(null);
    } catch (e) {
      if (mine === generation.current) setError(e);
    } finally {
      polling.current = false;
    }
  };

  useEffect(() => {
    setItems(null);
    setSelected(new Set());
    refresh(true);
  }, [key]);
  useEffect(() => {
    if (changed) refresh(false); // a dialog saved: refresh in place (the focus goes back to a row)
  }, [changed]);
  useEffect(() => {
    if (!visible) return undefined;
    const id = setInterval(() => refresh(false), POLL_MS);
    return () => clearInterval(id);
  }, [key, visible]);

  const loadMore = async () => {
    const mine = generation.current;
    try {
      const page = await get(`/api/tasks${query({ ...filters, limit: PAGE, cursor })}`);
      if (mine !== generation.current) return; // the filters changed meanwhile: not this list's page
      generation.current += 1; // a poll that started before this page must not reset the cursor
      setItems((old) => {
        const known = new Set(old.map((t) => t.id));
        return [...old, ...page.items.filter((t) => !known.has(t.id))];
      });
      setCursor(page.next_cursor);
      loaded.current += PAGE;
    } catch (e) {
      setError(e);
    }
  };

  const act = async (kind, task) => {
    if (kind === "edit") return onEdit(task);
    if (kind === "history") return onHistory(task);
    if (kind === "delete") {
      return setConfirm({
        title: `Delete ${task.name}?`,
        message: "Its schedule and history go too. This cannot be undone.",
        run: async () => {
          await api("DELETE", `/api/tasks/${task.id}`);
          toast(`Deleted ${task.name}`);
          document.getElementById("task-search")?.focus(); // its row, and its button, are gone
        },
      });
    }
    try {
      if (kind === "run") {
        await post(`/api/tasks/${task.id}/run`);
        toast(`Started ${task.name}`);
      } else {
        await post(`/api/tasks/${task.id}/${kind}`);
        toast(`${kind === "pause" ? "Paused" : "Resumed"} ${task.name}`);
      }
    } catch (e) {
      toast(`${task.name}: ${e.message}`, "error");
    }
    refresh(false);
  };

  const bulk = async (kind) => {
    const ids = [...selected];
    const run = async () => {
      setBusy(true);
      try {
        const { results } = await post(`/api/tasks/bulk-${kind}`, { ids });
        const failed = results.filter((r) => !r.ok);
        toast(
          failed.length
            ? `${results.length - failed.length} done, ${failed.length} refused: ${failed[0].error}`
            : `${kind === "delete" ? "Deleted" : kind === "pause" ? "Paused" : "Resumed"} ${results.length} task${results.length > 1 ? "s" : ""}`,
          failed.length ? "error" : "info",
        );
        setSelected(new Set());
      } catch (e) {
        toast(e.message, "error");
      } finally {
        setBusy(false);
        refresh(false);
      }
    };
    if (kind === "delete") {
      setConfirm({
        title: `Delete ${ids.length} task${ids.length > 1 ? "s" : ""}?`,
        message: "Their schedules and histories go too. This cannot be undone.",
        run,
      });
    } else run();
  };

  const onSelect = (id, on) =>
    setSelected((old) => {
      const next = new Set(old);
      on ? next.add(id) : next.delete(id);
      return next;
    });
  const allSelected = items && items.length > 0 && items.every((t) => selected.has(t.id));
  const filtered = Boolean(filters.q || status || type || filters.tag);

  return html`<section class="tasks" aria-labelledby="tasks-title">
    <div class="toolbar">
      <h1 id="tasks-title">Tasks</h1>
      <div class="filters">
        <label class="field inline"><span>Search</span>
          <input id="task-search" type="search" value=${q} placeholder="Name or description"
            aria-keyshortcuts="/" onInput=${(e) => setQ(e.target.value)} /></label>
        <label class="field inline"><span>Status</span>
          <select value=${status} onChange=${(e) => setStatus(e.target.value)}>
            <option value="">All</option>
            ${["active", "paused", "completed", "failed"].map((s) => html`<option value=${s}>${s}</option>`)}
          </select></label>
        <label class="field inline"><span>Type</span>
          <select value=${type} onChange=${(e) => setType(e.target.value)}>
            <option value="">All</option>
            ${Object.entries(TYPE_LABELS).map(([v, l]) => html`<option value=${v}>${l}</option>`)}
          </select></label>
        <label class="field inline"><span>Tag</span>
          <input type="text" value=${tag} size="10" onInput=${(e) => setTag(e.target.value)} /></label>
      </div>
      ${items && items.length > 0 &&
      html`<label class="narrow-only"><input type="checkbox" checked=${allSelected}
        onChange=${(e) => setSelected(e.target.checked ? new Set(items.map((t) => t.id)) : new Set())} /> Select all</label>`}
    </div>
    ${selected.size > 0 &&
    html`<div class="bulkbar" role="region" aria-label="Bulk actions">
      <span>${selected.size} selected</span>
      <button type="button" class="btn small" disabled=${busy} onClick=${() => bulk("pause")}>Pause selected</button>
      <button type="button" class="btn small" disabled=${busy} onClick=${() => bulk("resume")}>Resume selected</button>
      <button type="button" class="btn small danger" disabled=${busy} onClick=${() => bulk("delete")}>Delete selected</button>
      <button type="button" class="btn small" onClick=${() => setSelected(new Set())}>Clear selection</button>
    </div>`}
    <${ErrorNote} error=${error} onRetry=${() => refresh(true)} />
    ${items === null
      ? !error && html`<${Spinner} label="Loading tasks" />`
      : items.length === 0
        ? html`<${EmptyState} onNew=${onNew} filtered=${filtered} />`
        : html`<div class="table-wrap"><table class="task-table">
            <caption class="sr-only">Your tasks, newest first</caption>
            <thead><tr>
              <th class="check"><input type="checkbox" aria-label="Select all" checked=${allSelected}
                onChange=${(e) => setSelected(e.target.checked ? new Set(items.map((t) => t.id)) : new Set())} /></th>
              <th scope="col">Name</th><th scope="col">Type</th><th scope="col">Status</th>
              <th scope="col">Next run</th><th scope="col">Last run</th><th scope="col" class="num">Success</th>
              <th scope="col"><span class="sr-only">Actions</span></th>
            </tr></thead>
            <tbody>
              ${items.map((task) => html`<${Row} key=${task.id} task=${task} now=${now}
                running=${running[task.id] || 0} selected=${selected.has(task.id)}
                onSelect=${onSelect} onAction=${act} />`)}
            </tbody>
          </table></div>
          ${cursor && html`<button type="button" class="btn load-more" onClick=${loadMore}>Load more tasks</button>`}`}
    ${confirm &&
    html`<${Confirm} title=${confirm.title} message=${confirm.message}
      onCancel=${() => setConfirm(null)}
      onConfirm=${async () => {
        const { run } = confirm;
        setConfirm(null);
        try {
          await run();
        } catch (e) {
          toast(e.message, "error");
        }
        refresh(false);
      }} />`}
  </section>`;
}
