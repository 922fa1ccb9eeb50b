// A client moves between chat instances on one Redis mid-stream and resumes
// with no gap or duplicate: the `eventsource` package moved by hand (to an
// instance that has the events, then to one started after them, which
// replays from Redis), and Chromium plus `eventsource` through nginx with two
// upstreams, the one serving them killed.
import { spawn } from "node:child_process";
import { chmodSync, writeFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "../interop/deps.mjs";
import {
  OUT_DIR,
  Poster,
  assert,
  assertEqual,
  check,
  checkIncreasing,
  checkSameStream,
  client,
  finish,
  freePort,
  sleep,
  startChat,
  startRedis,
  stats,
  stopExample,
  tempDir,
  waitAll,
  waitFor,
  waitSubscribers,
  within,
} from "./lib.mjs";

const redis = await startRedis(await freePort(), tempDir());

await check("eventsource moved A -> B (killed) -> C (started later, replays from Redis): every message once, no gap", 45000, async () => {
  const stream = "scaleout:move";
  const a = await startChat(redis, stream, "move-a");
  const b = await startChat(redis, stream, "move-b");
  const poster = new Poster();
  const c = client(`${a.url}/events?room=lobby`, "moving client");
  try {
    await waitSubscribers(a, 1);
    for (let n = 0; n < 10; n++) await poster.post([a, b][n % 2].url, `seq:${n}`);
    await waitAll([c], 10);
    // A dies; the next connection goes to B, while B publishes more.
    c.origin = b.url;
    await stopExample(a, "SIGKILL");
    for (let n = 10; n < 20; n++) await poster.post(b.url, `seq:${n}`);
    await waitAll([c], 20);
    // C joins after all of it: its own history starts empty, so the resume
    // from B's last id comes from Redis. B stops gracefully.
    const late = await startChat(redis, stream, "move-c");
    c.origin = late.url;
    await stopExample(b, "SIGINT");
    await waitFor(10000, "the client on C", async () => (await stats(late.url)).hub.subscribers >= 1);
    for (let n = 20; n < 25; n++) await poster.post(late.url, `seq:${n}`);
    await waitAll([c], 25);
    await sleep(300);
    checkSameStream([c], poster.accepted());
    poster.checkPerInstanceOrder(c.messages().map((e) => e.data), c.name);
    checkIncreasing(c.messages().map((e) => e.id), "ids");
    const resumes = c.attempts.slice(1).map((t) => `${new URL(t.url).port}:${t.lastEventId}`);
    assert(c.attempts.length >= 3, `only ${c.attempts.length} connections`);
    for (const t of c.attempts.slice(1)) assert(t.lastEventId, `a reconnect without Last-Event-ID: ${t.url}`);
    await stopExample(late);
    return `25 messages, resumed ${resumes.join(", ")}`;
  } finally {
    c.close();
  }
});

await check("a Last-Event-ID from the start of the stream, on an instance started after it: the rest from Redis, then live", 45000, async () => {
  const stream = "scaleout:late";
  const a = await startChat(redis, stream, "late-a");
  const poster = new Poster();
  const first = client(`${a.url}/events?room=lobby`, "client on A");
  await waitSubscribers(a, 1);
  for (let n = 0; n < 30; n++) await poster.post(a.url, `seq:${n}`);
  await waitAll([first], 30);
  const late = await startChat(redis, stream, "late-b");
  const resumeId = first.messages()[2].id;
  const c = client(`${late.url}/events?room=lobby&lastEventId=${encodeURIComponent(resumeId)}`, "client on B");
  try {
    await waitAll([c], 27);
    await waitSubscribers(late, 1);
    await poster.post(late.url, "seq:30");
    await waitAll([c, first], 28);
    await waitAll([first], 31);
    await sleep(300);
    checkSameStream([c], poster.accepted().slice(3));
    checkSameStream([first], poster.accepted());
    assertEqual(c.messages().map((e) => e.id), first.messages().slice(3).map((e) => e.id), "ids on B against A");
    return `resumed after ${resumeId}: ${c.messages().length} messages`;
  } finally {
    c.close();
    first.close();
    await stopExample(late);
    await stopExample(a);
  }
});

await check("Chromium and eventsource through nginx (upstreams A, then B as backup), A killed mid-stream: both resume on B, every message once, no gap", 60000, async () => {
  const stream = "scaleout:nginx";
  const a = await startChat(redis, stream, "nginx-a");
  const b = await startChat(redis, stream, "nginx-b");
  const work = tempDir();
  chmodSync(work, 0o755); // nginx's workers run as nobody when started as root
  const port = await freePort();
  // The style of tests/interop/nginx.sh: nginx's defaults, all state in `work`.
  writeFileSync(
    join(work, "nginx.conf"),
    `worker_processes 1;
pid ${work}/nginx.pid;
error_log ${work}/error.log info;
events { worker_connections 256; }
http {
    access_log ${work}/access.log;
    client_body_temp_path ${work}/client_body;
    proxy_temp_path ${work}/proxy;
    fastcgi_temp_path ${work}/fastcgi;
    uwsgi_temp_path ${work}/uwsgi;
    scgi_temp_path ${work}/scgi;
    # Every stream starts on A; once A is gone nginx passes it to B.
    upstream chat {
        server 127.0.0.1:${a.port};
        server 127.0.0.1:${b.port} backup;
    }
    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass http://chat;
        }
    }
}
`,
  );
  copyFileSync(join(work, "nginx.conf"), join(OUT_DIR, "nginx-scaleout.conf"));
  const nginx = spawn("nginx", ["-e", `${work}/error.log`, "-p", work, "-c", `${work}/nginx.conf`, "-g", "daemon off;"], {
    stdio: "ignore",
  });
  process.on("exit", () => nginx.kill("SIGKILL"));
  const proxy = `http://127.0.0.1:${port}`;
  let browser;
  const node = client(`${proxy}/events?room=lobby`, "eventsource via nginx");
  try {
    await waitFor(10000, "nginx", () => fetch(`${proxy}/stats`).then((r) => r.ok, () => false), 100);
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      timeout: 45000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-quic"],
    });
    const page = await browser.newPage();
    page.setDefaultTimeout(10000);
    await page.goto(`${proxy}/?room=lobby`);
    await page.waitForSelector("#status[data-state=live]");
    // Every event the page's EventSource dispatches, before the page's own
    // de-duplication by id hides a duplicate.
    await page.evaluate(() => {
      window.__log = [];
      for (const type of ["message", "stdsse-gap"]) {
        source.addEventListener(type, (e) => window.__log.push({ type: e.type, data: e.data, id: e.lastEventId }));
      }
    });
    await waitSubscribers(a, 2);
    const poster = new Poster();
    for (let n = 0; n < 10; n++) await poster.post([a, b][n % 2].url, `seq:${n}`);
    const pageLog = () => page.evaluate(() => window.__log);
    const browserClient = { name: "chromium via nginx", get log() { return this.snapshot; }, snapshot: [] };
    const both = (n) => waitFor(10000, "", async () => (browserClient.snapshot = await pageLog()).length >= n && node.log.length >= n).catch(() => false);
    await both(10);
    await stopExample(a, "SIGKILL");
    for (let n = 10; n < 20; n++) await poster.post(b.url, `seq:${n}`);
    await both(20);
    await sleep(300);
    browserClient.snapshot = await pageLog();
    checkSameStream([node, browserClient], poster.accepted());
    poster.checkPerInstanceOrder(node.messages().map((e) => e.data), node.name);
    const shown = await page.$$eval("#messages li", (items) => items.map((li) => li.lastChild.textContent));
    assertEqual(shown, node.messages().map((e) => e.data), "the page's message list");
    assert((await stats(b.url)).hub.subscribers >= 2, "the clients are not on B");
    await page.screenshot({ path: join(OUT_DIR, "chat-moved.png") });
    return `Chromium ${browser.version()}, node: ${node.attempts.length} connections, last resume with ${node.attempts.at(-1).lastEventId}`;
  } finally {
    node.close();
    if (browser) await within(10000, "chromium to close", browser.close()).catch(() => {});
    nginx.kill("SIGTERM");
    copyFileSync(join(work, "error.log"), join(OUT_DIR, "logs", "nginx-scaleout-error.log"));
    await stopExample(b).catch(() => {});
  }
});

finish();
