// Redis goes away under two chat instances: restarted with its data (no
// loss), stopped for 5 s (503 + Retry-After everywhere, streams kept open,
// then everything after), restarted empty and FLUSHALL (a resuming client
// gets `stdsse-gap`, never events that only look like they follow).
import {
  Poster,
  assert,
  assertEqual,
  check,
  checkSameStream,
  client,
  finish,
  freePort,
  rawStream,
  redisCli,
  sleep,
  startChat,
  startRedis,
  stopExample,
  stopRedis,
  tempDir,
  waitAll,
  waitFor,
  waitSubscribers,
} from "./lib.mjs";

const port = await freePort();
let redis = await startRedis(port, tempDir());
const stream = "scaleout:loss";
const [a, b] = [await startChat(redis, stream, "loss-a"), await startChat(redis, stream, "loss-b")];
const clients = [client(`${a.url}/events?room=lobby`, "client on A"), client(`${b.url}/events?room=lobby`, "client on B")];
await waitSubscribers(a, 1);
await waitSubscribers(b, 1);
const poster = new Poster();

/**
 * Posts `count` messages, alternating between A and B, each until accepted
 * (a refusal after Redis came back is counted by the last check).
 */
async function postSome(label, count) {
  for (let n = 0; n < count; n++) await poster.postUntilAccepted([a, b][n % 2].url, `${label} seq:${n}`);
}

// When Redis came back and both instances accepted a post again, and when
// it was lost next.
const returns = [];
const lost = () => returns.length && (returns.at(-1).end ??= Date.now());

/** Waits until both instances accept a post again (after a Redis restart). */
async function waitAccepting(label) {
  const tries = [];
  for (const chat of [a, b]) tries.push(await poster.postUntilAccepted(chat.url, `${label} on:${chat.url}`));
  returns.push({ label, at: Date.now() });
  return tries;
}

/** All of the clients have every accepted message, once, in one order. */
async function checkClients() {
  const accepted = poster.accepted();
  await waitAll(clients, accepted.length);
  await sleep(300);
  checkSameStream(clients, accepted);
  return accepted.length;
}

await check("Redis restarted with its data (AOF on): no loss, no gap, and an instance started after it replays from before the restart", 40000, async () => {
  await postSome("before-restart", 10);
  await waitAll(clients, 10);
  const resumeId = clients[0].messages()[4].id;
  lost();
  await stopRedis(redis, "shutdown");
  redis = await startRedis(port, redis.dir);
  const tries = await waitAccepting("after-restart");
  await postSome("after-restart", 10);
  const n = await checkClients();
  const late = await startChat(redis, stream, "loss-late");
  const c = client(`${late.url}/events?room=lobby&lastEventId=${encodeURIComponent(resumeId)}`, "client on a later instance");
  try {
    // What followed the resume id in the one order (a 204 means queued: Redis
    // orders posts to two instances, not the order they were answered in).
    const after = clients[0].messages().slice(5);
    const want = after.map((e) => e.data);
    await waitAll([c], want.length);
    await sleep(300);
    checkSameStream([c], want);
    assertEqual(c.messages().map((e) => e.id), after.map((e) => e.id), "ids on the later instance against A");
  } finally {
    c.close();
    await stopExample(late);
  }
  return `${n} messages on both, the first post after the restart accepted at try ${tries.join(" / ")}`;
});

await check("Redis stopped for 5 s: posts fail with 503 + Retry-After on both instances, streams stay open with keep-alives, then every later message arrives once", 45000, async () => {
  const raws = [rawStream(`${a.url}/events?room=lobby`), rawStream(`${b.url}/events?room=lobby`)];
  try {
    await waitSubscribers(a, 2);
    await waitSubscribers(b, 2);
    await postSome("before-outage", 4);
    await waitAll(clients, poster.accepted().length);
    const attemptsBefore = clients.map((c) => c.attempts.length);
    lost();
  await stopRedis(redis, "shutdown");
    const down = Date.now();
    const window = [];
    // Until 5 s after the stop, one post every 200 ms, alternating.
    for (let n = 0; Date.now() - down < 5000; n++) {
      window.push(await poster.post([a, b][n % 2].url, `outage seq:${n}`));
      await sleep(200);
    }
    const keepAlives = raws.map((r) => r.comments.filter((t) => t > down).length);
    redis = await startRedis(port, redis.dir);
    const firstRefusal = window.find((p) => p.status === 503);
    assert(firstRefusal, "no post was refused while Redis was down");
    const detected = firstRefusal.at - down;
    // After a second to notice, every post must be refused, with Retry-After.
    const late = window.filter((p) => p.at - down > 1000);
    for (const p of late) assertEqual([p.status, p.retryAfter], [503, "1"], `${p.text} (${p.at - down} ms after the stop)`);
    for (const p of window.filter((p) => p.status === 503)) assertEqual(p.retryAfter, "1", `${p.text}: Retry-After`);
    for (const [i, r] of raws.entries()) {
      assert(!r.ended, `raw stream ${"AB"[i]} ended: ${r.error || "closed"}`);
      assert(keepAlives[i] >= 3, `raw stream ${"AB"[i]}: ${keepAlives[i]} keep-alives in the 5 s`);
    }
    clients.forEach((c, i) => assertEqual(c.attempts.length, attemptsBefore[i], `${c.name}: reconnects during the outage`));
    const tries = await waitAccepting("after-outage");
    await postSome("after-outage", 10);
    const n = await checkClients();
    return `first 503 ${detected} ms after the stop, ${window.filter((p) => p.status === 503).length}/${window.length} posts refused, keep-alives ${keepAlives.join("/")}, accepted again at try ${tries.join("/")}, ${n} messages`;
  } finally {
    for (const r of raws) r.close();
  }
});

