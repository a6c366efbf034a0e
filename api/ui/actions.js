// The Action step: the nine action types as cards, a real form per type, a JSON toggle.
import { CodeEditor } from "./editor.js";
import { Field, JsonField, ListField, NumberField, errorsAt } from "./form.js";
import { ACTION_LABELS, html, useState } from "./lib.js";

// Glyphs every system font has (no emoji font needed).
const ICONS = {
  webhook: "⇄",
  ai_prompt: "✦",
  send_email: "✉",
  run_code: "{ }",
  generate_report: "▤",
  web_scrape: "⌕",
  task_chain: "⇉",
  file_operation: "▱",
  google_workspace: "G",
};
const BLURBS = {
  webhook: "Call an HTTP endpoint",
  ai_prompt: "Ask Claude",
  send_email: "Send an email over SMTP",
  run_code: "Run Python or JavaScript",
  generate_report: "An AI report from sources",
  web_scrape: "Extract data from a page",
  task_chain: "Several steps in order",
  file_operation: "Read, write, copy files",
  google_workspace: "Gmail, Sheets, Drive, Calendar",
};

export const SAMPLE_CODE = {
  python: 'import json, sys\n\npayload = json.load(sys.stdin)  # the task\'s input\nprint(json.dumps({"hello": "world", "input": payload}))\n',
  javascript:
    'const input = JSON.parse(require("fs").readFileSync(0, "utf8") || "null");\nconsole.log(JSON.stringify({ hello: "world", input }));\n',
};

export const DEFAULT_CONFIGS = {
  webhook: { url: "", method: "POST" },
  ai_prompt: { prompt: "", max_tokens: 1024 },
  send_email: { to: [], subject: "", text: "" },
  run_code: { language: "python", code: SAMPLE_CODE.python },
  generate_report: { title: "", instructions: "", sources: [], format: "markdown", email_to: [] },
  web_scrape: { url: "", selectors: { title: "h1" } },
  file_operation: { operation: "read", path: "" },
  google_workspace: { service: "sheets", operation: "append_rows", credentials_secret: "", params: {} },
  task_chain: { steps: [{ id: "first", action: { type: "webhook", config: { url: "https://example.com/" } } }] },
};

// Set (or, for an empty optional value, remove) one config field.
function setter(config, onConfig) {
  return (name, { optional = false } = {}) =>
    (value) => {
      const next = { ...config };
      if (optional && (value === "" || value === null || (Array.isArray(value) && !value.length))) delete next[name];
      else next[name] = value;
      onConfig(next);
    };
}

const options = (values, labels = {}) => values.map((v) => html`<option value=${v}>${labels[v] || v}</option>`);

function WebhookForm({ config, set, errors, p }) {
  return html`
    <${Field} label="URL" type="url" value=${config.url} onValue=${set("url")} path=${p("url")} errors=${errors}
      placeholder="https://example.com/hook" hint="A template: {{ payload.x }}, {{ now }} and secrets work here." />
    <${Field} label="Method" as="select" value=${config.method || "POST"} onValue=${set("method")} path=${p("method")} errors=${errors}>
      ${options(["GET", "POST", "PUT", "PATCH", "DELETE"])}<//>
    <${JsonField} label="Headers (JSON)" value=${config.headers} onValue=${set("headers", { optional: true })} path=${p("headers")} errors=${errors} rows="3"
      hint='For example {"Authorization": "Bearer {{ secrets.API_TOKEN }}"}' />
    <${JsonField} label="Body (JSON)" value=${config.body} onValue=${set("body", { optional: true })} path=${p("body")} errors=${errors} rows="5" />
    <div class="row">
      <${NumberField} label="Request timeout (seconds)" value=${config.timeout_seconds} onValue=${set("timeout_seconds", { optional: true })} path=${p("timeout_seconds")} errors=${errors} min="1" />
      <${ListField} label="Expected status codes" value=${(config.expect_status || []).map(String)} path=${p("expect_status")} errors=${errors}
        hint="Comma-separated; empty means any 2xx." onValue=${(list) => set("expect_status", { optional: true })(list.map(Number))} />
    </div>`;
}

