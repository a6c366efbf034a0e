// Modal dialogs: focus moves in, Tab stays in, Escape closes, focus returns where it was.
import { html, uid, useLayoutEffect, useRef } from "./lib.js";

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

// Open dialogs, innermost last: keys pressed while the focus is outside every dialog
// (before it moved in, or after the control holding it was re-rendered away) go to the last.
const stack = [];

const focusables = (node) => [...node.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null);

export function Dialog({ title, onClose, children, wide = false, labelId, className = "" }) {
  const ref = useRef(null);
  const closeRef = useRef(onClose);
  closeRef.current = onClose;
  const titleId = useRef(labelId || uid("dlg")).current;
  // A layout effect: the focus is inside before the browser paints, so a key pressed as soon
  // as the dialog shows reaches it.
  useLayoutEffect(() => {
    const opener = document.activeElement;
    const node = ref.current;
    const first = node.querySelector("[autofocus]") || node.querySelector(FOCUSABLE) || node;
    first.focus();
    return () => {
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
    };
  }, []);
  useLayoutEffect(() => {
    const node = ref.current;
    stack.push(node);
    const onStrayKey = (event) => {
      if (stack[stack.length - 1] !== node || node.contains(event.target)) return;
      if (event.key === "Escape") {
        closeRef.current();
      } else if (event.key === "Tab") {
        event.preventDefault();
        const items = focusables(node);
        (event.shiftKey ? items[items.length - 1] : items[0])?.focus();
      }
    };
    document.addEventListener("keydown", onStrayKey);
    return () => {
      document.removeEventListener("keydown", onStrayKey);
      stack.splice(stack.indexOf(node), 1);
    };
  }, []);
  const onKeyDown = (event) => {
    if (event.key === "Escape" && !event.target.closest(".CodeMirror")) {
      event.stopPropagation();
      onClose();
      return;
    }
    if (event.key !== "Tab") return;
    const items = focusables(ref.current);
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  };
  return html`<div class="backdrop" onMouseDown=${(e) => e.target === e.currentTarget && onClose()}>
    <div ref=${ref} class=${`dialog ${wide ? "wide" : ""} ${className}`} role="dialog" aria-modal="true"
      aria-labelledby=${titleId} tabindex="-1" onKeyDown=${onKeyDown}>
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
