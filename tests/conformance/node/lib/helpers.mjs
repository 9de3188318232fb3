// Shared helpers for the Node conformance tests. Synchronisation is event-driven: an Inbox
// resolves a waiter as soon as a message arrives; the timeouts are hang guards only.
import { randomUUID } from "node:crypto";

export const AMQP_URL = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2F";
export const HANG_GUARD_MS = 10_000;
// Per-test hang guard for node:test.
export const T = { timeout: 30_000 };

export function uniq(prefix) {
  return `conf.node.${prefix}.${randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

export function fib(n) {
  let [a, b] = [0, 1];
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

/** Rejects if `promise` has not settled within the hang guard. */
export function guard(promise, what, ms = HANG_GUARD_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve/reject exposed. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Collects items pushed by event handlers; `waitFor(n)` resolves once n items are in. */
export class Inbox {
  constructor(name = "inbox") {
    this.name = name;
    this.items = [];
    this.waiters = [];
  }
  push = (item) => {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (this.items.length >= w.n) {
        w.d.resolve(this.items.slice());
        return false;
      }
      return true;
    });
  };
  waitFor(n, what = `${n} item(s) in ${this.name}`) {
    if (this.items.length >= n) return Promise.resolve(this.items.slice());
    const d = deferred();
    this.waiters.push({ n, d });
    return guard(d.promise, what);
  }
}
