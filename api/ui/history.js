// A task's run history: a live timeline of its executions, each expandable to its logs,
// result, error and chain steps, with Run now, Cancel and Rerun.
import {
  html,
  useState,
  useEffect,
  useRef,
  useCallback,
  get,
  post,
  query,
  formatTime,
  formatDuration,
  Badge,
  useInterval,
  useNow,
  copy,
  uid,
  toast,
  ErrorNote,
  Spinner,
  JsonView,
  TRIGGER_LABELS,
  statusWord,
} from "./lib.js";
import { Dialog } from "./dialog.js";

const STATUSES = ["running", "succeeded", "failed", "skipped", "cancelled", "timed_out"];
const PAGE_SIZE = 20;
const POLL_RUNNING_MS = 2000; // while a shown run is running, or just after starting one
const POLL_IDLE_MS = 10000; // otherwise, so scheduled runs still appear
const BURST_MS = 15000; // how long after Run now / Rerun the list polls fast
const DETAIL_POLL_MS = 1500;
const LONG_LINE = 240;

const when = (execution) => formatTime(execution.started_at, { withSeconds: true });
const time = (iso) => new Date(iso).getTime();

// Newest first, as the API orders them: started_at, then id, both descending.
function older(a, b) {
  const ta = time(a.started_at);
  const tb = time(b.started_at);
  return ta < tb || (ta === tb && String(a.id) < String(b.id));
}

// A fresh first page merged with the pages already loaded: the first page wins, and loaded
// runs older than its last one stay (with the cursor after them); runs that left the first
// page's span (say, no longer matching the filter) go.
function merge(previous, page) {
  const fresh = page.items;
  if (!page.next_cursor || !fresh.length || !previous) {
    return { items: fresh, cursor: page.next_cursor };
  }
  const ids = new Set(fresh.map((e) => e.id));
  const last = fresh[fresh.length - 1];
  const rest = previous.items.filter((e) => !ids.has(e.id) && older(e, last));
  return rest.length
    ? { items: [...fresh, ...rest], cursor: previous.cursor }
    : { items: fresh, cursor: page.next_cursor };
}

// The task's numbers (GET /api/tasks/{id}/stats), refreshed with the list.
function Stats({ taskId, tick }) {
  const [stats, setStats] = useState(null);
  useEffect(() => {
    get(`/api/tasks/${encodeURIComponent(taskId)}/stats`).then(setStats).catch(() => {});
  }, [taskId, tick]);
  if (!stats) return null;
  const rate = stats.success_rate === null ? "—" : `${Math.round(stats.success_rate * 1000) / 10}%`;
  const facts = [
    ["Runs", stats.total],
    ["Succeeded", stats.succeeded],
    ["Failed", stats.failed],
    ["Skipped", stats.skipped],
    ["Success rate", rate],
    ["Average", formatDuration(stats.avg_duration_ms === null ? null : Math.round(stats.avg_duration_ms))],
    ["p95", formatDuration(stats.p95_duration_ms)],
    ["Last 24 h", `${stats.last_24h.total} (${stats.last_24h.failed} failed)`],
  ];
  return html`<dl class="task-stats" aria-label="Statistics">
    ${facts.map(([name, value]) => html`<div><dt>${name}</dt><dd>${value}</dd></div>`)}
  </dl>`;
}

