// The create/edit wizard: Basics, Schedule, Action, Options; the API's 422s land on fields.
import { ActionStep, DEFAULT_CONFIGS } from "./actions.js";
import { Confirm, Dialog } from "./dialog.js";
import { Field, JsonField, ListField, NumberField, errorsAt, invalidJson } from "./form.js";
import {
  ACTION_LABELS,
  ApiError,
  ErrorNote,
  browserZone,
  copy,
  get,
  html,
  api,
  post,
  specOf,
  toast,
  useDebounced,
  useEffect,
  useRef,
  useState,
  validZone,
  zones,
} from "./lib.js";

const STEPS = ["Basics", "Schedule", "Action", "Options"];
const STEP_OF = { name: 0, description: 0, tags: 0, type: 0, schedule: 1, trigger: 1, action: 2 };
const RETRY_DEFAULTS = { max_attempts: 3, initial_interval_seconds: 1, backoff_coefficient: 2, max_interval_seconds: 300, jitter: true };
const SCHEDULE_DEFAULTS = { timezone: browserZone(), overlap: "skip", catchup_window_seconds: 60, jitter_seconds: 0 };

// An instant shown as the wall time of a zone, for <input type="datetime-local">.
function wallTime(iso, zone) {
  if (!iso) return "";
  if (!validZone(zone)) zone = "UTC";
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

// A stored instant (with an offset) as the zone's wall time; a typed wall time as it is.
function shownWallTime(value, zone) {
  if (!value) return "";
  return /(Z|[+-]\d\d:\d\d)$/.test(value) ? wallTime(value, zone || "UTC") : value.slice(0, 16);
}

// Every leaf of a value by dotted path, to tell which fields an edit changed.
function leaves(value, path = "", out = {}) {
  if (value && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) leaves(item, path ? `${path}.${key}` : key, out);
  } else out[path] = value;
  return out;
}

function newDraft() {
  const inAnHour = new Date(Date.now() + 3600e3);
  return {
    name: "",
    description: "",
    tags: [],
    type: "recurring",
    schedule: { ...SCHEDULE_DEFAULTS, cron: "0 9 * * 1-5" },
    _runAt: wallTime(inAnHour.toISOString(), browserZone()),
    action: { type: "webhook", config: structuredClone(DEFAULT_CONFIGS.webhook) },
    retry: { ...RETRY_DEFAULTS },
    timeout_seconds: 300,
    notify: { on: ["failure"], email: [], webhook_url: null },
  };
}

function draftOf(task) {
  const draft = specOf(task);
  if (draft.type === "one_time" && draft.schedule?.run_at) {
    draft._runAt = wallTime(draft.schedule.run_at, draft.schedule.timezone || "UTC");
    // Sent back as stored (seconds, and the right side of a DST fold) unless edited.
    draft._runAtStored = { shown: draft._runAt, zone: draft.schedule.timezone, run_at: draft.schedule.run_at };
  }
  return draft;
}

// The body sent to the API: only what the chosen type uses.
export function bodyOf(draft) {
  const { _runAt, _runAtStored: stored, _webhookAuth, ...body } = draft;
  if (body.type === "trigger") {
    delete body.schedule;
  } else {
    delete body.trigger;
    delete body.concurrency;
    const schedule = { ...body.schedule };
    if (body.type === "one_time") {
      const untouched = stored && stored.shown === _runAt && stored.zone === schedule.timezone;
      schedule.run_at = untouched ? stored.run_at : _runAt ? `${_runAt.length === 16 ? `${_runAt}:00` : _runAt}` : null;
      delete schedule.cron;
      delete schedule.interval_seconds;
      delete schedule.start_at;
      delete schedule.end_at;
    } else {
      delete schedule.run_at;
      const mode = schedule._mode || (schedule.interval_seconds != null && !schedule.cron ? "interval" : "cron");
      if (mode === "interval") delete schedule.cron;
      else delete schedule.interval_seconds;
    }
    delete schedule._mode;
    for (const name of ["start_at", "end_at"]) if (!schedule[name]) delete schedule[name];
    body.schedule = schedule;
  }
  if (!body.condition) delete body.condition;
  if (!body.notify) delete body.notify;
  return body;
}

