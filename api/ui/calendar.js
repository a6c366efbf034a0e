// The calendar: a month of past runs (by status) and upcoming runs (as Temporal will fire
// them), with the days on which a DST change makes a task's schedule skip or double a run.
import {
  html,
  useState,
  useEffect,
  useRef,
  useMemo,
  useCallback,
  get,
  post,
  query,
  formatTime,
  useInterval,
  useNow,
  uid,
  toast,
  ErrorNote,
  Spinner,
  browserZone,
  specOf,
  statusWord,
} from "./lib.js";
import { Dialog } from "./dialog.js";

const POLL_MS = 10000;
const TASKS_MAX_AGE_MS = 60000;
// Upcoming runs cost the server a Temporal call per active task: a poll reuses them this
// long (past runs, which is what a poll is for, are read every time).
const UPCOMING_MAX_AGE_MS = 60000;
const TASK_PAGES_MAX = 50;
const PAST_PAGES_MAX = 5;
const PAST_PAGE_SIZE = 200;
const UPCOMING_LIMIT = 1000;
const CHIPS_PER_DAY = 3;
const DELETED = "deleted task";
const ICONS = {
  upcoming: "○",
  running: "●",
  succeeded: "✓",
  failed: "✗",
  skipped: "↷",
  cancelled: "⊘",
  timed_out: "✗",
};
const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const ISO_DAY = /^(\d{4}-\d{2}-\d{2}):/;

// Validation reports by task id and updated_at, for the page's life (they need Temporal).
const validations = new Map();