export function HistoryDialog({ task, onClose }) {
  const [status, setStatus] = useState("");
  const [list, setList] = useState(null); // {items, cursor} once the first page came
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [more, setMore] = useState({ busy: false, error: null });
  const [starting, setStarting] = useState(false);
  const [burstUntil, setBurstUntil] = useState(0);
  const generation = useRef(0); // a filter change makes older answers moot
  const inFlight = useRef(false);
  const base = `/api/tasks/${encodeURIComponent(task.id)}/executions`;

  const refresh = useCallback(
    async ({ quiet = false } = {}) => {
      if (quiet && inFlight.current) return;
      const mine = generation.current;
      inFlight.current = true;
      if (!quiet) setLoading(true);
      try {
        const page = await get(base + query({ limit: PAGE_SIZE, status }));
        if (mine !== generation.current) return;
        setList((previous) => merge(previous, page));
        setError(null);
      } catch (err) {
        if (mine !== generation.current) return;
        // A failed background poll keeps what is shown; only a first load shows the error.
        if (!quiet) setError(err);
      } finally {
        if (mine === generation.current) {
          inFlight.current = false;
          setLoading(false);
        }
      }
    },
    [base, status]
  );

  useEffect(() => {
    generation.current += 1;
    inFlight.current = false;
    setList(null);
    setError(null);
    setMore({ busy: false, error: null });
    refresh();
  }, [refresh]);

  const items = list ? list.items : [];
  const anyRunning = items.some((e) => e.status === "running");
  const fast = anyRunning || Date.now() < burstUntil;
  useInterval(
    () => {
      if (typeof document !== "undefined" && document.hidden) return;
      refresh({ quiet: true });
    },
    fast ? POLL_RUNNING_MS : POLL_IDLE_MS,
    list !== null
  );
  // Leave the fast pace once a burst is over (the interval above re-arms on the change).
  useEffect(() => {
    if (!burstUntil) return undefined;
    const id = setTimeout(() => setBurstUntil(0), Math.max(0, burstUntil - Date.now()) + 50);
    return () => clearTimeout(id);
  }, [burstUntil]);

  const loadMore = async () => {
    if (!list || !list.cursor || more.busy) return;
    const mine = generation.current;
    setMore({ busy: true, error: null });
    try {
      const page = await get(base + query({ limit: PAGE_SIZE, status, cursor: list.cursor }));
      if (mine !== generation.current) return;
      setList((previous) => {
        const known = new Set(previous.items.map((e) => e.id));
        return {
          items: [...previous.items, ...page.items.filter((e) => !known.has(e.id))],
          cursor: page.next_cursor,
        };
      });
      setMore({ busy: false, error: null });
    } catch (err) {
      if (mine === generation.current) setMore({ busy: false, error: err });
    }
  };

  const started = () => {
    setBurstUntil(Date.now() + BURST_MS);
    refresh({ quiet: true });
  };

  const runNow = async () => {
    setStarting(true);
    try {
      await post(`/api/tasks/${encodeURIComponent(task.id)}/run`);
      toast(`Started a run of ${task.name}`, "success");
      started();
    } catch (err) {
      toast(`Could not start ${task.name}: ${err.message}`, "error");
    } finally {
      setStarting(false);
    }
  };

  const filterId = useRef(uid("history-status")).current;
  const emptyText = status
    ? `No ${statusWord(status)} runs.`
    : "No runs yet. Use Run now to try it.";

  return html`<${Dialog} title=${"History: " + task.name} wide onClose=${onClose}>
    <div class="dialog-body history">
      <div class="history-bar">
        <label class="history-filter" for=${filterId}>
          <span>Status</span>
          <select id=${filterId} aria-label="Filter by status" value=${status}
            onChange=${(e) => setStatus(e.currentTarget.value)}>
            <option value="">all</option>
            ${STATUSES.map((s) => html`<option key=${s} value=${s}>${statusWord(s)}</option>`)}
          </select>
        </label>
        <button type="button" class="btn primary" onClick=${runNow} disabled=${starting}
          aria-label="Run now">${starting ? "Starting…" : "Run now"}</button>
      </div>
      <${Stats} taskId=${task.id} tick=${items.filter((e) => e.status !== "running").length} />
      ${error && html`<${ErrorNote} error=${error} onRetry=${() => refresh()} />`}
      ${list === null && loading && html`<${Spinner} label="Loading runs" />`}
      ${list !== null && !items.length && !error &&
      html`<p class="empty history-empty" role="status">${emptyText}</p>`}
      ${items.length > 0 &&
      html`<ol class="timeline" aria-label=${`Runs of ${task.name}`}>
        ${items.map(
          (execution) =>
            html`<${RunItem} key=${execution.id} execution=${execution} onChanged=${started}
              onRefresh=${() => refresh({ quiet: true })} />`
        )}
      </ol>`}
      ${list && list.cursor &&
      html`<div class="history-more">
        <button type="button" class="btn load-more" onClick=${loadMore} disabled=${more.busy}
          aria-label="Load more">${more.busy ? "Loading…" : "Load more"}</button>
        ${more.error && html`<${ErrorNote} error=${more.error} onRetry=${loadMore} />`}
      </div>`}
    </div>
  <//>`;
}

