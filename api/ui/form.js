// Labelled fields that show the API's errors for their path next to themselves.
import { html, useEffect, useRef, useState, uid } from "./lib.js";

// Errors are keyed by dotted path ("schedule.cron", "action.config.url").
export function errorsAt(errors, path, { prefix = false } = {}) {
  return Object.entries(errors || {})
    .filter(([loc]) => loc === path || (prefix && loc.startsWith(path + ".")))
    .map(([loc, msg]) => (loc === path ? msg : `${loc.slice(path.length + 1)}: ${msg}`));
}

export function FieldError({ id, messages }) {
  if (!messages.length) return null;
  return html`<p class="field-error" id=${id} role="alert">${messages.join("; ")}</p>`;
}

// One labelled control. `as` is "input" | "textarea" | "select"; `children` are options.
export function Field({ label, path, errors, as = "input", hint, value, onValue, children, prefix = false, ...rest }) {
  const id = useRef(uid("fld")).current;
  const messages = path ? errorsAt(errors, path, { prefix }) : [];
  const describedBy = [messages.length ? `${id}-err` : null, hint ? `${id}-hint` : null].filter(Boolean).join(" ") || undefined;
  const common = {
    id,
    "aria-invalid": messages.length ? "true" : undefined,
    "aria-describedby": describedBy,
    "data-path": path,
    ...rest,
  };
  const onInput = (e) => onValue(rest.type === "checkbox" ? e.target.checked : e.target.value);
  let control;
  if (as === "textarea") control = html`<textarea ...${common} value=${value ?? ""} onInput=${onInput}></textarea>`;
  else if (as === "select")
    control = html`<select ...${common} value=${value ?? ""} onChange=${onInput}>${children}</select>`;
  else if (rest.type === "checkbox")
    return html`<div class="field check"><input ...${common} checked=${Boolean(value)} onChange=${onInput} />
      <label for=${id}>${label}</label>${hint && html`<span class="hint" id=${`${id}-hint`}>${hint}</span>`}
      <${FieldError} id=${`${id}-err`} messages=${messages} /></div>`;
  else control = html`<input ...${common} value=${value ?? ""} onInput=${onInput} />`;
  return html`<div class=${`field ${messages.length ? "invalid" : ""}`}>
    <label for=${id}>${label}</label>
    ${control}
    ${hint && html`<span class="hint" id=${`${id}-hint`}>${hint}</span>`}
    <${FieldError} id=${`${id}-err`} messages=${messages} />
  </div>`;
}

// A JSON value edited as text: parse errors show in place; valid JSON goes to onValue.
export function JsonField({ label, path, errors, value, onValue, rows = 6, hint, allowEmpty = true }) {
  const [text, setText] = useState(() => (value === undefined || value === null ? "" : JSON.stringify(value, null, 2)));
  const [problem, setProblem] = useState(null);
  const last = useRef(value);
  useEffect(() => () => invalidJson.delete(path), [path]);
  useEffect(() => {
    // Follow outside changes (a form beside it), not our own echoes.
    if (JSON.stringify(value) !== JSON.stringify(last.current)) {
      last.current = value;
      setText(value === undefined || value === null ? "" : JSON.stringify(value, null, 2));
      setProblem(null);
    }
  }, [value]);
  const onInput = (raw) => {
    setText(raw);
    if (!raw.trim() && allowEmpty) {
      setProblem(null);
      invalidJson.delete(path);
      last.current = null;
      onValue(null);
      return;
    }
    try {
      const parsed = JSON.parse(raw);
      setProblem(null);
      invalidJson.delete(path);
      last.current = parsed;
      onValue(parsed);
    } catch (e) {
      setProblem(`Not valid JSON yet: ${e.message}`);
      invalidJson.set(path, label);
    }
  };
  return html`<div class="json-field">
    <${Field} label=${label} as="textarea" rows=${rows} spellcheck="false" class="mono" path=${path}
      prefix=${true} errors=${errors} value=${text} onValue=${onInput} hint=${hint} />
    ${problem && html`<p class="field-error" role="alert">${problem}</p>`}
  </div>`;
}

// A comma- or newline-separated list of strings.
export function ListField({ label, value, onValue, ...rest }) {
  const [text, setText] = useState((value || []).join(", "));
  useEffect(() => {
    const mine = text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);
    if (JSON.stringify(mine) !== JSON.stringify(value || [])) setText((value || []).join(", "));
  }, [JSON.stringify(value || [])]);
  return html`<${Field} label=${label} value=${text} ...${rest}
    onValue=${(raw) => {
      setText(raw);
      onValue(raw.split(/[,\n]/).map((s) => s.trim()).filter(Boolean));
    }} />`;
}

// A number field: empty means null. The text typed is kept as typed ("1." on the way to
// "1.5"); the value goes out when the text is a number.
export function NumberField({ label, value, onValue, ...rest }) {
  const [text, setText] = useState(value ?? "");
  useEffect(() => {
    if (text === "" ? value != null : Number(text) !== value) setText(value ?? "");
  }, [value]);
  return html`<${Field} label=${label} type="text" inputmode="decimal" value=${text} ...${rest}
    onValue=${(raw) => {
      setText(raw);
      if (raw.trim() === "") onValue(null);
      else if (!Number.isNaN(Number(raw))) onValue(Number(raw));
    }} />`;
}

// JSON fields whose text does not parse, by path: the wizard refuses to save while any is.
export const invalidJson = new Map();
