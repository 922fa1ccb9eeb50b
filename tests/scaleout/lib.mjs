// Shared by the scale-out checks: the interop suite's machinery (lib.mjs)
// plus redis-server processes, chat instances on one Redis stream, clients
// that record every event, and the sequence-number checks.
import { execFile, spawn } from "node:child_process";
import { createWriteStream, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventSource } from "../interop/deps.mjs";
import { OUT_DIR, assert, assertEqual, sleep, startExample, stats, waitFor, within } from "../interop/lib.mjs";

export * from "../interop/lib.mjs";
export { EventSource };

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const redises = new Set();
const tempDirs = [];
process.on("exit", () => {
  for (const r of redises) r.proc.kill("SIGKILL");
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A new temporary directory, removed when the script exits. */
export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "stdsse-scaleout-"));
  tempDirs.push(dir);
  return dir;
}

/** Runs redis-cli against `port` (bounded: 5 s); resolves with its output. */
export function redisCli(port, ...args) {
  return new Promise((resolve, reject) => {
    execFile("redis-cli", ["-p", String(port), ...args], { timeout: 5000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`redis-cli ${args.join(" ")}: ${err.message} ${stderr}`)) : resolve(stdout.trim()),
    );
  });
}

let redisSeq = 0;
/**
 * Starts redis-server on 127.0.0.1:`port` with its data in `dir` (append-only
 * file on, fsync on every write, no RDB snapshots) and resolves once it
 * answers PING (at most 10 s).
 */
export async function startRedis(port, dir) {
  const log = createWriteStream(join(OUT_DIR, "logs", `redis-${port}-${++redisSeq}.log`));
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes",
     "--appendfsync", "always", "--save", "", "--daemonize", "no"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  proc.stdout.pipe(log);
  proc.stderr.pipe(log);
  const redis = { proc, port, dir, url: `redis://127.0.0.1:${port}` };
  redises.add(redis);
  redis.exited = new Promise((resolve) => proc.on("exit", () => (redises.delete(redis), resolve())));
  await waitFor(10000, `redis-server on port ${port}`, () => redisCli(port, "PING").then((r) => r === "PONG", () => false), 50);
  return redis;
}

/** Stops redis-server: `SHUTDOWN` (the append-only file is complete), or SIGKILL. */
export async function stopRedis(redis, how = "shutdown") {
  if (how === "shutdown") await redisCli(redis.port, "SHUTDOWN").catch(() => {});
  else redis.proc.kill("SIGKILL");
  await within(10000, "redis-server to exit", redis.exited);
}

/**
 * Starts a chat instance on `redis` and `stream`, keep-alives every 500 ms.
 * Its `listening on` line may come after a Redis log line (a known engine
 * bug, checked on its own in fanout.mjs), so that the other checks still run.
 */
export function startChat(redis, stream, tag, extra = []) {
  return startExample("chat", {
    tag,
    anyLine: true,
    args: ["--redis", typeof redis === "string" ? redis : redis.url, "--stream", stream, "--keep-alive-ms", "500", ...extra],
  });
}

/** Waits until the chat instance counts at least `n` hub subscribers. */
export function waitSubscribers(chat, n) {
  return waitFor(5000, `${n} subscribers on ${chat.url}`, async () => (await stats(chat.url)).hub.subscribers >= n);
}

/**
 * An EventSource on `url` that records every `message` and `stdsse-gap`
 * event; `target()` names the origin each (re)connection goes to, so a
 * client can be moved to another instance between connections.
 */
export function client(url, name = url) {
  const c = { name, log: [], attempts: [], origin: null };
  c.source = new EventSource(url, {
    fetch: (input, init) => {
      const u = new URL(String(input));
      if (c.origin) {
        const o = new URL(c.origin);
        u.host = o.host;
      }
      c.attempts.push({ url: u.href, lastEventId: init && init.headers && init.headers["Last-Event-ID"] });
      return fetch(u, init);
    },
  });
  for (const type of ["message", "stdsse-gap"]) {
    c.source.addEventListener(type, (e) => c.log.push({ type: e.type, data: e.data, id: e.lastEventId }));
  }
  c.messages = () => c.log.filter((e) => e.type === "message");
  c.close = () => c.source.close();
  return c;
}

/**
 * Every POST made through `post` is recorded with its answer, so the checks
 * can demand that exactly the ones answered 204 arrive.
 */