// A running run's age, ticking.
function Elapsed({ since }) {
  const now = useNow(1000);
  return html`${formatDuration(Math.max(0, now - time(since)))} so far`;
}

function RunItem({ execution, onChanged, onRefresh }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const panelId = useRef(uid("run")).current;
  const running = execution.status === "running";
  const at = when(execution);

  const cancel = async () => {
    setBusy(true);
    try {
      await post(`/api/executions/${encodeURIComponent(execution.id)}/cancel`);
      toast("Cancelling the run…");
      onChanged();
    } catch (err) {
      toast(`Could not cancel: ${err.message}`, "error");
      onRefresh();
    } finally {
      setBusy(false);
    }
  };
  const rerun = async () => {
    setBusy(true);
    try {
      await post(`/api/executions/${encodeURIComponent(execution.id)}/rerun`);
      toast("Started a rerun", "success");
      onChanged();
    } catch (err) {
      toast(`Could not rerun: ${err.message}`, "error");
    } finally {
      setBusy(false);
    }
  };

  return html`<li class=${`run run-${execution.status}`}>
    <div class="run-head">
      <${Badge} status=${execution.status} />
      <dl class="run-facts">
        <div><dt>Trigger</dt><dd>${TRIGGER_LABELS[execution.trigger] || execution.trigger}</dd></div>
        ${execution.scheduled_at &&
        html`<div><dt>Scheduled</dt><dd>${formatTime(execution.scheduled_at)}</dd></div>`}
        <div><dt>Started</dt><dd><time datetime=${execution.started_at}>${at}</time></dd></div>
        <div>
          <dt>Duration</dt>
          <dd>${running ? html`<${Elapsed} since=${execution.started_at} />` : formatDuration(execution.duration_ms)}</dd>
        </div>
        <div><dt>Attempts</dt><dd>${execution.attempts}</dd></div>
      </dl>
    </div>
    ${execution.error &&
    html`<p class="run-error"><span class="run-error-type">${execution.error.type}</span>${" "}${execution.error.message}</p>`}
    ${execution.rerun_of && html`<p class="run-note">A rerun of an earlier run.</p>`}
    <div class="run-actions">
      <button type="button" class="btn small" aria-expanded=${open ? "true" : "false"} aria-controls=${panelId}
        aria-label=${`Details of run ${at}`} onClick=${() => setOpen(!open)}>Details</button>
      ${running
        ? html`<button type="button" class="btn small danger-text" disabled=${busy} onClick=${cancel}
            aria-label=${`Cancel run of ${at}`}>Cancel</button>`
        : html`<button type="button" class="btn small" disabled=${busy} onClick=${rerun}
            aria-label=${`Rerun run of ${at}`}>Rerun</button>`}
      ${execution.temporal && execution.temporal.ui_url &&
      html`<a class="link run-temporal" href=${execution.temporal.ui_url} target="_blank" rel="noopener noreferrer"
        aria-label=${`Open in Temporal: run of ${at}`}>Open in Temporal</a>`}
    </div>
    <div id=${panelId} class="run-details" hidden=${!open}>
      ${open && html`<${RunDetails} id=${execution.id} summaryStatus=${execution.status} />`}
    </div>
  </li>`;
}

