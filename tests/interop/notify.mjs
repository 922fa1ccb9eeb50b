// The notify example against real clients: Debian's Chromium (a page on
// another origin logs in with fetch and reads its stream with
// `EventSource(..., {withCredentials: true})`; a page on an origin not
// allowed cannot read it) and the `eventsource` npm package (bearer token).
import { createServer } from "node:http";
import { EventSource } from "eventsource";
import { chromium } from "playwright-core";
import { assert, assertEqual, check, finish, sleep, startExample, stopExample, waitFor, within } from "./lib.mjs";

const ADMIN = "admin-token";
const TOKEN = "token-a";

/** A tiny static server on 127.0.0.1:0 (another origin: another port); its origin. */
async function pageServer() {
  const server = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>notify client</title><p>notify client</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

async function notifyUser(base, user, text) {
  const res = await within(
    5000,
    "POST /notify",
    fetch(`${base}/notify?user=${user}`, { method: "POST", headers: { Authorization: `Bearer ${ADMIN}` }, body: text }),
  );
  assertEqual(res.status, 204, `POST /notify answered: ${await res.text()}`);
}

async function subscribers(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(/^stdsse_hub_subscribers (\d+)$/m.exec(text)[1]);
}

/** In the page: log in with fetch, then open the credentialed EventSource. */
function openInPage(page, notifyUrl) {
  return page.evaluate(
    async ({ url, token }) => {
      window.__got = [];
      window.__errors = 0;
      let login;
      try {
        const res = await fetch(`${url}/login`, { method: "POST", body: token, credentials: "include" });
        login = res.status;
      } catch (e) {
        login = `rejected: ${e.name}`;
      }
      const source = new EventSource(`${url}/events`, { withCredentials: true });
      source.onmessage = (e) => window.__got.push({ data: e.data, id: e.lastEventId });
      source.onerror = () => window.__errors++;
      window.__source = source;
      return { login, cookieVisible: document.cookie.includes("session") };
    },
    { url: notifyUrl, token: TOKEN },
  );
}

async function main() {
  const allowed = await pageServer();
  const other = await pageServer();
  const notify = await startExample("notify", {
    args: ["--user", `alice:${TOKEN}`, "--user", "bob:token-b", "--admin", ADMIN, "--allow-origin", allowed.origin],
    tag: "notify",
  });
  let browser;
  await check("chromium: a page on an allowed origin logs in (cookie) and reads its notifications", 45000, async () => {
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu"], timeout: 30000 });
    const page = await browser.newPage();
    await page.goto(`${allowed.origin}/`);
    const opened = await openInPage(page, notify.url);
    assertEqual(opened, { login: 204, cookieVisible: false }, "login status, and the HttpOnly cookie hidden from the page");
    await waitFor(10000, "the page's stream to subscribe", async () => (await subscribers(notify.url)) === 1);
    await notifyUser(notify.url, "bob", "not for alice");
    await notifyUser(notify.url, "alice", "hello alice\nfrom the admin");
    await page.waitForFunction(() => window.__got.length >= 1, null, { timeout: 10000 });
    const got = await page.evaluate(() => window.__got.map((e) => e.data));
    assertEqual(got, ["hello alice\nfrom the admin"], "the page's notifications");
    const state = await page.evaluate(() => window.__source.readyState);
    assertEqual(state, 1, "readyState (OPEN)");
    await page.evaluate(() => window.__source.close());
    await page.close();
    return "SameSite=Lax cookie sent cross-origin (same site), stream read";
  });

  await check("chromium: a page on an origin not allowed cannot read the stream", 30000, async () => {
    assert(browser, "no browser");
    const page = await browser.newPage();
    await page.goto(`${other.origin}/`);
    // The login POST reaches the server, but the page cannot read the answer.
    const opened = await openInPage(page, notify.url);
    assertEqual(opened.login, "rejected: TypeError", "the login fetch");
    // The EventSource fails (no Access-Control-Allow-Origin) and stays closed.
    await page.waitForFunction(() => window.__errors >= 1 && window.__source.readyState === 2, null, { timeout: 10000 });
    await notifyUser(notify.url, "alice", "secret");
    await sleep(300);
    const got = await page.evaluate(() => window.__got);
    assertEqual(got, [], "what the page read");
    await page.close();
    return "fetch rejected, EventSource error and CLOSED, nothing read";
  });
  if (browser) await browser.close();

  await check("eventsource: with a bearer token, the last 10 on connect, then live", 20000, async () => {
    for (let n = 1; n <= 12; n++) await notifyUser(notify.url, "alice", `n${n}`);
    const got = [];
    const source = new EventSource(`${notify.url}/events`, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${TOKEN}` } }),
    });
    source.onmessage = (e) => got.push(e.data);
    try {
      await waitFor(10000, "10 notifications", () => got.length >= 10);
      await notifyUser(notify.url, "alice", "live");
      await waitFor(10000, "the live one", () => got.length >= 11);
      const expected = [...Array(10).keys()].map((i) => `n${i + 3}`).concat(["live"]);
      assertEqual(got, expected, "notifications");
    } finally {
      source.close();
    }
  });

  await check("eventsource: without credentials, a 401 error and no reconnect", 10000, async () => {
    const source = new EventSource(`${notify.url}/events`);
    const error = await within(5000, "the error event", new Promise((resolve) => (source.onerror = resolve)));
    assertEqual([error.code, source.readyState], [401, 2], "error code and readyState");
    source.close();
  });

  await check("notify exits 0 on SIGINT", 15000, async () => {
    const exit = await stopExample(notify);
    assertEqual(exit, { code: 0, signal: null }, "exit");
  });
  allowed.server.close();
  other.server.close();
  finish();
}

main().catch((e) => {
  console.log(`FAIL notify: ${e && e.stack ? e.stack : e}`);
  finish();
});
