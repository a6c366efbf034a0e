// Secrets: write-only values that templates ({{ secrets.NAME }}), the email trigger's
// password and Google credentials name. The list shows names and dates, never a value.
import { Confirm } from "./dialog.js";
import { Field } from "./form.js";
import { ErrorNote, Spinner, api, formatTime, get, html, toast, useEffect, useState } from "./lib.js";

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

export function SecretsView() {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [problems, setProblems] = useState({});
  const [busy, setBusy] = useState(false);
  const [deleting, setDeleting] = useState(null);
  const load = () =>
    get("/api/secrets")
      .then((r) => (setItems(r.items), setError(null)))
      .catch(setError);
  useEffect(() => {
    load();
  }, []);
  const save = async (event) => {
    event.preventDefault();
    const found = {};
    if (!NAME.test(name)) found.name = "letters, digits and _, not starting with a digit (at most 64)";
    if (!value) found.value = "give the value";
    setProblems(found);
    if (Object.keys(found).length) return;
    setBusy(true);
    try {
      await api("PUT", `/api/secrets/${encodeURIComponent(name)}`, { value });
      toast(`Saved secret ${name}`);
      setName("");
      setValue("");
      load();
    } catch (e) {
      const map = {};
      for (const { loc, msg } of e.errors || []) map[loc?.[loc.length - 1] === "name" ? "name" : "value"] = msg;
      setProblems(Object.keys(map).length ? map : { value: e.message });
    } finally {
      setBusy(false);
    }
  };
  return html`<section class="secrets" aria-labelledby="secrets-title">
    <h1 id="secrets-title">Secrets</h1>
    <p class="muted">Values are encrypted at rest and never shown again. Use them as
      <code>{{ secrets.NAME }}</code> in templates, or by name in the email trigger's
      password and Google Workspace credentials.</p>
    <form class="secret-form" onSubmit=${save} novalidate>
      <${Field} label="Secret name" value=${name} onValue=${setName} path="name" errors=${problems}
        autocomplete="off" spellcheck="false" placeholder="API_TOKEN" />
      <${Field} label="Secret value" type="password" value=${value} onValue=${setValue} path="value"
        errors=${problems} autocomplete="new-password" />
      <div class="field"><button type="submit" class="btn primary" disabled=${busy}>Save secret</button></div>
    </form>
    <${ErrorNote} error=${error} onRetry=${load} />
    ${items === null && !error && html`<${Spinner} label="Loading secrets" />`}
    ${items && !items.length && html`<p class="muted">No secrets yet.</p>`}
    ${items && items.length > 0 &&
    html`<ul class="secret-list" aria-label="Your secrets">${items.map(
      (secret) => html`<li key=${secret.name}><code>${secret.name}</code>
        <span class="muted small">updated ${formatTime(secret.updated_at)}</span>
        <span class="spacer"></span>
        <button type="button" class="btn small danger-text" aria-label=${`Delete ${secret.name}`}
          onClick=${() => setDeleting(secret.name)}>Delete</button></li>`,
    )}</ul>`}
    ${deleting &&
    html`<${Confirm} title=${`Delete ${deleting}?`} message="Tasks that use it fail until it is set again."
      onCancel=${() => setDeleting(null)}
      onConfirm=${async () => {
        const gone = deleting;
        setDeleting(null);
        try {
          await api("DELETE", `/api/secrets/${encodeURIComponent(gone)}`);
          toast(`Deleted secret ${gone}`);
        } catch (e) {
          toast(e.message, "error");
        }
        load();
      }} />`}
  </section>`;
}