function AiPromptForm({ config, set, errors, p }) {
  return html`
    <${Field} label="Prompt" as="textarea" rows="5" value=${config.prompt} onValue=${set("prompt")} path=${p("prompt")} errors=${errors} />
    <${Field} label="System prompt" as="textarea" rows="2" value=${config.system} onValue=${set("system", { optional: true })} path=${p("system")} errors=${errors} />
    <div class="row">
      <${Field} label="Model" value=${config.model} onValue=${set("model", { optional: true })} path=${p("model")} errors=${errors} hint="Empty: the server's default model." />
      <${NumberField} label="Max tokens" value=${config.max_tokens} onValue=${set("max_tokens", { optional: true })} path=${p("max_tokens")} errors=${errors} min="1" />
    </div>`;
}

function EmailForm({ config, set, errors, p }) {
  return html`
    <${ListField} label="To" value=${config.to} onValue=${set("to")} path=${p("to")} errors=${errors} hint="Comma-separated addresses." />
    <div class="row">
      <${ListField} label="Cc" value=${config.cc} onValue=${set("cc", { optional: true })} path=${p("cc")} errors=${errors} />
      <${ListField} label="Bcc" value=${config.bcc} onValue=${set("bcc", { optional: true })} path=${p("bcc")} errors=${errors} />
    </div>
    <${Field} label="Subject" value=${config.subject} onValue=${set("subject")} path=${p("subject")} errors=${errors} />
    <${Field} label="Body" as="textarea" rows="5" value=${config.text} onValue=${set("text", { optional: true })} path=${p("text")} errors=${errors} hint="Plain text; a template." />
    <${Field} label="HTML body" as="textarea" rows="3" value=${config.html} onValue=${set("html", { optional: true })} path=${p("html")} errors=${errors} />`;
}

function CodeForm({ config, set, errors, p, onConfig }) {
  const language = config.language || "python";
  const switchLanguage = (next) => {
    const sample = Object.values(SAMPLE_CODE).includes(config.code) || !config.code;
    onConfig({ ...config, language: next, code: sample ? SAMPLE_CODE[next] : config.code });
  };
  return html`
    <${Field} label="Language" as="select" value=${language} onValue=${switchLanguage} path=${p("language")} errors=${errors}>
      ${options(["python", "javascript"], { python: "Python", javascript: "JavaScript (Node.js)" })}<//>
    <${CodeEditor} label="Code" value=${config.code} language=${language} onValue=${set("code")} messages=${errorsAt(errors, p("code"))} />
    <${JsonField} label="Input (JSON)" value=${config.input} onValue=${set("input", { optional: true })} path=${p("input")} errors=${errors} rows="3" hint="Sent to the program on stdin." />
    <div class="row">
      <${NumberField} label="Code timeout (seconds)" value=${config.timeout_seconds} onValue=${set("timeout_seconds", { optional: true })} path=${p("timeout_seconds")} errors=${errors} min="1" />
      <${NumberField} label="Memory (MB)" value=${config.memory_mb} onValue=${set("memory_mb", { optional: true })} path=${p("memory_mb")} errors=${errors} min="16" />
    </div>`;
}

function ReportForm({ config, set, errors, p }) {
  return html`
    <${Field} label="Title" value=${config.title} onValue=${set("title")} path=${p("title")} errors=${errors} />
    <${Field} label="Instructions" as="textarea" rows="4" value=${config.instructions} onValue=${set("instructions")} path=${p("instructions")} errors=${errors} />
    <${JsonField} label="Sources (JSON)" value=${config.sources} onValue=${set("sources", { optional: true })} path=${p("sources")} errors=${errors} rows="4"
      hint='A list of {"kind": "url", "url": ...}, {"kind": "text", "text": ...} or {"kind": "task_history", "task_id": ..., "days": 7}.' />
    <div class="row">
      <${Field} label="Format" as="select" value=${config.format || "markdown"} onValue=${set("format")} path=${p("format")} errors=${errors}>
        ${options(["markdown", "html"])}<//>
      <${ListField} label="Email the report to" value=${config.email_to} onValue=${set("email_to", { optional: true })} path=${p("email_to")} errors=${errors} />
    </div>`;
}