function RunDetails({ id, summaryStatus }) {
  const [detail, setDetail] = useState(null);
  const [error, setError] = useState(null);
  const inFlight = useRef(false);

  const load = useCallback(
    async ({ quiet = false } = {}) => {
      if (inFlight.current) return;
      inFlight.current = true;
      try {
        setDetail(await get(`/api/executions/${encodeURIComponent(id)}`));
        setError(null);
      } catch (err) {
        if (!quiet) setError(err);
      } finally {
        inFlight.current = false;
      }
    },
    [id]
  );
  // Again when the list sees the run end, for its final logs and result.
  useEffect(() => {
    load();
  }, [load, summaryStatus]);
  const running = (detail ? detail.status : summaryStatus) === "running";
  useInterval(() => load({ quiet: true }), DETAIL_POLL_MS, running);

  if (error && !detail) return html`<${ErrorNote} error=${error} onRetry=${() => load()} />`;
  if (!detail) return html`<${Spinner} label="Loading run details" />`;
  const logs = detail.logs || [];
  const steps = detail.steps || [];
  return html`<div class="run-detail-body">
    ${error && html`<${ErrorNote} error=${error} onRetry=${() => load()} />`}
    <section class="run-section">
      <h3>Logs</h3>
      ${logs.length
        ? html`<ol class="log-lines">
            ${logs.map((line, index) => html`<${LogLine} key=${index + ":" + line.at} line=${line} index=${index} />`)}
          </ol>`
        : html`<p class="muted-note">${running ? "No log lines yet." : "No log lines."}</p>`}
    </section>
    ${(detail.result !== null && detail.result !== undefined) || detail.error
      ? html`<section class="run-section">
          <h3>Outcome</h3>
          ${detail.result !== null && detail.result !== undefined &&
          html`<${JsonView} value=${detail.result} label="Result" />`}
          ${detail.error && html`<${JsonView} value=${detail.error} label="Error" open />`}
        </section>`
      : null}
    ${steps.length > 0 &&
    html`<section class="run-section">
      <h3>Steps</h3>
      <ol class="run-steps">
        ${steps.map((step, index) => html`<${Step} key=${step.id || index} step=${step} />`)}
      </ol>
    </section>`}
  </div>`;
}

function LogLine({ line, index }) {
  const [full, setFull] = useState(false);
  const message = String(line.message ?? "");
  const lines = message.split("\n");
  const long = message.length > LONG_LINE || lines.length > 3;
  let shown = message;
  if (long && !full) {
    shown = lines.slice(0, 3).join("\n");
    if (shown.length > LONG_LINE) shown = shown.slice(0, LONG_LINE);
    shown += "…";
  }
  const level = line.level || "info";
  return html`<li class=${`log-line log-${level}`}>
    <time class="log-time" datetime=${line.at} title=${line.at}>${formatLogTime(line.at)}</time>
    <span class="log-level">${level}</span>
    <span class="log-msg">${shown}</span>
    ${long &&
    html`<button type="button" class="btn small log-toggle" aria-expanded=${full ? "true" : "false"}
      aria-label=${`${full ? "Shorten" : "Show all of"} log line ${index + 1}`}
      onClick=${() => setFull(!full)}>${full ? "Less" : "More"}</button>`}
  </li>`;
}

function formatLogTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const clock = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  return `${clock}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

function Step({ step }) {
  const hasOutput = step.output !== null && step.output !== undefined;
  return html`<li class=${`run-step run-step-${step.status || "pending"}`}>
    <div class="run-step-head">
      <code class="run-step-id">${step.id}</code>
      <span class="run-step-kind">${(step.kind || "").replaceAll("_", " ")}</span>
      <${Badge} status=${step.status || "pending"} />
      ${step.started_at &&
      html`<span class="run-step-time">${formatTime(step.started_at, { withSeconds: true })}
        ${step.finished_at && html` → ${formatTime(step.finished_at, { withSeconds: true })}`}</span>`}
    </div>
    ${step.resume_url &&
    html`<div class="run-step-resume">
      <span>Resume URL</span>
      <code>${step.resume_url}</code>
      <button type="button" class="btn small" aria-label=${`Copy resume URL of step ${step.id}`}
        onClick=${async () => toast((await copy(step.resume_url)) ? "Copied" : "Copy failed")}>Copy</button>
    </div>`}
    ${hasOutput && html`<${JsonView} value=${step.output} label=${`Output of step ${step.id}`} />`}
    ${step.error && html`<${JsonView} value=${step.error} label=${`Error of step ${step.id}`} open />`}
  </li>`;
}