const pad = (n) => String(n).padStart(2, "0");
const dayKey = (date) => `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
const clock = (date) =>
  date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

export function dayLabel(date) {
  const weekday = date.toLocaleString("en-US", { weekday: "long" });
  const month = date.toLocaleString("en-US", { month: "long" });
  return `${weekday} ${date.getDate()} ${month} ${date.getFullYear()}`;
}

// The weeks (Monday first) that hold a month, as local dates; `end` is the day after the last.
function buildGrid(year, month) {
  const firstOfMonth = new Date(year, month, 1);
  const lead = (firstOfMonth.getDay() + 6) % 7;
  const lastOfMonth = new Date(year, month + 1, 0);
  const tail = 6 - ((lastOfMonth.getDay() + 6) % 7);
  const first = new Date(year, month, 1 - lead);
  const count = lead + lastOfMonth.getDate() + tail;
  const days = [];
  for (let i = 0; i < count; i += 1) days.push(new Date(year, month, 1 - lead + i));
  const end = new Date(year, month, lastOfMonth.getDate() + tail + 1);
  return { first, end, days };
}

function isDstCandidate(task) {
  return task.status === "active" && task.type === "recurring" && !!(task.schedule && task.schedule.cron);
}

// The task's warnings that name a day ("2027-03-28: the DST change in ... skips runs: ...").
function dstWarnings(task) {
  const key = `${task.id}|${task.updated_at}`;
  let pending = validations.get(key);
  if (!pending) {
    pending = post("/api/tasks/validate", specOf(task)).then((report) =>
      (report.warnings || []).filter((w) => ISO_DAY.test(w))
    );
    pending.catch(() => validations.delete(key)); // asked again on a later refresh
    validations.set(key, pending);
  }
  return pending;
}

export function CalendarView({ onOpenTask }) {
  const today = new Date(useNow(60000));
  const [month, setMonth] = useState(() => ({ year: today.getFullYear(), month: today.getMonth() }));
  const grid = useMemo(() => buildGrid(month.year, month.month), [month.year, month.month]);
  const [data, setData] = useState(null); // {past, upcoming, pastTruncated, upcomingTruncated}
  const [tasks, setTasks] = useState(null); // Map id -> task
  const [dst, setDst] = useState({}); // task id -> {key, warnings}
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);
  const [moreDay, setMoreDay] = useState(null); // the day key whose runs are all shown
  const headingId = useRef(uid("cal")).current;
  const cache = useRef({ byId: new Map(), fetchedAt: 0, missing: new Set() });
  const current = useRef(null); // the load in flight: its AbortController
  const upcomingKept = useRef({ first: null, fetchedAt: 0, items: [] });

  const fetchTasks = useCallback(async (signal) => {
    const byId = new Map();
    let cursor = null;
    let pages = 0;
    do {
      const page = await get("/api/tasks" + query({ limit: 200, cursor }), { signal });
      for (const task of page.items) byId.set(task.id, task);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < TASK_PAGES_MAX);
    const known = cache.current;
    for (const id of byId.keys()) known.missing.delete(id);
    known.byId = byId;
    known.fetchedAt = Date.now();
    setTasks(byId);
  }, []);

  const fetchPast = async (from, to, signal) => {
    const items = [];
    let cursor = null;
    let pages = 0;
    do {
      const page = await get(
        "/api/executions" +
          query({ from: from.toISOString(), to: to.toISOString(), limit: PAST_PAGE_SIZE, cursor }),
        { signal }
      );
      items.push(...page.items);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < PAST_PAGES_MAX);
    return { items, truncated: !!cursor };
  };

  const load = useCallback(
    async ({ quiet = false } = {}) => {
      if (quiet && current.current) return; // a poll never interrupts a load
      if (current.current) current.current.abort();
      const controller = new AbortController();
      const { signal } = controller;
      current.current = controller;
      if (!quiet) setLoading(true);
      try {
        const now = new Date();
        const upFrom = now > grid.first ? now : grid.first;
        const pastTo = now < grid.end ? now : grid.end;
        const known = cache.current;
        const stale = !known.fetchedAt || Date.now() - known.fetchedAt > TASKS_MAX_AGE_MS;
        const kept = upcomingKept.current;
        const reuse = quiet && kept.first === grid.first.getTime() && Date.now() - kept.fetchedAt < UPCOMING_MAX_AGE_MS;
        const [upcoming, past] = await Promise.all([
          reuse
            ? { items: kept.items.filter((u) => new Date(u.at) >= now) }
            : upFrom < grid.end
              ? get(
                  "/api/tasks/upcoming" +
                    query({ from: upFrom.toISOString(), to: grid.end.toISOString(), limit: UPCOMING_LIMIT }),
                  { signal }
                )
              : { items: [] },
          grid.first < pastTo ? fetchPast(grid.first, pastTo, signal) : { items: [], truncated: false },
          stale ? fetchTasks(signal) : null,
        ]);
        // A run of a task not known yet: read the tasks again; still unknown means deleted.
        const ids = [...past.items.map((e) => e.task_id), ...upcoming.items.map((u) => u.task_id)];
        const unknown = ids.filter((id) => !known.byId.has(id) && !known.missing.has(id));
        if (unknown.length && !stale) await fetchTasks(signal);
        for (const id of unknown) if (!known.byId.has(id)) known.missing.add(id);
        if (current.current !== controller) return;
        if (!reuse) upcomingKept.current = { first: grid.first.getTime(), fetchedAt: Date.now(), items: upcoming.items };
        setData({
          past: past.items,
          upcoming: upcoming.items,
          pastTruncated: past.truncated,
          upcomingTruncated: upcoming.items.length >= UPCOMING_LIMIT,
        });
        setError(null);
      } catch (err) {
        if (err && err.name === "AbortError") return;
        if (current.current === controller) setError(err);
      } finally {
        if (current.current === controller) {
          current.current = null;
          setLoading(false);
        }
      }
    },
    [grid, fetchTasks]
  );

  // A new month: its own data, shown once loaded.
  useEffect(() => {
    setData(null);
    setError(null);
    setMoreDay(null);
    load();
    return () => {
      if (current.current) current.current.abort();
      current.current = null;
    };
  }, [load]);

  useInterval(() => {
    if (typeof document !== "undefined" && document.hidden) return;
    load({ quiet: true });
  }, POLL_MS);

  // DST warnings of each active recurring cron task, validated one at a time, once per version.
  useEffect(() => {
    if (!tasks) return undefined;
    let cancelled = false;
    (async () => {
      for (const task of tasks.values()) {
        if (cancelled) return;
        if (!isDstCandidate(task)) continue;
        const key = `${task.id}|${task.updated_at}`;
        try {
          const warnings = await dstWarnings(task);
          if (cancelled) return;
          setDst((now) => (now[task.id] && now[task.id].key === key ? now : { ...now, [task.id]: { key, warnings } }));
        } catch {
          // No marks for this task; a later refresh asks again.
        }
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [tasks]);

  const dstByDay = useMemo(() => {
    const byDay = new Map();
    if (!tasks) return byDay;
    for (const task of tasks.values()) {
      const found = dst[task.id];
      if (!isDstCandidate(task) || !found || found.key !== `${task.id}|${task.updated_at}`) continue;
      for (const text of found.warnings) {
        const day = text.match(ISO_DAY)[1];
        if (!byDay.has(day)) byDay.set(day, []);
        byDay.get(day).push({ task: task.name, text });
      }
    }
    return byDay;
  }, [tasks, dst]);

  const runsByDay = useMemo(() => {
    const byDay = new Map();
    if (!data) return byDay;
    const add = (run) => {
      const key = dayKey(run.at);
      if (!byDay.has(key)) byDay.set(key, []);
      byDay.get(key).push(run);
    };
    for (const e of data.past) {
      const task = tasks && tasks.get(e.task_id);
      add({
        key: `e-${e.id}`,
        kind: "past",
        taskId: e.task_id,
        name: task ? task.name : DELETED,
        deleted: !task,
        status: e.status,
        at: new Date(e.started_at),
      });
    }
    for (const u of data.upcoming) {
      const task = tasks && tasks.get(u.task_id);
      add({
        key: `u-${u.task_id}-${u.at}`,
        kind: "upcoming",
        taskId: u.task_id,
        name: task ? task.name : u.task_name,
        deleted: false,
        status: "upcoming",
        at: new Date(u.at),
        zone: u.timezone,
      });
    }
    for (const runs of byDay.values()) runs.sort((a, b) => a.at - b.at);
    return byDay;
  }, [data, tasks]);

  const open = (run) => {
    if (run.deleted) {
      toast("That task was deleted.");
      return;
    }
    setMoreDay(null);
    if (onOpenTask) onOpenTask(run.taskId);
  };

  const shift = (by) =>
    setMonth(({ year, month: m }) => {
      const date = new Date(year, m + by, 1);
      return { year: date.getFullYear(), month: date.getMonth() };
    });
  const goToday = () => {
    const now = new Date();
    setMonth({ year: now.getFullYear(), month: now.getMonth() });
  };

  const title = new Date(month.year, month.month, 1).toLocaleString("en-US", { month: "long", year: "numeric" });
  const todayKey = dayKey(today);
  const inMonth = (date) => date.getMonth() === month.month;
  const monthRuns = grid.days.reduce(
    (sum, date) => sum + (inMonth(date) ? (runsByDay.get(dayKey(date)) || []).length : 0),
    0
  );
  const moreDate = moreDay && grid.days.find((date) => dayKey(date) === moreDay);

  return html`<section class="calendar" aria-labelledby=${headingId}>
    <div class="cal-bar">
      <h2 id=${headingId} class="cal-title" aria-live="polite">${title}</h2>
      <div class="cal-nav">
        <button type="button" class="btn" aria-label="Previous month" title="Previous month"
          onClick=${() => shift(-1)}><span aria-hidden="true">‹</span></button>
        <button type="button" class="btn" onClick=${goToday}>Today</button>
        <button type="button" class="btn" aria-label="Next month" title="Next month"
          onClick=${() => shift(1)}><span aria-hidden="true">›</span></button>
      </div>
      ${loading && html`<${Spinner} label="Loading runs" />`}
    </div>
    ${error && html`<${ErrorNote} error=${error} onRetry=${() => load()} />`}
    ${data && (data.pastTruncated || data.upcomingTruncated) &&
    html`<p class="cal-note">
      ${data.pastTruncated && `Showing the newest ${PAST_PAGES_MAX * PAST_PAGE_SIZE} past runs. `}
      ${data.upcomingTruncated && `Showing the first ${UPCOMING_LIMIT} upcoming runs.`}
    </p>`}
    ${data && !error && monthRuns === 0 && html`<p class="cal-empty" role="status">No runs this month</p>`}
    <div class="cal-weekdays" aria-hidden="true">
      ${WEEKDAYS.map((day) => html`<span key=${day}>${day.slice(0, 3)}</span>`)}
    </div>
    <ol class="cal-grid" aria-labelledby=${headingId}>
      ${grid.days.map((date) => {
        const key = dayKey(date);
        const runs = runsByDay.get(key) || [];
        const marks = dstByDay.get(key) || [];
        const isToday = key === todayKey;
        const classes = ["cal-day"];
        if (!inMonth(date)) classes.push("other-month");
        if (isToday) classes.push("today");
        if (!runs.length && !marks.length && !isToday) classes.push("quiet-day");
        const label = dayLabel(date);
        const extra = runs.length - CHIPS_PER_DAY;
        return html`<li key=${key} class=${classes.join(" ")} aria-label=${label}
          aria-current=${isToday ? "date" : undefined}>
          <div class="cal-day-head">
            <span class="cal-num" aria-hidden="true"><span class="cal-wd">${label.slice(0, 3)} </span>${date.getDate()}</span>
            ${marks.length > 0 && html`<${DstMark} marks=${marks} />`}
          </div>
          ${runs.length > 0 &&
          html`<ul class="cal-runs">
            ${runs.slice(0, CHIPS_PER_DAY).map((run) => html`<li key=${run.key}><${Chip} run=${run} onOpen=${open} /></li>`)}
          </ul>`}
          ${extra > 0 &&
          html`<button type="button" class="cal-more" aria-haspopup="dialog" onClick=${() => setMoreDay(key)}>+${extra} more</button>`}
        </li>`;
      })}
    </ol>
    ${moreDate &&
    html`<${Dialog} title=${dayLabel(moreDate)} onClose=${() => setMoreDay(null)}>
      <div class="dialog-body">
        ${(dstByDay.get(moreDay) || []).map(
          (mark, index) => html`<p key=${index} class="dst-text"><span aria-hidden="true">⚠ </span>${mark.task}: ${mark.text}</p>`
        )}
        <ul class="cal-day-list">
          ${(runsByDay.get(moreDay) || []).map((run) => html`<li key=${run.key}><${Chip} run=${run} onOpen=${open} /></li>`)}
        </ul>
      </div>
    <//>`}
  </section>`;
}

function Chip({ run, onOpen }) {
  const time = clock(run.at);
  const word = run.kind === "upcoming" ? "upcoming" : statusWord(run.status);
  const className = run.kind === "upcoming" ? "chip upcoming" : `chip status-${run.status}`;
  let detail = `${run.name}, ${formatTime(run.at.toISOString())}, ${word}`;
  if (run.zone && run.zone !== browserZone()) detail += ` (${formatTime(run.at.toISOString(), { zone: run.zone })})`;
  if (run.deleted) detail += " (the task was deleted)";
  return html`<button type="button" class=${className + (run.deleted ? " deleted" : "")}
    title=${detail} aria-disabled=${run.deleted ? "true" : undefined} onClick=${() => onOpen(run)}>
    <span class="chip-icon" aria-hidden="true">${ICONS[run.status] || "•"}</span>
    <span class="chip-name">${run.name}</span>${" "}
    <span class="chip-time">${time}</span>
    <span class="sr-only">${` ${word}`}</span>
  </button>`;
}

// ⚠ on a day a DST change makes a schedule skip or double a run; activating it shows the text.
function DstMark({ marks }) {
  const [open, setOpen] = useState(false);
  const popId = useRef(uid("dst")).current;
  const text = marks.map((m) => `${m.task}: ${m.text}`).join("; ");
  return html`<span class="dst-wrap" onKeyDown=${(e) => {
    if (e.key === "Escape" && open) {
      e.stopPropagation();
      setOpen(false);
    }
  }}>
    <button type="button" class="dst-mark" aria-label=${`DST warning: ${text}`} title=${text}
      aria-expanded=${open ? "true" : "false"} aria-controls=${popId} onClick=${() => setOpen(!open)}>⚠</button>
    <span id=${popId} class="dst-pop" role="note" hidden=${!open}>
      ${marks.map((m, index) => html`<span key=${index} class="dst-line"><strong>${m.task}</strong>: ${m.text}</span>`)}
    </span>
  </span>`;
}