function ScrapeForm({ config, set, errors, p, onConfig }) {
  // The rows as typed (an empty or repeated name must not merge two rows); the config gets
  // the named ones.
  const [rows, setLocalRows] = useState(() => Object.entries(config.selectors || {}));
  const setRows = (next) => {
    setLocalRows(next);
    onConfig({ ...config, selectors: Object.fromEntries(next.filter(([name]) => name.trim())) });
  };
  return html`
    <${Field} label="URL" type="url" value=${config.url} onValue=${set("url")} path=${p("url")} errors=${errors} placeholder="https://example.com/" />
    <fieldset class="pairs"><legend>Selectors</legend>
      ${rows.map(
        ([name, selector], i) => html`<div class="pair" key=${i}>
          <${Field} label=${`Field name ${i + 1}`} value=${name} onValue=${(v) => setRows(rows.map((r, j) => (j === i ? [v, r[1]] : r)))} />
          <${Field} label=${`CSS selector ${i + 1}`} value=${selector} onValue=${(v) => setRows(rows.map((r, j) => (j === i ? [r[0], v] : r)))} />
          <button type="button" class="btn small" aria-label=${`Remove selector ${i + 1}`} onClick=${() => setRows(rows.filter((_, j) => j !== i))}>Remove</button>
        </div>`,
      )}
      <button type="button" class="btn small" onClick=${() => setRows([...rows, ["", ""]])}>Add selector</button>
      ${errorsAt(errors, p("selectors"), { prefix: true }).map((m) => html`<p class="field-error" role="alert">${m}</p>`)}
    </fieldset>
    <${Field} label="Every match (a list), not only the first" type="checkbox" value=${config.all} onValue=${set("all", { optional: true })} path=${p("all")} errors=${errors} />
    <${JsonField} label="Attributes (JSON)" value=${config.attributes} onValue=${set("attributes", { optional: true })} path=${p("attributes")} errors=${errors} rows="2"
      hint='Read an attribute instead of the text: {"link": "href"}.' />`;
}

function FileForm({ config, set, errors, p }) {
  const op = config.operation || "read";
  return html`
    <div class="row">
      <${Field} label="Operation" as="select" value=${op} onValue=${set("operation")} path=${p("operation")} errors=${errors}>
        ${options(["read", "write", "append", "copy", "move", "delete", "list", "exists"])}<//>
      <${Field} label="Path" value=${config.path} onValue=${set("path")} path=${p("path")} errors=${errors} hint="Relative to the server's files root." />
    </div>
    ${(op === "copy" || op === "move") &&
    html`<${Field} label="Destination" value=${config.destination} onValue=${set("destination", { optional: true })} path=${p("destination")} errors=${errors} />`}
    ${(op === "write" || op === "append") &&
    html`<${Field} label="Content" as="textarea" rows="4" value=${config.content} onValue=${set("content", { optional: true })} path=${p("content")} errors=${errors} />`}`;
}

function GoogleForm({ config, set, errors, p }) {
  return html`
    <div class="row">
      <${Field} label="Service" as="select" value=${config.service} onValue=${set("service")} path=${p("service")} errors=${errors}>
        ${options(["gmail", "sheets", "drive", "calendar"])}<//>
      <${Field} label="Operation" as="select" value=${config.operation} onValue=${set("operation")} path=${p("operation")} errors=${errors}>
        ${options(["send_email", "append_rows", "read_range", "upload_file", "create_event"])}<//>
    </div>
    <${Field} label="Credentials secret" value=${config.credentials_secret} onValue=${set("credentials_secret")} path=${p("credentials_secret")} errors=${errors}
      hint="The name of a secret holding the service account JSON (PUT /api/secrets/NAME)." />
    <${JsonField} label="Parameters (JSON)" value=${config.params} onValue=${set("params", { optional: true })} path=${p("params")} errors=${errors} rows="5" />`;
}

