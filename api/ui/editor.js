// A code editor with syntax highlighting: vendored CodeMirror 5 over a labelled textarea.
// Without CodeMirror (a script blocked), the plain textarea still works.
import { html, useEffect, useRef, uid } from "./lib.js";

const MODES = { python: "python", javascript: "javascript" };

export function CodeEditor({ label, value, language, onValue, messages = [] }) {
  const area = useRef(null);
  const hint = useRef(null);
  const editor = useRef(null);
  const id = useRef(uid("code")).current;
  const latest = useRef(onValue);
  // Values the editor emitted lately: a render still carrying one of them is stale, not new.
  const emitted = useRef([]);
  latest.current = onValue;
  useEffect(() => {
    const CodeMirror = window.CodeMirror;
    if (!CodeMirror || !area.current) return undefined;
    const cm = CodeMirror.fromTextArea(area.current, {
      mode: MODES[language] || "python",
      lineNumbers: true,
      indentUnit: 4,
      tabSize: 4,
      indentWithTabs: false,
      viewportMargin: Infinity,
      screenReaderLabel: label,
      // Tab indents; Esc then Tab leaves the editor (keyboard users must not be trapped).
      extraKeys: {
        Tab: (instance) => instance.execCommand("insertSoftTab"),
        Esc: () => hint.current?.focus(),
      },
    });
    cm.getInputField().setAttribute("aria-label", label);
    cm.getInputField().id = `${id}-cm`;
    // The label now names the editor's own input (the original textarea is hidden).
    area.current.parentNode.querySelector(`label[for="${id}"]`)?.setAttribute("for", `${id}-cm`);
    cm.on("change", (_instance, change) => {
      if (change.origin === "setValue") return;
      const text = cm.getValue();
      emitted.current = [...emitted.current.slice(-50), text];
      latest.current(text);
    });
    editor.current = cm;
    return () => {
      cm.toTextArea();
      editor.current = null;
    };
  }, []);
  useEffect(() => {
    const cm = editor.current;
    const text = value || "";
    if (cm && cm.getValue() !== text && !emitted.current.includes(text)) cm.setValue(text);
  }, [value]);
  useEffect(() => {
    editor.current?.setOption("mode", MODES[language] || "python");
  }, [language]);
  return html`<div class=${`field code-field ${messages.length ? "invalid" : ""}`}>
    <label for=${id}>${label}</label>
    <textarea id=${id} ref=${area} class="mono" rows="10" spellcheck="false" value=${value || ""}
      onInput=${(e) => onValue(e.target.value)}></textarea>
    <span class="hint" ref=${hint} tabindex="-1">Tab indents; press Esc, then Tab, to leave the editor.</span>
    ${messages.length > 0 && html`<p class="field-error" role="alert">${messages.join("; ")}</p>`}
  </div>`;
}