// "schedule.cron" from ["body", "schedule", "cron"].
function errorMap(errors) {
  const map = {};
  for (const { loc, msg } of errors || []) {
    // Drop "body", and the tag pydantic puts after "action" or "trigger" (their unions').
    const parts = (loc || []).filter(
      (part, i, all) =>
        !(i === 0 && part === "body") &&
        !(all[i - 1] === "action" && part in ACTION_LABELS) &&
        !(all[i - 1] === "trigger" && ["webhook", "event", "email"].includes(part)),
    );
    const path = parts.join(".");
    map[path] = map[path] ? `${map[path]}; ${msg}` : msg;
  }
  return map;
}

function stepWithError(map) {
  let first = STEPS.length;
  for (const path of Object.keys(map)) first = Math.min(first, STEP_OF[path.split(".")[0]] ?? 3);
  return first === STEPS.length ? null : first;
}

// -- Basics --------------------------------------------------------------------------------

const TYPES = [
  ["one_time", "One-time", "Runs once, at a date and time.", "①"],
  ["recurring", "Recurring", "Runs on a cron schedule or every N seconds.", "↻"],
  ["trigger", "Trigger", "Runs when a webhook, an event or an email arrives.", "↯"],
];

function Basics({ draft, set, errors }) {
  const setType = (type) => {
    const next = { ...draft, type };
    if (type === "trigger" && !next.trigger) next.trigger = { kind: "webhook" };
    if (type !== "trigger" && !next.schedule) next.schedule = { ...SCHEDULE_DEFAULTS, cron: "0 9 * * 1-5" };
    if (type === "trigger" && next.concurrency == null) next.concurrency = 1;
    set(next);
  };
  return html`
    <${Field} label="Name" value=${draft.name} onValue=${(v) => set({ ...draft, name: v })} path="name" errors=${errors}
      maxlength="200" autofocus required placeholder="Nightly backup" />
    <${Field} label="Description" as="textarea" rows="2" value=${draft.description} path="description" errors=${errors}
      onValue=${(v) => set({ ...draft, description: v })} />
    <${ListField} label="Tags" value=${draft.tags} path="tags" errors=${errors} hint="Comma-separated, e.g. reports, billing"
      onValue=${(v) => set({ ...draft, tags: v })} />
    <fieldset class="cards types">
      <legend>Type</legend>
      ${TYPES.map(
        ([value, label, blurb, icon]) => html`<label class=${`card-choice ${draft.type === value ? "chosen" : ""}`}>
          <input type="radio" name="task-type" value=${value} checked=${draft.type === value} aria-label=${label}
            aria-describedby=${`type-${value}`} onChange=${() => setType(value)} />
          <span class="icon" aria-hidden="true">${icon}</span>
          <span class="card-title">${label}</span>
          <span class="muted small" id=${`type-${value}`}>${blurb}</span>
        </label>`,
      )}
    </fieldset>
    ${errorsAt(errors, "type").map((m) => html`<p class="field-error" role="alert">${m}</p>`)}`;
}

// -- Schedule ------------------------------------------------------------------------------

const PRESETS = {
  minutes: { label: "Every N minutes", cron: ({ n }) => `*/${n} * * * *` },
  hourly: { label: "Hourly", cron: ({ minute }) => `${minute} * * * *` },
  daily: { label: "Daily at", cron: ({ h, m }) => `${m} ${h} * * *` },
  weekdays: { label: "Weekdays at", cron: ({ h, m }) => `${m} ${h} * * 1-5` },
  weekly: { label: "Weekly", cron: ({ h, m, dow }) => `${m} ${h} * * ${dow}` },
  monthly: { label: "Monthly", cron: ({ h, m, dom }) => `${m} ${h} ${dom} * *` },
};
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

function ZoneField({ value, onValue, errors, path }) {
  return html`<${Field} label="Time zone" value=${value} onValue=${onValue} path=${path} errors=${errors}
    list="zone-list" autocomplete="off" hint=${`IANA name; this browser is in ${browserZone()}.`} />
    <datalist id="zone-list">${zones().map((z) => html`<option value=${z} />`)}</datalist>`;
}