export class Poster {
  constructor(room = "lobby") {
    this.room = room;
    this.sent = []; // { text, status, retryAfter, at }
  }
  async post(baseUrl, text) {
    const res = await within(
      5000,
      `POST ${baseUrl}/messages`,
      fetch(`${baseUrl}/messages?room=${this.room}`, { method: "POST", body: text }),
    );
    await res.text();
    const entry = { url: baseUrl, text, status: res.status, retryAfter: res.headers.get("retry-after"), at: Date.now() };
    this.sent.push(entry);
    return entry;
  }
  /** POSTs `text` (tagged with the try) until answered 204; at most `ms`. */
  async postUntilAccepted(baseUrl, text, ms = 12000) {
    const deadline = Date.now() + ms;
    for (let attempt = 1; ; attempt++) {
      const { status } = await this.post(baseUrl, `${text} try:${attempt}`);
      if (status === 204) return attempt;
      assert(status === 503, `POST answered ${status}, expected 204 or 503`);
      if (Date.now() > deadline) throw new Error(`${baseUrl} still answers 503 after ${ms} ms`);
      await sleep(100);
    }
  }
  accepted() {
    return this.sent.filter((s) => s.status === 204).map((s) => s.text);
  }
  /**
   * Checks that `texts` hold each instance's accepted messages in the order
   * that instance accepted them. (Not across instances: a 204 means queued
   * for Redis, so two instances' messages are ordered by Redis.)
   */
  checkPerInstanceOrder(texts, what) {
    const position = new Map(texts.map((t, i) => [t, i]));
    for (const url of new Set(this.sent.map((s) => s.url))) {
      const mine = this.sent.filter((s) => s.url === url && s.status === 204 && position.has(s.text)).map((s) => s.text);
      const got = [...mine].sort((x, y) => position.get(x) - position.get(y));
      assertEqual(got, mine, `${what}: the order of the messages accepted by ${url}`);
    }
  }
}

/**
 * The core check for every client: it received each accepted message exactly
 * once, nothing else (no message answered 503), no gap signal, and all the
 * clients received them in one order with the same ids.
 */
export function checkSameStream(clients, accepted, { from = 0 } = {}) {
  const want = new Set(accepted);
  let reference = null;
  for (const c of clients) {
    const got = c.log.slice(from);
    const gaps = got.filter((e) => e.type !== "message");
    assertEqual(gaps.map((e) => e.type), [], `${c.name}: gap signals`);
    const texts = got.map((e) => e.data);
    const seen = new Set();
    for (const t of texts) {
      assert(!seen.has(t), `${c.name}: ${JSON.stringify(t)} arrived twice`);
      assert(want.has(t), `${c.name}: ${JSON.stringify(t)} arrived but was never accepted`);
      seen.add(t);
    }
    const missing = accepted.filter((t) => !seen.has(t));
    assertEqual(missing, [], `${c.name}: accepted messages missing`);
    if (!reference) reference = got;
    else {
      assertEqual(texts, reference.map((e) => e.data), `${c.name}: order against ${clients[0].name}`);
      assertEqual(got.map((e) => e.id), reference.map((e) => e.id), `${c.name}: ids against ${clients[0].name}`);
    }
  }
  return reference;
}

/**
 * Waits (at most `ms`) until every client has received at least `n` events
 * beyond `from(client)`; false on a timeout, when the check that follows
 * says what is missing.
 */
export function waitAll(clients, n, ms = 10000, from = () => 0) {
  return waitFor(ms, "", () => clients.every((c) => c.log.length - from(c) >= n)).catch(() => false);
}

/** The global ids: `<epoch>-<ms>-<seq>` (the Redis entry id after the epoch). */
export const GLOBAL_ID = /^([0-9a-f]+)-(\d+)-(\d+)$/;

/** Checks that `ids` are global ids of one epoch, strictly increasing. */
export function checkIncreasing(ids, what) {
  let prev = null;
  for (const id of ids) {
    const m = id.match(GLOBAL_ID);
    assert(m, `${what}: ${JSON.stringify(id)} is not <epoch>-<ms>-<seq>`);
    const key = [m[1], BigInt(m[2]), BigInt(m[3])];
    if (prev) {
      assertEqual(key[0], prev[0], `${what}: epoch`);
      assert(key[1] > prev[1] || (key[1] === prev[1] && key[2] > prev[2]), `${what}: ${id} does not follow the id before it`);
    }
    prev = key;
  }
}

/**
 * Reads a stream raw (`fetch`), for what EventSource hides: keep-alive
 * comments and whether the connection ended.
 */
export function rawStream(url) {
  const r = { text: "", ended: false, comments: [] };
  const ctrl = new AbortController();
  r.close = () => ctrl.abort();
  r.done = (async () => {
    try {
      const res = await fetch(url, { signal: ctrl.signal });
      const decoder = new TextDecoder();
      for await (const chunk of res.body) {
        r.text += decoder.decode(chunk, { stream: true });
        for (const line of r.text.slice(r.scanned || 0).split("\n").slice(0, -1)) {
          if (line.startsWith(":")) r.comments.push(Date.now());
        }
        r.scanned = r.text.lastIndexOf("\n") + 1;
      }
    } catch (e) {
      if (e.name !== "AbortError") r.error = e;
    }
    r.ended = true;
  })();
  return r;
}
