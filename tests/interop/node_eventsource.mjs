// The `eventsource` npm package (the WHATWG EventSource for Node) against
// the clock and chat examples.
import { EventSource } from "eventsource";
import {
  LARGEST,
  RFC3339,
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

const HUB_ID = /^([0-9a-f]{8})-(\d+)$/;

/** An EventSource whose every connection attempt is recorded (time, headers). */
function recordingSource(url) {
  const attempts = [];
  const log = [];
  const source = new EventSource(url, {
    fetch: (input, init) => {
      attempts.push({ at: Date.now(), headers: { ...(init && init.headers) } });
      return fetch(input, init);
    },
  });
  const errors = [];
  source.addEventListener("error", () => errors.push(Date.now()));
  let opens = 0;
  source.addEventListener("open", () => opens++);
  for (const type of ["message", "stdsse-gap"]) {
    source.addEventListener(type, (e) => log.push({ type: e.type, data: e.data, id: e.lastEventId }));
  }
  return { source, attempts, errors, log, opens: () => opens };
}

// The texts posted to the chat; each must come back exactly as posted.
const TEXTS = [
  "hello",
  "line one\nline two\nline three",
  "  two leading spaces",
  " one leading space",
  "trailing spaces   ",
  "unicode: h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \u2014 \u{1F389} \u00a0nbsp",
  "\n",
  "a\n\nb",
  "ends with a newline\n",
  "data: looks like a field\nid: not an id\n: not a comment",
  "tab\there",
  " ",
];

async function main() {
  // Named events and ids: the clock's `event: time` / `id: evt-N`.
  await check("eventsource: named `time` events with ids evt-1, evt-2, evt-3 (clock)", 15000, async () => {
    const clock = await startExample("clock", { args: ["--interval-ms", "100"], tag: "node-clock" });
    const source = new EventSource(`${clock.url}/events`);
    const seen = [];
    let unnamed = 0;
    source.onmessage = () => unnamed++;
    source.addEventListener("time", (e) => seen.push({ type: e.type, id: e.lastEventId, data: e.data }));
    try {
      await waitFor(10000, "3 time events", () => seen.length >= 3);
    } finally {
      source.close();
      await stopExample(clock);
    }
    assertEqual(seen.slice(0, 3).map((e) => e.id), ["evt-1", "evt-2", "evt-3"], "ids");
    for (const e of seen) {
      assertEqual(e.type, "time", "event type");
      assert(RFC3339.test(e.data), `data is not RFC 3339: ${JSON.stringify(e.data)}`);
    }
    assertEqual(unnamed, 0, "events dispatched to onmessage");
    return seen.slice(0, 3).map((e) => `${e.id}=${e.data}`).join(", ");
  });

  let chat = await startExample("chat", { tag: "node-chat" });
  const port = chat.port;
  const rec = recordingSource(`${chat.url}/events`);
  const messages = () => rec.log.filter((e) => e.type === "message");

  await check("eventsource: multi-line, unicode, spaces, empty lines, ids (chat)", 20000, async () => {
    await waitFor(5000, "the stream to open", () => rec.source.readyState === EventSource.OPEN);
    // The response head comes before the hub subscription: wait for the latter.
    await waitFor(5000, "the hub subscription", async () => (await stats(chat.url)).hub.subscribers >= 1);
    for (const text of TEXTS) await post(chat.url, text);
    await waitFor(5000, `${TEXTS.length} messages`, () => messages().length >= TEXTS.length);
    const got = messages();
    assertEqual(got.length, TEXTS.length, "number of messages");
    let previous = 0;
    let epoch = null;
    got.forEach((e, i) => {
      assertEqual(e.data, TEXTS[i], `message ${i} data`);
      const m = e.id.match(HUB_ID);
      assert(m, `message ${i}: lastEventId ${JSON.stringify(e.id)} is not <epoch>-<n>`);
      epoch = epoch || m[1];
      assertEqual(m[1], epoch, `message ${i} epoch`);
      assert(Number(m[2]) > previous, `message ${i}: ids do not increase (${e.id})`);
      previous = Number(m[2]);
    });
    return `${got.length} messages, ids ${got[0].id} .. ${got[got.length - 1].id}`;
  });

  await check("eventsource: the chat's largest message (MAX_MESSAGE, 64 KiB) arrives byte-exact", 20000, async () => {
    assertEqual(Buffer.byteLength(LARGEST), 64 * 1024, "bytes posted");
    const before = messages().length;
    await post(chat.url, LARGEST);
    await waitFor(5000, "the message", () => messages().length > before);
    assert(messages()[before].data === LARGEST, `got ${messages()[before].data.length} chars, not the message`);
  });

  await check("eventsource: `retry: 1000` honoured after the server dies (SIGKILL, restart on the same port)", 20000, async () => {
    const lastId = messages().at(-1).id;
    const before = { attempts: rec.attempts.length, errors: rec.errors.length, log: rec.log.length };
    await stopExample(chat, "SIGKILL");
    chat = await startExample("chat", { addr: `127.0.0.1:${port}`, tag: "node-chat-restarted" });
    await waitFor(8000, "a reconnect attempt", () => rec.attempts.length > before.attempts);
    const lost = rec.errors[before.errors];
    assert(lost, "no error event when the connection dropped");
    const delay = rec.attempts[before.attempts].at - lost;
    // The stream began with `retry: 1000`; the package's own default is 3000.
    assert(delay >= 700 && delay <= 2200, `reconnected ${delay} ms after the drop, expected about 1000`);
    assertEqual(rec.attempts[before.attempts].headers["Last-Event-ID"], lastId, "Last-Event-ID sent");
    await waitFor(5000, "the stream to reopen", () => rec.source.readyState === EventSource.OPEN && rec.log.length > before.log);
    assertEqual(rec.log[before.log].type, "stdsse-gap", "first event after the restart");
    return `reconnected after ${delay} ms with Last-Event-ID ${lastId}`;
  });

  await check("eventsource: reconnect with Last-Event-ID after a graceful restart: gap signal, then the 2 new messages", 25000, async () => {
    // A fresh message in this hub, so that the id the client sends is a real one.
    await post(chat.url, "before the restart");
    await waitFor(5000, "the message", () => messages().at(-1).data === "before the restart");
    const lastId = messages().at(-1).id;
    const before = { attempts: rec.attempts.length, errors: rec.errors.length, log: rec.log.length };
    const exit = await stopExample(chat, "SIGINT");
    assertEqual(exit.code, 0, "chat's exit status after SIGINT");
    chat = await startExample("chat", { addr: `127.0.0.1:${port}`, tag: "node-chat-restarted" });
    await post(chat.url, "after restart 1");
    await post(chat.url, "after restart 2\nsecond line");
    const postedAt = Date.now();
    await waitFor(8000, "a reconnect attempt", () => rec.attempts.length > before.attempts);
    const reconnectAt = rec.attempts[before.attempts].at;
    const delay = reconnectAt - rec.errors[before.errors];
    assertEqual(rec.attempts[before.attempts].headers["Last-Event-ID"], lastId, "Last-Event-ID sent");
    await waitFor(8000, "gap + 2 messages", () => rec.log.length >= before.log + 3);
    await sleep(300); // anything duplicated would show up now
    const after = rec.log.slice(before.log).map(({ type, data }) => ({ type, data }));
    assertEqual(after.slice(1), [
      { type: "message", data: "after restart 1" },
      { type: "message", data: "after restart 2\nsecond line" },
    ], "events after the restart");
    assertEqual(after[0].type, "stdsse-gap", "first event after the restart");
    // The server saw an id it does not know (a new hub epoch).
    const s = await stats(chat.url);
    assert(s.hub.replay_misses >= 1, `server replay_misses = ${s.hub.replay_misses}`);
    // The hub's close hint is retry 500..2000 ms.
    assert(delay >= 400 && delay <= 2600, `reconnected ${delay} ms after the close, expected 500..2000`);
    return `gap "${after[0].data}", posted ${reconnectAt - postedAt > 0 ? "before" : "after"} the reconnect, reconnect delay ${delay} ms`;
  });

  rec.source.close();
  await check("chat exits 0 on SIGINT", 15000, async () => {
    const exit = await stopExample(chat, "SIGINT");
    assertEqual(exit.code, 0, "exit status");
  });
  finish();
}

main().catch((e) => {
  console.log(`FAIL node_eventsource.mjs crashed: ${e && e.stack ? e.stack : e}`);
  finish();
});
