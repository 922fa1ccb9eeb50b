// Shared by the Node check scripts: start and stop the examples, bounded
// waits, and the PASS/FAIL lines that run.sh counts.
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { join } from "node:path";

export const BIN_DIR = process.env.STDSSE_BIN_DIR || "target/debug/examples";
export const OUT_DIR = process.env.INTEROP_OUT || "target/interop";

// The clock example's data: a UTC time in RFC 3339.
export const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
mkdirSync(join(OUT_DIR, "logs"), { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `promise`, or rejects after `ms` with "timed out: what". */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` (sync or async) until it returns a truthy value, at most `ms`. */
export async function waitFor(ms, what, fn, every = 25) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

const running = new Set();
let logSeq = 0;

/**
 * Starts an example (`chat`, `clock`) on `addr` (default 127.0.0.1:0) and
 * resolves once it printed `listening on http://HOST:PORT` and the newline
 * that ends it (the line may arrive in pieces). That line must be the first
 * (the examples' documented contract) unless `anyLine`; `.firstLine` keeps
 * the first either way. The example's stderr (its access log) is kept in
 * `.log` and copied to target/interop/logs.
 */
export async function startExample(name, { addr = "127.0.0.1:0", args = [], tag = name, anyLine = false } = {}) {
  // Restarting on the same port: the old process has exited, but give the
  // bind a few tries in case the kernel is slow to release it.
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(name, addr, args, tag, anyLine);
    } catch (e) {
      if (attempt >= 20 || !/in use/i.test(String(e.message))) throw e;
      await sleep(100);
    }
  }
}

function startOnce(name, addr, args, tag, anyLine) {
  const file = join(OUT_DIR, "logs", `${tag}-${++logSeq}.log`);
  const logFile = createWriteStream(file);
  const proc = spawn(join(BIN_DIR, name), ["--addr", addr, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  running.add(proc);
  const example = { proc, name, log: "", file, exited: null };
  example.exitedPromise = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      running.delete(proc);
      example.exited = { code, signal };
      resolve(example.exited);
    });
  });
  return within(
    10000,
    `${name} to print "listening on"`,
    new Promise((resolve, reject) => {
      proc.on("error", reject);
      proc.stderr.setEncoding("utf8");
      proc.stderr.on("data", (chunk) => {
        example.log += chunk;
        logFile.write(chunk);
        const m = example.log.match(/(?:^|\n)listening on http:\/\/([^\s]+):(\d+)\n/);
        if (m && !example.url) {
          example.firstLine = example.log.slice(0, example.log.indexOf("\n"));
          if (m.index !== 0 && !anyLine) reject(new Error(`${name} printed ${JSON.stringify(example.firstLine)} before "listening on"`));
          example.host = m[1];
          example.port = Number(m[2]);
          example.url = `http://${m[1]}:${m[2]}`;
          resolve(example);
        }
      });
      proc.on("exit", (code) => {
        if (!example.url) reject(new Error(`${name} exited (${code}) before listening: ${example.log.trim()}`));
      });
    }),
  );
}

/** Sends `signal` and waits (bounded) for the exit; SIGKILL as a last resort. */
export async function stopExample(example, signal = "SIGINT", ms = 10000) {
  if (example.exited) return example.exited;
  example.proc.kill(signal);
  try {
    return await within(ms, `${example.name} to exit after ${signal}`, example.exitedPromise);
  } catch (e) {
    example.proc.kill("SIGKILL");
    await within(5000, `${example.name} to exit after SIGKILL`, example.exitedPromise);
    throw e;
  }
}

export function killAll() {
  for (const proc of running) proc.kill("SIGKILL");
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killAll();
    process.exit(1);
  });
}

/**
 * The chat's largest message, exactly its MAX_MESSAGE (64 KiB) of UTF-8: 64
 * lines of 1024 bytes, the same as python_clients.py and tests/chat_example.rs.
 */
export const LARGEST = ("h\u00e9llo \u2713 \u{1F600}" + "x".repeat(1008) + "\n").repeat(64);

/** POSTs a chat message; resolves with the status, which must be 204. */
export async function post(baseUrl, text, room = "lobby") {
  const res = await within(
    5000,
    "POST /messages",
    fetch(`${baseUrl}/messages?room=${encodeURIComponent(room)}`, { method: "POST", body: text }),
  );
  const body = await res.text();
  if (res.status !== 204) throw new Error(`POST /messages answered ${res.status}: ${body}`);
  return res.status;
}

export async function stats(baseUrl) {
  const res = await within(5000, "GET /stats", fetch(`${baseUrl}/stats`));
  return res.json();
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function assertEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

const results = { passed: 0, failed: 0 };

/** Runs one check with an overall bound and prints PASS or FAIL. */
export async function check(name, ms, fn) {
  const started = Date.now();
  try {
    const note = await within(ms, name, Promise.resolve().then(fn));
    results.passed++;
    console.log(`PASS ${name} (${Date.now() - started} ms)${note ? ": " + note : ""}`);
  } catch (e) {
    results.failed++;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
  }
}

/** Call at the end: exits non-zero if any check failed. */
export function finish() {
  killAll();
  process.exit(results.failed > 0 ? 1 : 0);
}
