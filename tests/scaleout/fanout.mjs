// Two, then three chat instances on one Redis stream: messages posted
// concurrently on every instance reach every subscriber on every instance
// once each, all in one order with the same global ids.
import {
  Poster,
  assertEqual,
  check,
  checkIncreasing,
  checkSameStream,
  client,
  finish,
  freePort,
  startChat,
  startRedis,
  stopExample,
  tempDir,
  waitAll,
  waitSubscribers,
} from "./lib.mjs";

const redis = await startRedis(await freePort(), tempDir());
const stream = "scaleout:fanout";
const instances = [await startChat(redis, stream, "fanout-a"), await startChat(redis, stream, "fanout-b")];
const clients = [];
const poster = new Poster();

/** Two clients on each instance (beyond those there), waited for. */
async function subscribeAll() {
  for (const [i, chat] of instances.entries()) {
    const mine = clients.filter((c) => c.chat === chat);
    while (mine.length < 2) {
      const c = client(`${chat.url}/events?room=lobby`, `client ${mine.length + 1} on instance ${"ABC"[i]}`);
      c.chat = chat;
      mine.push(c);
      clients.push(c);
    }
    await waitSubscribers(chat, 2);
  }
}

/** Every instance posts `each` messages, all instances at once, each in its own order. */
async function postEverywhere(label, each) {
  await Promise.all(
    instances.map(async (chat, i) => {
      for (let n = 0; n < each; n++) {
        const { status } = await poster.post(chat.url, `${label} from:${"ABC"[i]} seq:${n}`);
        if (status !== 204) throw new Error(`instance ${"ABC"[i]} answered ${status}`);
      }
    }),
  );
}

for (const [count, each] of [[2, 30], [3, 20]]) {
  await check(`${count} instances: ${count * each} messages posted concurrently on all of them reach all ${2 * count} subscribers once, in one order`, 40000, async () => {
    if (instances.length < count) instances.push(await startChat(redis, stream, "fanout-c"));
    await subscribeAll();
    const from = new Map(clients.map((c) => [c, c.log.length]));
    const before = poster.accepted().length;
    await postEverywhere(`${count}-instances`, each);
    const accepted = poster.accepted().slice(before);
    await waitAll(clients, accepted.length, 10000, (c) => from.get(c));
    // Whatever was duplicated would have arrived by now.
    await new Promise((r) => setTimeout(r, 300));
    const views = clients.map((c) => ({ name: c.name, log: c.log.slice(from.get(c)) }));
    const order = checkSameStream(views, accepted);
    checkIncreasing(order.map((e) => e.id), "ids");
    // Each instance's own messages keep the order it posted them in.
    poster.checkPerInstanceOrder(order.map((e) => e.data), "the one order");
    const interleaved = order.filter((e, i) => i > 0 && e.data.split(" ")[1] !== order[i - 1].data.split(" ")[1]).length;
    return `${accepted.length} messages, ${interleaved} switches between instances in the one order, ids ${order[0].id} .. ${order.at(-1).id}`;
  });
}

// The chat's documented first line, whatever its Redis threads log: ten
// instances started at once, so a Redis log line has every chance to win.
await check("chat --redis: `listening on` is the first line on stderr (10 instances started at once)", 20000, async () => {
  const started = await Promise.all([...Array(10).keys()].map((i) => startChat(redis, stream, `first-line-${i}`)));
  await Promise.all(started.map((chat) => stopExample(chat)));
  const wrong = started.filter((chat) => !chat.firstLine.startsWith("listening on "));
  assertEqual(wrong.map((chat) => chat.firstLine), [], "first lines that are not `listening on`");
});

for (const c of clients) c.close();
finish();