function CronBuilder({ schedule, setSchedule, errors }) {
  const [preset, setPreset] = useState("");
  const [params, setParams] = useState({ n: 15, minute: 0, time: "09:00", dow: 1, dom: 1 });
  const apply = (name, values) => {
    if (!name) return;
    const [h, m] = values.time.split(":").map(Number);
    setSchedule({ ...schedule, cron: PRESETS[name].cron({ ...values, h, m }) });
  };
  const change = (name, value) => {
    const next = { ...params, [name]: value };
    setParams(next);
    apply(preset, next);
  };
  return html`<div class="cron-builder">
    <div class="row">
      <${Field} label="Preset" as="select" value=${preset} onValue=${(v) => (setPreset(v), apply(v, params))}>
        <option value="">Custom expression</option>
        ${Object.entries(PRESETS).map(([v, p]) => html`<option value=${v}>${p.label}</option>`)}<//>
      ${preset === "minutes" && html`<${NumberField} label="Every (minutes)" min="1" max="59" value=${params.n} onValue=${(v) => change("n", v || 1)} />`}
      ${preset === "hourly" && html`<${NumberField} label="At minute" min="0" max="59" value=${params.minute} onValue=${(v) => change("minute", v || 0)} />`}
      ${["daily", "weekdays", "weekly", "monthly"].includes(preset) &&
      html`<${Field} label="At" type="time" value=${params.time} onValue=${(v) => change("time", v || "00:00")} />`}
      ${preset === "weekly" &&
      html`<${Field} label="Day of week" as="select" value=${String(params.dow)} onValue=${(v) => change("dow", Number(v))}>
        ${DAYS.map((d, i) => html`<option value=${String(i)}>${d}</option>`)}<//>`}
      ${preset === "monthly" && html`<${NumberField} label="Day of month" min="1" max="31" value=${params.dom} onValue=${(v) => change("dom", v || 1)} />`}
    </div>
    <${Field} label="Cron expression" value=${schedule.cron} onValue=${(v) => (setPreset(""), setSchedule({ ...schedule, cron: v }))}
      path="schedule.cron" errors=${errors} class="mono" spellcheck="false" autocomplete="off"
      hint="minute hour day-of-month month day-of-week, e.g. 0 9 * * 1-5" />
  </div>`;
}

// Next runs, the schedule in words and DST warnings, from /api/tasks/validate as you type.
function Preview({ draft }) {
  const body = bodyOf({
    ...draft,
    name: draft.name || "preview",
    type: draft.type,
    action: { type: "webhook", config: { url: "https://example.com/" } },
    condition: null,
  });
  const wanted = useDebounced(JSON.stringify(body), 350);
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    const controller = new AbortController();
    post("/api/tasks/validate", JSON.parse(wanted), { signal: controller.signal })
      .then((r) => (setReport(r), setError(null)))
      .catch((e) => e.name !== "AbortError" && setError(e));
    return () => controller.abort();
  }, [wanted]);
  const typed = draft.schedule?.timezone || "UTC";
  const zone = validZone(typed) ? typed : "UTC";
  return html`<section class="preview" aria-label="Schedule preview" aria-live="polite">
    ${error && html`<${ErrorNote} error=${error} />`}
    ${report && !report.valid &&
    html`<ul class="preview-errors">${report.errors.map((e) => html`<li>${e.msg}</li>`)}</ul>`}
    ${report && report.valid &&
    html`${report.description && html`<p class="in-words"><strong>${report.description}</strong></p>`}
      <h3>Next runs</h3>
      ${report.next_runs.length
        ? html`<ol class="next-runs">${(report.next_runs_local || report.next_runs).map(
            (at) => html`<li><time datetime=${at}>${new Date(at).toLocaleString(undefined, { timeZone: zone, weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" })}</time></li>`,
          )}</ol>`
        : html`<p class="muted">No run in the preview window.</p>`}
      ${report.warnings.length > 0 &&
      html`<div class="warnings" role="note"><h3>Warnings</h3><ul>${report.warnings.map((w) => html`<li>⚠ ${w}</li>`)}</ul></div>`}`}
  </section>`;
}

// An existing webhook trigger task's URLs: listed (no secrets), revoked, or a new one made.
function Webhooks({ taskId, auth, onHook }) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const load = () =>
    get(`/api/tasks/${taskId}/webhooks`).then((r) => (setItems(r.items.filter((w) => !w.revoked_at)), setError(null))).catch(setError);
  useEffect(() => {
    load();
  }, [taskId]);
  const create = async () => {
    try {
      onHook(await post(`/api/tasks/${taskId}/webhook`, { auth }));
    } catch (e) {
      setError(e);
    }
  };
  const revoke = async (hook) => {
    try {
      await api("DELETE", `/api/webhooks/${hook.webhook_id}`);
      toast("Webhook revoked");
      load();
    } catch (e) {
      setError(e);
    }
  };
  return html`<section class="group" aria-labelledby="hooks-title">
    <h3 id="hooks-title">Webhook URLs</h3>
    <${ErrorNote} error=${error} onRetry=${load} />
    ${items && !items.length && html`<p class="muted">None yet: deliveries have nowhere to go.</p>`}
    ${items && items.length > 0 &&
    html`<ul class="hooks">${items.map(
      (hook) => html`<li key=${hook.webhook_id}><code>${hook.url}</code> <span class="muted small">${hook.auth}, ${hook.use_count} deliveries</span>
        <button type="button" class="btn small danger-text" aria-label=${`Revoke ${hook.webhook_id}`} onClick=${() => revoke(hook)}>Revoke</button></li>`,
    )}</ul>`}
    <button type="button" class="btn small" onClick=${create}>Create webhook URL</button>
  </section>`;
}

function TriggerSettings({ draft, set, errors, taskId, onHook }) {
  const trigger = draft.trigger || { kind: "webhook" };
  const setTrigger = (next) => set({ ...draft, trigger: next });
  const field = (name, label, extra = {}) => html`<${extra.number ? NumberField : Field} label=${label} value=${trigger[name]}
    onValue=${(v) => setTrigger({ ...trigger, [name]: v === "" ? undefined : v })} path=${`trigger.${name}`} errors=${errors} ...${extra.attrs || {}} />`;
  const choose = (kind) =>
    setTrigger(
      kind === "webhook" ? { kind } : kind === "event" ? { kind, event: "" }
        : { kind, imap_host: "", username: "", password_secret: "", folder: "INBOX", imap_security: "ssl", poll_seconds: 60 },
    );
  return html`<fieldset class="cards triggers">
      <legend>Trigger</legend>
      ${[["webhook", "Webhook", "An HTTP POST to a signed URL"], ["event", "Event", "A named event, from the API or another task"], ["email", "Email", "A new message in an IMAP folder"]].map(
        ([kind, label, blurb]) => html`<label class=${`card-choice ${trigger.kind === kind ? "chosen" : ""}`}>
          <input type="radio" name="trigger-kind" value=${kind} checked=${trigger.kind === kind} aria-label=${label} aria-describedby=${`trig-${kind}`} onChange=${() => choose(kind)} />
          <span class="card-title">${label}</span><span class="muted small" id=${`trig-${kind}`}>${blurb}</span>
        </label>`,
      )}
    </fieldset>
    ${trigger.kind === "webhook" &&
    html`<${Field} label="Webhook authentication" as="select" value=${draft._webhookAuth || "hmac"}
        onValue=${(v) => set({ ...draft, _webhookAuth: v })}
        hint="A new webhook's URL and secret are shown once. hmac: X-Cronpilot-Signature t=…,v1=…; github: X-Hub-Signature-256; token: the secret itself in X-Cronpilot-Token.">
        <option value="hmac">HMAC signature (recommended)</option><option value="github">GitHub style</option><option value="token">Token header</option>
      <//>
      ${taskId && html`<${Webhooks} taskId=${taskId} auth=${draft._webhookAuth || "hmac"} onHook=${onHook} />`}`}
    ${trigger.kind === "event" && field("event", "Event name", { attrs: { placeholder: "order.created", hint: "Starts on POST /api/events with this name, or task.succeeded / task.failed of your other tasks." } })}
    ${trigger.kind === "email" &&
    html`<div class="row">${field("imap_host", "IMAP host")}${field("imap_port", "IMAP port", { number: true })}
        <${Field} label="IMAP security" as="select" value=${trigger.imap_security || "ssl"} onValue=${(v) => setTrigger({ ...trigger, imap_security: v })} path="trigger.imap_security" errors=${errors}>
          <option value="ssl">TLS (ssl)</option><option value="starttls">STARTTLS</option><option value="none">none (plain text)</option><//></div>
      <div class="row">${field("username", "Username")}${field("password_secret", "Password secret", { attrs: { hint: "The name of a secret (PUT /api/secrets/NAME)." } })}</div>
      <div class="row">${field("folder", "Folder")}${field("poll_seconds", "Poll every (seconds)", { number: true })}</div>
      <div class="row">${field("from_contains", "From contains")}${field("subject_contains", "Subject contains")}</div>`}`;
}

function Schedule({ draft, set, errors, taskId, onHook }) {
  const schedule = draft.schedule || { ...SCHEDULE_DEFAULTS };
  const setSchedule = (next) => set({ ...draft, schedule: next });
  if (draft.type === "trigger") {
    return html`${errorsAt(errors, "trigger").map((m) => html`<p class="field-error" role="alert">${m}</p>`)}
      <${TriggerSettings} draft=${draft} set=${set} errors=${errors} taskId=${taskId} onHook=${onHook} />`;
  }
  const scheduleErrors = errorsAt(errors, "schedule").map((m) => html`<p class="field-error" role="alert">${m}</p>`);
  const zone = html`<${ZoneField} value=${schedule.timezone} path="schedule.timezone" errors=${errors}
    onValue=${(v) => setSchedule({ ...schedule, timezone: v })} />`;
  if (draft.type === "one_time") {
    return html`${scheduleErrors}<div class="row">
        <${Field} label="Run at" type="datetime-local" value=${draft._runAt} path="schedule.run_at" errors=${errors}
          onValue=${(v) => set({ ...draft, _runAt: v })} hint="The wall time in the time zone beside it." />
        ${zone}
      </div>
      <${Preview} draft=${draft} />`;
  }
  const mode = schedule._mode || (schedule.interval_seconds != null && !schedule.cron ? "interval" : "cron");
  const setMode = (next) =>
    setSchedule({ ...schedule, _mode: next, ...(next === "interval" && schedule.interval_seconds == null ? { interval_seconds: 3600 } : {}), ...(next === "cron" && !schedule.cron ? { cron: "0 9 * * 1-5" } : {}) });
  return html`${scheduleErrors}<fieldset class="segmented"><legend>Repeat</legend>
      <label><input type="radio" name="repeat" checked=${mode === "cron"} onChange=${() => setMode("cron")} /> Cron schedule</label>
      <label><input type="radio" name="repeat" checked=${mode === "interval"} onChange=${() => setMode("interval")} /> Interval</label>
    </fieldset>
    ${mode === "cron"
      ? html`<${CronBuilder} schedule=${schedule} setSchedule=${setSchedule} errors=${errors} />`
      : html`<${NumberField} label="Interval (seconds)" min="1" value=${schedule.interval_seconds} path="schedule.interval_seconds" errors=${errors}
          onValue=${(v) => setSchedule({ ...schedule, interval_seconds: v })} />`}
    ${zone}
    <div class="row">
      <${Field} label="Start at" type="datetime-local" value=${shownWallTime(schedule.start_at, schedule.timezone)} path="schedule.start_at" errors=${errors}
        onValue=${(v) => setSchedule({ ...schedule, start_at: v || null })} hint="Optional, in the time zone above." />
      <${Field} label="End at" type="datetime-local" value=${shownWallTime(schedule.end_at, schedule.timezone)} path="schedule.end_at" errors=${errors}
        onValue=${(v) => setSchedule({ ...schedule, end_at: v || null })} hint="Optional." />
    </div>
    <${Preview} draft=${{ ...draft, schedule: { ...schedule, _mode: mode } }} />`;
}

// -- Options -------------------------------------------------------------------------------

const OVERLAP = {
  skip: "Skip the new run while one is running",
  buffer_one: "Run one more after the current run",
  buffer_all: "Run every missed run in turn",
  cancel_other: "Cancel the running one, start the new one",
  terminate_other: "Terminate the running one, start the new one",
  allow_all: "Run them in parallel",
};

function Options({ draft, set, errors }) {
  const retry = { ...RETRY_DEFAULTS, ...(draft.retry || {}) };
  const setRetry = (name) => (v) => set({ ...draft, retry: { ...retry, [name]: v } });
  const schedule = draft.schedule || {};
  const setSchedule = (name) => (v) => set({ ...draft, schedule: { ...schedule, [name]: v } });
  const notify = draft.notify || { on: [], email: [], webhook_url: null };
  const setNotify = (next) => set({ ...draft, notify: next });
  const toggleOn = (what) => (checked) =>
    setNotify({ ...notify, on: checked ? [...new Set([...(notify.on || []), what])] : (notify.on || []).filter((o) => o !== what) });
  return html`<fieldset class="group"><legend>Retries and timeout</legend>
      <div class="row">
        <${NumberField} label="Max attempts" min="1" max="100" value=${retry.max_attempts} onValue=${setRetry("max_attempts")} path="retry.max_attempts" errors=${errors} />
        <${NumberField} label="Initial interval (seconds)" min="0" step="any" value=${retry.initial_interval_seconds} onValue=${setRetry("initial_interval_seconds")} path="retry.initial_interval_seconds" errors=${errors} />
        <${NumberField} label="Backoff coefficient" min="1" step="any" value=${retry.backoff_coefficient} onValue=${setRetry("backoff_coefficient")} path="retry.backoff_coefficient" errors=${errors} />
        <${NumberField} label="Max interval (seconds)" min="1" step="any" value=${retry.max_interval_seconds} onValue=${setRetry("max_interval_seconds")} path="retry.max_interval_seconds" errors=${errors} />
      </div>
      <${ListField} label="Non-retryable errors" value=${retry.non_retryable_errors} onValue=${setRetry("non_retryable_errors")} path="retry.non_retryable_errors" errors=${errors}
        hint="Error types that fail at once, comma-separated (e.g. HttpStatusError)." />
      <${NumberField} label="Timeout (seconds)" min="1" value=${draft.timeout_seconds} onValue=${(v) => set({ ...draft, timeout_seconds: v })} path="timeout_seconds" errors=${errors}
        hint="Per attempt." />
    </fieldset>
    ${draft.type === "trigger"
      ? html`<fieldset class="group"><legend>Deliveries</legend>
          <${NumberField} label="Concurrent runs" min="1" value=${draft.concurrency ?? 1} onValue=${(v) => set({ ...draft, concurrency: v })} path="concurrency" errors=${errors}
            hint="Deliveries running at once; the rest wait in order." /></fieldset>`
      : html`<fieldset class="group"><legend>Overlap and catch-up</legend>
          <div class="row">
            <${Field} label="Overlap policy" as="select" value=${schedule.overlap || "skip"} onValue=${setSchedule("overlap")} path="schedule.overlap" errors=${errors}>
              ${Object.entries(OVERLAP).map(([v, l]) => html`<option value=${v}>${v}: ${l}</option>`)}<//>
            <${NumberField} label="Catch-up window (seconds)" min="10" value=${schedule.catchup_window_seconds ?? 60} onValue=${setSchedule("catchup_window_seconds")} path="schedule.catchup_window_seconds" errors=${errors}
              hint="Runs missed while Temporal was down still start within this window." />
            <${NumberField} label="Jitter (seconds)" min="0" value=${schedule.jitter_seconds ?? 0} onValue=${setSchedule("jitter_seconds")} path="schedule.jitter_seconds" errors=${errors} />
          </div></fieldset>`}
    <fieldset class="group"><legend>Condition</legend>
      <${JsonField} label="Condition (JSON)" value=${draft.condition} rows="4" onValue=${(v) => set({ ...draft, condition: v })} path="condition" errors=${errors}
        hint='Run only when it holds, e.g. {"path": "payload.action", "op": "eq", "value": "opened"} or {"all": [...]}; paths under payload, last, now.' />
    </fieldset>
    <fieldset class="group"><legend>Notifications</legend>
      <div class="row">
        <${Field} label="Notify on failure" type="checkbox" value=${notify.on?.includes("failure")} onValue=${toggleOn("failure")} />
        <${Field} label="Notify on success" type="checkbox" value=${notify.on?.includes("success")} onValue=${toggleOn("success")} />
      </div>
      <${ListField} label="Notify email addresses" value=${notify.email} onValue=${(v) => setNotify({ ...notify, email: v })} path="notify.email" errors=${errors} />
      <${Field} label="Notify webhook URL" type="url" value=${notify.webhook_url} onValue=${(v) => setNotify({ ...notify, webhook_url: v || null })} path="notify.webhook_url" errors=${errors} />
      ${errorsAt(errors, "notify").map((m) => html`<p class="field-error" role="alert">${m}</p>`)}
    </fieldset>
    <details class="review" open>
      <summary>Review: the JSON that will be sent</summary>
      <pre aria-label="Request JSON" tabindex="0">${JSON.stringify(bodyOf(draft), null, 2)}</pre>
    </details>`;
}

// -- the new webhook, shown once ---------------------------------------------------------------

function WebhookCreated({ hook, onClose }) {
  const sign =
    hook.auth === "hmac"
      ? `body='{"hello":"world"}'\nt=$(date +%s)\nsig=$(printf '%s' "$t.$body" | openssl dgst -sha256 -hmac '${hook.secret}' -hex | sed 's/^.* //')\ncurl -X POST '${hook.url}' -H 'Content-Type: application/json' \\\n  -H "X-Cronpilot-Signature: t=$t,v1=$sig" -d "$body"`
      : hook.auth === "github"
        ? `body='{"hello":"world"}'\nsig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac '${hook.secret}' -hex | sed 's/^.* //')\ncurl -X POST '${hook.url}' -H 'Content-Type: application/json' \\\n  -H "X-Hub-Signature-256: sha256=$sig" -d "$body"`
        : `curl -X POST '${hook.url}' -H 'X-Cronpilot-Token: ${hook.secret}' \\\n  -H 'Content-Type: application/json' -d '{"hello":"world"}'`;
  const copyIt = async (what, text) => toast((await copy(text)) ? `${what} copied` : "Copy failed: select and copy it by hand");
  return html`<${Dialog} title="Webhook created" onClose=${onClose} wide>
    <div class="dialog-body">
      <p><strong>Copy the secret now: it is shown only once.</strong></p>
      <div class="copyline"><label for="hook-url">Webhook URL</label><input id="hook-url" readonly value=${hook.url} />
        <button type="button" class="btn small" onClick=${() => copyIt("URL", hook.url)}>Copy URL</button></div>
      <div class="copyline"><label for="hook-secret">Secret</label><input id="hook-secret" readonly value=${hook.secret} class="mono" />
        <button type="button" class="btn small" onClick=${() => copyIt("Secret", hook.secret)}>Copy secret</button></div>
      <h3>Signing example</h3>
      <pre class="mono" tabindex="0" aria-label="Signing example">${sign}</pre>
      <button type="button" class="btn small" onClick=${() => copyIt("Example", sign)}>Copy example</button>
    </div>
    <footer class="dialog-foot"><button type="button" class="btn primary" onClick=${onClose}>Done</button></footer>
  <//>`;
}

