// A node:test reporter that writes one JSON line per test case:
// {"client": <enclosing describe>, "name": <test name>, "ok": bool, "error": string|null}.
// Used by scripts/conformance to build its client x pattern table.
export default async function* resultsReporter(source) {
  let pending = [];
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const data = event.data;
    const ok = event.type === "test:pass";
    if (data.nesting > 0) {
      const err = data.details?.error;
      const error = ok ? null : String(err?.cause?.message ?? err?.message ?? "failed");
      pending.push({ name: data.name, ok, error });
    } else {
      const client = data.name;
      if (pending.length === 0) {
        // A top-level test (or a file that failed to load) with no subtests.
        const err = data.details?.error;
        pending.push({ name: data.name, ok, error: ok ? null : String(err?.cause?.message ?? err?.message) });
      }
      for (const p of pending) yield `${JSON.stringify({ client, ...p })}\n`;
      pending = [];
    }
  }
  for (const p of pending) yield `${JSON.stringify({ client: "node", ...p })}\n`;
}