const STEP_KINDS = { action: "Action", task_id: "Another task", sleep_seconds: "Sleep", wait_for_webhook: "Wait for a webhook" };

function stepKind(step) {
  if (step.task_id !== undefined) return "task_id";
  if (step.sleep_seconds !== undefined) return "sleep_seconds";
  if (step.wait_for_webhook !== undefined) return "wait_for_webhook";
  return "action";
}

function ChainForm({ config, errors, p, onConfig, tasks }) {
  const steps = config.steps || [];
  const setSteps = (next) => onConfig({ ...config, steps: next });
  const setStep = (i, step) => setSteps(steps.map((s, j) => (j === i ? step : s)));
  const move = (i, delta) => {
    const next = [...steps];
    [next[i], next[i + delta]] = [next[i + delta], next[i]];
    setSteps(next);
  };
  const changeKind = (i, kind) => {
    const { id, condition, on_failure } = steps[i];
    const base = { id, ...(condition ? { condition } : {}), ...(on_failure ? { on_failure } : {}) };
    const body = {
      action: { action: { type: "webhook", config: { url: "https://example.com/" } } },
      task_id: { task_id: tasks[0]?.id || "" },
      sleep_seconds: { sleep_seconds: 60 },
      wait_for_webhook: { wait_for_webhook: { timeout_seconds: 86400 } },
    }[kind];
    setStep(i, { ...base, ...body });
  };
  return html`<ol class="chain-steps">
      ${steps.map((step, i) => {
        const kind = stepKind(step);
        const sp = (name) => p(`steps.${i}.${name}`);
        const n = i + 1;
        return html`<li class="chain-step" key=${i}>
          <div class="row">
            <${Field} label=${`Step ${n} id`} value=${step.id} onValue=${(v) => setStep(i, { ...step, id: v })} path=${sp("id")} errors=${errors} />
            <${Field} label=${`Step ${n} kind`} as="select" value=${kind} onValue=${(v) => changeKind(i, v)}>
              ${Object.entries(STEP_KINDS).map(([v, l]) => html`<option value=${v}>${l}</option>`)}<//>
            <${Field} label=${`Step ${n} on failure`} as="select" value=${step.on_failure || "stop"}
              onValue=${(v) => setStep(i, { ...step, on_failure: v })} path=${sp("on_failure")} errors=${errors}>
              ${options(["stop", "continue"])}<//>
          </div>
          ${kind === "action" &&
          html`<div class="row">
              <${Field} label=${`Step ${n} action type`} as="select" value=${step.action?.type}
                onValue=${(v) => setStep(i, { ...step, action: { type: v, config: DEFAULT_CONFIGS[v] } })}>
                ${Object.entries(ACTION_LABELS).filter(([v]) => v !== "task_chain").map(([v, l]) => html`<option value=${v}>${l}</option>`)}<//>
            </div>
            <${JsonField} label=${`Step ${n} config (JSON)`} value=${step.action?.config} rows="4"
              onValue=${(v) => setStep(i, { ...step, action: { ...step.action, config: v || {} } })} path=${sp("action")} errors=${errors} />`}
          ${kind === "task_id" &&
          html`<${Field} label=${`Step ${n} task`} as="select" value=${step.task_id} onValue=${(v) => setStep(i, { ...step, task_id: v })} path=${sp("task_id")} errors=${errors}>
            <option value="">Choose a task</option>
            ${tasks.map((t) => html`<option value=${t.id}>${t.name}</option>`)}<//>`}
          ${kind === "sleep_seconds" &&
          html`<${NumberField} label=${`Step ${n} sleep (seconds)`} value=${step.sleep_seconds} min="1" onValue=${(v) => setStep(i, { ...step, sleep_seconds: v })} path=${sp("sleep_seconds")} errors=${errors} />`}
          ${kind === "wait_for_webhook" &&
          html`<${NumberField} label=${`Step ${n} wait timeout (seconds)`} value=${step.wait_for_webhook?.timeout_seconds} min="1"
            onValue=${(v) => setStep(i, { ...step, wait_for_webhook: { timeout_seconds: v } })} path=${sp("wait_for_webhook")} prefix=${true} errors=${errors}
            hint="The run's history shows the step's resume URL; a POST to it continues the chain with its body." />`}
          <${JsonField} label=${`Step ${n} condition (JSON)`} value=${step.condition} rows="2"
            onValue=${(v) => setStep(i, { ...step, condition: v ?? undefined })} path=${sp("condition")} errors=${errors}
            hint='Optional, e.g. {"path": "steps.first.output.status", "op": "eq", "value": 200}' />
          <div class="step-tools">
            <button type="button" class="btn small" aria-label=${`Move step ${n} up`} disabled=${i === 0} onClick=${() => move(i, -1)}>↑</button>
            <button type="button" class="btn small" aria-label=${`Move step ${n} down`} disabled=${i === steps.length - 1} onClick=${() => move(i, 1)}>↓</button>
            <button type="button" class="btn small" aria-label=${`Remove step ${n}`} disabled=${steps.length === 1} onClick=${() => setSteps(steps.filter((_, j) => j !== i))}>Remove</button>
          </div>
        </li>`;
      })}
    </ol>
    <button type="button" class="btn small" onClick=${() => setSteps([...steps, { id: `step${steps.length + 1}`, sleep_seconds: 60 }])}>Add step</button>
    ${errorsAt(errors, p("steps")).map((m) => html`<p class="field-error" role="alert">${m}</p>`)}`;
}

