// Modal dialogs: focus moves in, Tab stays in, Escape closes, focus returns where it was.
import { html, uid, useLayoutEffect, useRef } from "./lib.js";

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

// Open dialogs, innermost last. Keys go to the innermost one wherever the focus is: inside
// it, or outside every dialog (before it moved in, or after its control was re-rendered away).
const stack = [];

const focusables = (node) => [...node.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null);

export function Dialog({ title, onClose, children, wide = false, labelId, className = "" }) {
  const ref = useRef(null);
  const closeRef = useRef(onClose);
  closeRef.current = onClose;
  const titleId = useRef(labelId || uid("dlg")).current;
  // A layout effect: the focus is inside, and keys are heard, before the browser paints.
  useLayoutEffect(() => {
    const opener = document.activeElement;
    const node = ref.current;
    (node.querySelector("[autofocus]") || node.querySelector(FOCUSABLE) || node).focus();
    stack.push(node);
    const onKey = (event) => {
      if (stack[stack.length - 1] !== node) return;
      const inside = node.contains(event.target);
      if (event.key === "Escape") {
        if (!(inside && event.target.closest(".CodeMirror"))) closeRef.current();
        return;
      }
      if (event.key !== "Tab") return;
      const items = focusables(node);
      const first = items[0];
      const last = items[items.length - 1];
      // Tab stays in: from outside, or from an end, it wraps to the other end.
      if (first && (!inside || document.activeElement === (event.shiftKey ? first : last))) {
        event.preventDefault();
        (event.shiftKey ? last : first).focus();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => {
      document.removeEventListener("keydown", onKey);
      stack.splice(stack.indexOf(node), 1);
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
    };
  }, []);
  return html`<div class="backdrop" onMouseDown=${(e) => e.target === e.currentTarget && onClose()}>
    <div ref=${ref} class=${`dialog ${wide ? "wide" : ""} ${className}`} role="dialog" aria-modal="true"
      aria-labelledby=${titleId} tabindex="-1">
      <header class="dialog-head">
        <h2 id=${titleId}>${title}</h2>
        <button type="button" class="icon-btn" aria-label="Close" onClick=${onClose}>×</button>
      </header>
      ${children}
    </div>
  </div>`;
}

// "Delete Nightly backup?" with Confirm and Cancel.
export function Confirm({ title, message, danger = true, onConfirm, onCancel }) {
  return html`<${Dialog} title=${title} onClose=${onCancel}>
    <div class="dialog-body"><p>${message}</p></div>
    <footer class="dialog-foot">
      <button type="button" class="btn" onClick=${onCancel} autofocus>Cancel</button>
      <button type="button" class=${`btn ${danger ? "danger" : "primary"}`} onClick=${onConfirm}>Confirm</button>
    </footer>
  <//>`;
}