// -- the wizard ------------------------------------------------------------------------------

export function Wizard({ task, onClose, onSaved }) {
  const editing = Boolean(task);
  const [draft, setDraft] = useState(() => (task ? draftOf(task) : newDraft()));
  const [step, setStep] = useState(0);
  const [errors, setErrors] = useState({});
  const [failure, setFailure] = useState(null);
  const [saving, setSaving] = useState(false);
  const [hook, setHook] = useState(null);
  const [tasks, setTasks] = useState([]);
  const [discarding, setDiscarding] = useState(false);
  const body = useRef(null);
  const initial = useRef(JSON.stringify(bodyOf(draft)));
  // Escape, Cancel or the backdrop with unsaved changes asks first.
  const requestClose = () => (JSON.stringify(bodyOf(draft)) === initial.current ? onClose() : setDiscarding(true));
  useEffect(() => {
    get("/api/tasks?limit=200").then((page) => setTasks(page.items.filter((t) => t.id !== task?.id))).catch(() => {});
  }, []);
  useEffect(() => {
    // Each step starts at its top with the focus on its first field.
    body.current?.scrollTo?.(0, 0);
    const node = body.current;
    const first = node?.querySelector("[aria-invalid=true]") || node?.querySelector("input, select, textarea");
    first?.focus();
  }, [step]);
  // An edit clears the errors of the fields it changed: a fixed field stops saying it is wrong.
  const set = (next) => {
    if (Object.keys(errors).length) {
      const before = leaves(bodyOf(draft));
      const after = leaves(bodyOf(next));
      const changed = (path) =>
        Object.keys({ ...before, ...after }).some(
          (leaf) => (leaf === path || leaf.startsWith(`${path}.`)) && before[leaf] !== after[leaf],
        ) || (path === "schedule.run_at" && draft._runAt !== next._runAt);
      const kept = Object.fromEntries(Object.entries(errors).filter(([path]) => !changed(path)));
      if (Object.keys(kept).length !== Object.keys(errors).length) {
        setErrors(kept);
        if (!Object.keys(kept).length) setFailure(null);
      }
    }
    setDraft(next);
  };
  const save = async () => {
    if (invalidJson.size) {
      const [path, label] = [...invalidJson.entries()][0];
      setFailure({ message: `${label} is not valid JSON: fix it, or empty it.`, items: [] });
      const target = STEP_OF[path.split(".")[0]] ?? 3;
      if (target !== step) setStep(target);
      return;
    }
    setSaving(true);
    setFailure(null);
    let saved;
    try {
      const payload = bodyOf(draft);
      saved = editing ? await api("PUT", `/api/tasks/${task.id}`, payload) : await post("/api/tasks", payload);
    } catch (e) {
      setSaving(false);
      if (e instanceof ApiError && e.status === 422) {
        const map = errorMap(e.errors);
        setErrors(map);
        const target = stepWithError(map);
        // Every error, with where it is; the fields show theirs too.
        const items = Object.entries(map).map(([path, msg]) => `${path || "task"}: ${msg}`);
        setFailure({ message: "The task was not saved. Please fix:", items });
        if (target !== null && target !== step) setStep(target);
      } else setFailure(e);
      return;
    }
    onSaved(saved);
    if (!editing && saved.type === "trigger" && saved.trigger?.kind === "webhook") {
      try {
        setHook(await post(`/api/tasks/${saved.id}/webhook`, { auth: draft._webhookAuth || "hmac" }));
        return;
      } catch (e) {
        toast(`Created ${saved.name}, but not its webhook (${e.message}): make one from Edit.`, "error");
      }
    } else toast(editing ? `Saved ${saved.name}` : `Created ${saved.name}`);
    onClose();
  };
  if (hook) return html`<${WebhookCreated} hook=${hook} onClose=${editing ? () => setHook(null) : onClose} />`;
  const title = editing ? "Edit task" : "New task";
  const stepErrors = (i) => Object.keys(errors).some((path) => (STEP_OF[path.split(".")[0]] ?? 3) === i);
  const Body = [Basics, Schedule, ActionStep, Options][step];
  const last = step === STEPS.length - 1;
  return html`<${Dialog} title=${title} onClose=${requestClose} wide className="wizard">
    <form class="wizard-form" onSubmit=${(e) => (e.preventDefault(), last ? save() : setStep(step + 1))} novalidate>
      <nav aria-label="Steps"><ol class="steps">
        ${STEPS.map((name, i) => html`<li><button type="button" class=${`step ${i === step ? "current" : ""} ${stepErrors(i) ? "has-errors" : ""}`}
          aria-current=${i === step ? "step" : undefined} onClick=${() => setStep(i)}>
          <span class="step-no" aria-hidden="true">${i + 1}</span>${name}${stepErrors(i) ? html`<span class="sr-only"> (has errors)</span>` : ""}</button></li>`)}
      </ol></nav>
      <div class="dialog-body" ref=${body}>
        <h3 class="sr-only">${STEPS[step]}</h3>
        ${failure &&
        html`<div class="error-note" role="alert"><div>${failure.message}
          ${failure.items?.length > 0 && html`<ul>${failure.items.map((item) => html`<li>${item}</li>`)}</ul>`}</div></div>`}
        ${step === 2
          ? html`<${ActionStep} action=${draft.action} errors=${errors} tasks=${tasks} onAction=${(action) => set({ ...draft, action })} />`
          : html`<${Body} draft=${draft} set=${set} errors=${errors} taskId=${task?.id} onHook=${setHook} />`}
      </div>
      <footer class="dialog-foot">
        <button type="button" class="btn" onClick=${requestClose}>Cancel</button>
        <span class="spacer"></span>
        ${step > 0 && html`<button type="button" class="btn" onClick=${() => setStep(step - 1)}>Back</button>`}
        ${last
          ? html`<button type="submit" class="btn primary" disabled=${saving}>${editing ? "Save task" : "Create task"}</button>`
          : html`<button type="submit" class="btn primary">Next</button>`}
      </footer>
    </form>
  <//>
  ${discarding &&
  html`<${Confirm} title="Discard your changes?" message="What you entered in this wizard is not saved."
    onCancel=${() => setDiscarding(false)} onConfirm=${onClose} />`}`;
}