const FORMS = {
  webhook: WebhookForm,
  ai_prompt: AiPromptForm,
  send_email: EmailForm,
  run_code: CodeForm,
  generate_report: ReportForm,
  web_scrape: ScrapeForm,
  file_operation: FileForm,
  google_workspace: GoogleForm,
  task_chain: ChainForm,
};

export function ActionStep({ action, onAction, errors, tasks }) {
  const [asJson, setAsJson] = useState(false);
  const type = action?.type;
  const config = action?.config || {};
  const onConfig = (next) => onAction({ type, config: next });
  const choose = (next) => onAction({ type: next, config: structuredClone(DEFAULT_CONFIGS[next]) });
  const p = (name) => `action.config.${name}`;
  const Form = FORMS[type];
  return html`<fieldset class="cards actions-grid">
      <legend>Action</legend>
      ${Object.entries(ACTION_LABELS).map(
        ([value, label]) => html`<label class=${`card-choice ${type === value ? "chosen" : ""}`}>
          <input type="radio" name="action-type" value=${value} checked=${type === value} aria-label=${label}
            aria-describedby=${`blurb-${value}`} onChange=${() => choose(value)} />
          <span class="icon" aria-hidden="true">${ICONS[value]}</span>
          <span class="card-title">${label}</span>
          <span class="muted small" id=${`blurb-${value}`}>${BLURBS[value]}</span>
        </label>`,
      )}
    </fieldset>
    ${[...errorsAt(errors, "action"), ...errorsAt(errors, "action.type")].map((m) => html`<p class="field-error" role="alert">${m}</p>`)}
    ${type &&
    html`<div class="action-form">
      <div class="field check">
        <input type="checkbox" id="as-json" checked=${asJson} onChange=${(e) => setAsJson(e.target.checked)} />
        <label for="as-json">JSON</label>
        <span class="hint">Show and edit the raw <code>config</code> of this ${ACTION_LABELS[type]} action.</span>
      </div>
      ${asJson
        ? html`<${JsonField} label="Action config (JSON)" value=${config} rows="14" allowEmpty=${false}
            onValue=${(v) => onConfig(v)} path="action.config" errors=${errors} />`
        : html`${errorsAt(errors, "action.config").map((m) => html`<p class="field-error" role="alert">${m}</p>`)}
          <${Form} config=${config} set=${setter(config, onConfig)} errors=${errors} p=${p} onConfig=${onConfig} tasks=${tasks} />`}
    </div>`}`;
}