/**
 * Resumes from `id` (issued before the loss of `preLoss`) on A, B and an
 * instance started now: each must get the gap signal first, nothing from
 * before the loss, and the messages posted after it connected.
 */
async function checkGapOnResume(id, label, preLoss) {
  const late = await startChat(redis, stream, `loss-${label}`);
  // A post after the loss, so that every instance has seen the new stream.
  await poster.postUntilAccepted(a.url, `${label} first`);
  const resumers = [a, b, late].map((chat, i) =>
    client(`${chat.url}/events?room=lobby&lastEventId=${encodeURIComponent(id)}`, `resuming on ${"ABC"[i]}`),
  );
  try {
    await waitFor(10000, "the resuming clients' first event", () => resumers.every((c) => c.log.length >= 1));
    const from = poster.accepted().length;
    await poster.postUntilAccepted(b.url, `${label} second`);
    await poster.postUntilAccepted(late.url, `${label} third`);
    // Posted to two instances one after the other: in the order Redis gave them.
    const wanted = poster.accepted().slice(from).sort();
    const tail = (c) => c.messages().slice(-wanted.length).map((e) => e.data);
    const had = () => resumers.map((c) => `${c.name}: ${c.log.map((e) => e.type === "message" ? e.data : e.type).join(", ")}`);
    await waitFor(10000, "the new messages", () => resumers.every((c) => [...tail(c)].sort().join() === wanted.join())).catch((e) => {
      throw new Error(`${e.message} (${wanted.join(", ")}); ${had().join("; ")}`);
    });
    await sleep(300);
    for (const c of resumers) {
      assertEqual(c.log[0].type, "stdsse-gap", `${c.name}: the first event`);
      const old = c.messages().filter((e) => preLoss.has(e.data));
      assert(!old.length, `${c.name}: ${old.length} messages from before the loss after the gap (${old[0]?.data} ${old[0]?.id} ..)`);
      assertEqual([...tail(c)].sort(), wanted, `${c.name}: the messages after the gap`);
      assertEqual(tail(c), tail(resumers[0]), `${c.name}: their order against ${resumers[0].name}`);
      const texts = c.messages().map((e) => e.data);
      assertEqual(texts.length, new Set(texts).size, `${c.name}: messages without duplicates`);
    }
    return resumers.map((c) => `${c.name}: gap ${JSON.stringify(c.log[0].data)}`).join("; ");
  } finally {
    for (const c of resumers) c.close();
    await stopExample(late);
  }
}

await check("Redis restarted empty: resuming clients get stdsse-gap on every instance (also one started after), then only the new messages", 40000, async () => {
  const id = clients[0].messages().at(-1).id;
  const preLoss = new Set(poster.accepted());
  lost();
  await stopRedis(redis, "kill");
  redis = await startRedis(port, tempDir());
  await waitAccepting("after-empty-restart");
  return checkGapOnResume(id, "empty", preLoss);
});

await check("FLUSHALL: resuming clients get stdsse-gap on every instance (also one started after), then only the new messages", 40000, async () => {
  await postSome("before-flush", 2);
  await waitFor(5000, "the last message", () => clients[1].messages().at(-1)?.data === poster.accepted().at(-1));
  const id = clients[1].messages().at(-1).id;
  const preLoss = new Set(poster.accepted());
  lost();
  assertEqual(await redisCli(port, "FLUSHALL"), "OK", "FLUSHALL");
  return checkGapOnResume(id, "flush", preLoss);
});

await check("once Redis is back and both instances accepted a post, neither refuses one until Redis is lost again", 1000, () => {
  const flaps = returns.flatMap(({ label, at, end }) =>
    poster.sent.filter((p) => p.at > at && p.at < (end ?? Infinity) && p.status !== 204).map((p) => `${label}: ${p.text} ${p.status}`),
  );
  assertEqual(flaps, [], "refused posts");
  return `${returns.length} returns`;
});

for (const c of clients) c.close();
await stopExample(a).catch(() => {});
await stopExample(b).catch(() => {});
finish();
