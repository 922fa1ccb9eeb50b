// Debian's Chromium, headless, driven by playwright-core: the clock and chat
// pages as a person uses them, the chat across a server restart.
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  LARGEST,
  RFC3339,
  OUT_DIR,
  assert,
  assertEqual,
  check,
  finish,
  post,
  sleep,
  startExample,
  stats,
  stopExample,
  waitFor,
} from "./lib.mjs";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

let browser;

/** The chat page's messages as [{ id, text }] (the time stamp left out). */
function messagesOf(page) {
  return page.$$eval("#messages li", (items) =>
    items.map((li) => ({ id: li.dataset.id, text: li.lastChild ? li.lastChild.textContent : "" })),
  );
}

/** Records every change of the status badge as [state, time] in window.__states. */
async function watchStatus(page) {
  await page.evaluate(() => {
    const status = document.getElementById("status");
    window.__states = [[status.dataset.state, Date.now()]];
    new MutationObserver(() => window.__states.push([status.dataset.state, Date.now()])).observe(status, {
      attributes: true,
      attributeFilter: ["data-state"],
    });
  });
}

async function main() {
  await check("chromium starts (playwright-core, /usr/bin/chromium)", 60000, async () => {
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ARGS, timeout: 45000 });
    return `Chromium ${browser.version()}`;
  });
  if (!browser) return finish();

  await check("browser: clock page shows named `time` events evt-1, evt-2, evt-3", 30000, async () => {
    const clock = await startExample("clock", { args: ["--interval-ms", "300"], tag: "browser-clock" });
    const page = await browser.newPage();
    page.setDefaultTimeout(10000);
    try {
      await page.goto(`${clock.url}/`);
      await page.waitForFunction(() => document.querySelectorAll("#log li").length >= 3);
      // The list is newest first and keeps 10: the three oldest are the first ticks.
      const ids = await page.$$eval("#log li", (items) => items.map((li) => li.dataset.id).reverse());
      assertEqual(ids.slice(0, 3), ["evt-1", "evt-2", "evt-3"], "ids shown on the page");
      const state = await page.textContent("#state");
      assertEqual(state, "live", "the page's state");
      const time = await page.textContent("#time");
      assert(RFC3339.test(time), `#time is not RFC 3339: ${JSON.stringify(time)}`);
      // And an EventSource of our own in the page: type, id and data per event.
      const events = await page.evaluate(
        () =>
          new Promise((resolve, reject) => {
            const source = new EventSource("/events");
            const seen = [];
            source.onmessage = (e) => reject(new Error("unnamed event: " + e.data));
            source.addEventListener("time", (e) => {
              seen.push({ type: e.type, id: e.lastEventId, data: e.data });
              if (seen.length === 3) {
                source.close();
                resolve(seen);
              }
            });
            setTimeout(() => reject(new Error("fewer than 3 events in 8 s")), 8000);
          }),
      );
      assertEqual(events.map((e) => e.id), ["evt-1", "evt-2", "evt-3"], "ids from the page's EventSource");
      for (const e of events) {
        assertEqual(e.type, "time", "type");
        assert(RFC3339.test(e.data), `data is not RFC 3339: ${JSON.stringify(e.data)}`);
      }
      await page.screenshot({ path: join(OUT_DIR, "clock.png") });
      return `page list ${ids.slice(0, 3).join(", ")}; EventSource ${events.map((e) => e.id).join(", ")}`;
    } finally {
      await page.close();
      await stopExample(clock);
    }
  });

  let chat = await startExample("chat", { tag: "browser-chat" });
  const port = chat.port;
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const pages = [await context.newPage(), await context.newPage()];
  for (const page of pages) page.setDefaultTimeout(10000);
  const fromA = "Hello from page A \u2014 h\u00e9llo w\u00f6rld";
  const fromB = "And page B answers";

  const ok = { sent: false };
  await check("browser: chat message typed in one page appears in both", 30000, async () => {
    for (const page of pages) {
      await page.goto(`${chat.url}/`);
      await page.waitForSelector("#status[data-state=live]");
    }
    // The response head comes before the hub subscription: wait for the latter.
    await waitFor(5000, "2 hub subscriptions", async () => (await stats(chat.url)).hub.subscribers >= 2);
    // Page A: type and press Enter. Page B: type and click Send.
    await pages[0].fill("#text", fromA);
    await pages[0].press("#text", "Enter");
    await pages[1].fill("#text", fromB);
    await pages[1].click("#send button[type=submit]");
    for (const page of pages) {
      await waitFor(10000, "both messages on both pages", async () => (await messagesOf(page)).length >= 2);
      assertEqual((await messagesOf(page)).map((m) => m.text), [fromA, fromB], "messages shown");
      assertEqual(await page.inputValue("#text"), "", "the textarea after sending");
    }
    ok.sent = true;
    const ids = (await messagesOf(pages[0])).map((m) => m.id);
    return `ids ${ids.join(", ")} on both pages`;
  });

  await check("browser: chat page reconnects by itself after a restart, shows both new messages once, and the gap notice", 45000, async () => {
    assert(ok.sent, "the previous check failed");
    for (const page of pages) await watchStatus(page);
    const exit = await stopExample(chat, "SIGINT");
    assertEqual(exit.code, 0, "chat's exit status after SIGINT");
    chat = await startExample("chat", { addr: `127.0.0.1:${port}`, tag: "browser-chat-restarted" });
    const m1 = "First after the restart";
    const m2 = "Second after the restart\n  with a second, indented line";
    await post(chat.url, m1);
    await post(chat.url, m2);
    const postedAt = Date.now();
    for (const [i, page] of pages.entries()) {
      // Wait until the page is live again (by itself: nothing here touches it).
      await page.waitForFunction(
        () => window.__states.some(([s]) => s === "reconnecting") && window.__states.at(-1)[0] === "live",
        null,
        { timeout: 15000 },
      );
      const states = await page.evaluate(() => window.__states);
      const liveAgainAt = states.at(-1)[1];
      assert(liveAgainAt > postedAt, `page ${i}: live again before the two messages were posted (${states.map((s) => s[0])})`);
      await waitFor(10000, "the two new messages", async () => (await messagesOf(page)).length >= 4);
    }
    await sleep(500); // a duplicate would show up by now
    const expected = [fromA, fromB, m1, m2];
    for (const [i, page] of pages.entries()) {
      const shown = (await messagesOf(page)).map((m) => m.text);
      assertEqual(shown, expected, `page ${i}: messages shown (each exactly once)`);
      assert(await page.isVisible("#notice"), `page ${i}: the notice is not visible`);
      const notice = await page.textContent("#notice");
      assert(/earlier messages may be missing/i.test(notice), `page ${i}: notice says ${JSON.stringify(notice)}`);
    }
    // Server side: both pages came back with a Last-Event-ID this new hub
    // does not know (the old epoch), which is what triggered the gap signal.
    const s = await stats(chat.url);
    assert(s.hub.replay_misses >= 2, `server replay_misses = ${s.hub.replay_misses}, expected 2 (one per page)`);
    await pages[0].screenshot({ path: join(OUT_DIR, "chat.png") });
    await pages[1].screenshot({ path: join(OUT_DIR, "chat-b.png") });
    const states = await pages[0].evaluate(() => window.__states.map(([s]) => s).join(" > "));
    return `status ${states}; replay_misses ${s.hub.replay_misses}; screenshot ${join(OUT_DIR, "chat.png")}`;
  });

  await check("browser: the chat's largest message (MAX_MESSAGE, 64 KiB) is shown byte-exact", 30000, async () => {
    await post(chat.url, LARGEST);
    for (const [i, page] of pages.entries()) {
      await waitFor(10000, `page ${i}: the message`, async () =>
        (await messagesOf(page)).some((m) => m.text === LARGEST),
      );
    }
  });

  await context.close();
  await browser.close();
  await stopExample(chat);
  finish();
}

main().catch(async (e) => {
  console.log(`FAIL browser.mjs crashed: ${e && e.stack ? e.stack : e}`);
  if (browser) await browser.close().catch(() => {});
  finish();
});
