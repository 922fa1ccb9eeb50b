//! A chat room server: the broadcast hub behind a real page.
//!
//! ```text
//! cargo run --example chat -- --addr 127.0.0.1:8080
//! ```
//!
//! * `GET /`: the chat page (plain HTML, CSS and JavaScript, works offline):
//!   messages, an input box, a room switcher, a connection indicator; after
//!   a reconnect it shows what it missed, without duplicates, and says so
//!   when earlier messages may be missing.
//! * `GET /events?room=R` (room `lobby` when absent): the room's event
//!   stream. Each message is `event: message`, `id:` the hub's id, `data:`
//!   the text exactly as posted (multi-line text stays multi-line).
//!   `Last-Event-ID` (header, or `lastEventId` query parameter) resumes
//!   through the hub's history.
//! * `POST /messages?room=R`, the text as the body (UTF-8, at most
//!   `common::MAX_MESSAGE`, 64 KiB):
//!   `204`, and the message is broadcast; empty or invalid UTF-8: `400`;
//!   too large: `413`.
//! * `GET /stats`: the hub's and the server's counters as JSON;
//!   `GET /metrics`: the same for Prometheus.
//! * Ctrl+C: graceful shutdown, exit status 0.
//!
//! The first line on stderr is `listening on http://HOST:PORT`.
//! `--fanout-threads N` sets the hub's writer threads (default: one per core);
//! `--keep-alive-ms N` the idle time before a keep-alive comment (default
//! 15000).
//!
//! `--redis redis://[user:password@]host[:port][/db]` shares the rooms with
//! every chat on that Redis stream (`--stream NAME`, default `stdsse:chat`):
//! a message posted to any of them reaches every client of all of them, in
//! one order, and a client resumes on any of them. While Redis is down a
//! post gets `503` with `Retry-After: 1`. Its connections' changes go to
//! stderr as `redis: ...`. Without `--redis` the chat runs in-process.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use stdsse::hub::{Hub, HubLogKind, PublishError, PublishErrorKind, Subscription};
use stdsse::{Event, Request, Response, Server};

const USAGE: &str = "chat [--addr 127.0.0.1:8080] [--max-connections 12000] [--fanout-threads N] \
                     [--keep-alive-ms 15000] [--redis URL [--stream stdsse:chat]]";

fn room(req: &Request) -> String {
    req.query_param("room").filter(|r| !r.is_empty()).unwrap_or_else(|| "lobby".to_string())
}

fn post_message(hub: &Hub, req: &Request) -> Response {
    let text = match common::message_text(req) {
        Ok(text) => text,
        Err(refusal) => return refusal,
    };
    let event = match Event::new().event("message") {
        Ok(event) => event.data(text),
        Err(e) => return Response::text(500, format!("{e}\n")),
    };
    match hub.publish_to(&[room(req)], event) {
        Ok(()) => Response::new(204),
        Err(PublishError(_, PublishErrorKind::Unavailable)) => {
            Response::text(503, "the message store is unavailable, try again\n")
                .header("Retry-After", "1")
        }
        Err(_) => Response::text(503, "the server is shutting down\n"),
    }
}

fn main() -> std::io::Result<()> {
    let options = common::Options::parse(
        &["addr", "max-connections", "fanout-threads", "keep-alive-ms", "redis", "stream"],
        USAGE,
    );
    let addr = options.get("addr", "127.0.0.1:8080");
    let max_connections = options.number("max-connections", 12_000) as usize;
    let keep_alive = Duration::from_millis(options.number("keep-alive-ms", 15_000).max(1));

    // The listening line first, before anything the hub logs.
    let mut server = Server::bind(&addr)?;
    common::print_listening(&server);
    let mut hub = Hub::builder();
    if let Some(threads) = options.optional("fanout-threads") {
        hub = hub.fanout_threads(threads as usize);
    }
    if let Some(url) = options.all("redis").pop() {
        hub = hub.redis(&url, &options.get("stream", "stdsse:chat"));
        // Connected, lost (why) and epoch changes, on stderr.
        hub = hub.log(|log| {
            if let HubLogKind::Redis(what) = log.kind {
                common::eprint_line(&format!("redis: {what:?}"));
            }
        });
    }
    let hub = hub
        .keep_alive(Some(keep_alive))
        .close_retry(Duration::from_millis(500), Duration::from_millis(1500))
        .build()?;
    server
        .max_connections(max_connections)
        .limits(common::message_limits())
        .initial_retry(Some(Duration::from_secs(1)))
        .keep_alive(Some(keep_alive))
        .log(common::log_to_stderr)
        .get("/", |_req| Response::html(200, PAGE));
    // A public room: anyone may read any room (Last-Event-ID is applied
    // by the hub's handler).
    server.sse("/events", hub.handler(|req| Ok(Subscription::new().topic(room(req)))));
    let post_hub = hub.clone();
    server.post("/messages", move |req| post_message(&post_hub, req));
    common::stats_route(&mut server, &hub);
    common::metrics_route(&mut server, &hub);
    // `common::serve_until_ctrl_c` without its listening line.
    let handle = server.handle();
    common::on_ctrl_c(move || {
        let _ = hub.close();
        handle.shutdown();
    });
    server.run()
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stdsse chat</title>
<style>
  :root { --accent: #2563eb; --muted: #6b7280; --line: #e5e7eb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827;
         display: flex; flex-direction: column; height: 100vh; }
  header { display: flex; align-items: center; gap: 1em; padding: .6em 1em; border-bottom: 1px solid var(--line); }
  h1 { font-size: 1.1em; margin: 0; }
  #status { margin-left: auto; font-size: .85em; padding: .15em .6em; border-radius: 1em; color: white; }
  #status[data-state=connecting] { background: #d97706; }
  #status[data-state=live] { background: #16a34a; }
  #status[data-state=reconnecting] { background: #dc2626; }
  #status[data-state=closed] { background: #4b5563; }
  nav { display: flex; gap: .4em; padding: .5em 1em; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  nav button { border: 1px solid var(--line); background: white; border-radius: .4em; padding: .25em .7em; cursor: pointer; }
  nav button[aria-current=true] { background: var(--accent); color: white; border-color: var(--accent); }
  nav input { width: 9em; border: 1px solid var(--line); border-radius: .4em; padding: .25em .5em; }
  #notice { margin: .5em 1em 0; padding: .5em .8em; background: #fef3c7; border: 1px solid #fcd34d; border-radius: .4em; }
  #messages { flex: 1; overflow-y: auto; list-style: none; margin: 0; padding: .5em 1em; }
  #messages li { padding: .35em 0; border-bottom: 1px solid #f3f4f6; white-space: pre-wrap; word-break: break-word; }
  #messages li small { color: var(--muted); margin-right: .6em; font-variant-numeric: tabular-nums; }
  form { display: flex; gap: .5em; padding: .6em 1em; border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: vertical; min-height: 2.6em; font: inherit; padding: .4em; border: 1px solid var(--line); border-radius: .4em; }
  form button { background: var(--accent); color: white; border: 0; border-radius: .4em; padding: 0 1.2em; font: inherit; cursor: pointer; }
</style>
</head>
<body>
<header><h1>stdsse chat</h1><span id="room-name"></span><span id="status" data-state="connecting">connecting</span></header>
<nav id="rooms" aria-label="Rooms">
  <button data-room="lobby">lobby</button>
  <button data-room="random">random</button>
  <button data-room="help">help</button>
  <input id="new-room" placeholder="other room..." aria-label="Join another room">
</nav>
<div id="notice" role="status" hidden></div>
<ul id="messages" aria-live="polite"></ul>
<form id="send">
  <textarea id="text" placeholder="Message (Enter sends, Shift+Enter adds a line)" aria-label="Message"></textarea>
  <button type="submit">Send</button>
</form>
<script>
"use strict";
// Messages per room, so switching rooms and reconnecting never shows one twice.
const rooms = new Map();           // room -> { ids: Set, messages: [], lastId: "" }
let room = new URLSearchParams(location.search).get("room") || "lobby";
let source = null;

const $ = (id) => document.getElementById(id);
function state(name) { const s = $("status"); s.dataset.state = name; s.textContent = name; }
function notice(text) { const n = $("notice"); n.textContent = text; n.hidden = !text; }
function roomState(name) {
  if (!rooms.has(name)) rooms.set(name, { ids: new Set(), messages: [], lastId: "" });
  return rooms.get(name);
}
function render() {
  const list = $("messages");
  list.replaceChildren(...roomState(room).messages.map(({ id, text, at }) => {
    const li = document.createElement("li");
    li.dataset.id = id;
    const time = document.createElement("small");
    time.textContent = at;
    li.append(time, text);
    return li;
  }));
  list.scrollTop = list.scrollHeight;
  $("room-name").textContent = "# " + room;
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-current", b.dataset.room === room);
}
function connect() {
  if (source) source.close();
  const r = roomState(room);
  const params = new URLSearchParams({ room });
  // Coming back to a room: ask for what was missed since the last message seen.
  if (r.lastId) params.set("lastEventId", r.lastId);
  state("connecting");
  const current = room;
  source = new EventSource("/events?" + params);
  source.onopen = () => state("live");
  source.onerror = () => state(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  source.addEventListener("message", (e) => {
    const rs = roomState(current);
    if (rs.ids.has(e.lastEventId)) return;   // already shown
    rs.ids.add(e.lastEventId);
    rs.lastId = e.lastEventId;
    rs.messages.push({ id: e.lastEventId, text: e.data, at: new Date().toLocaleTimeString() });
    if (rs.messages.length > 500) rs.messages.shift();
    if (current === room) render();
  });
  // The hub's gap signal: the server no longer knows our last message.
  source.addEventListener("stdsse-gap", () => {
    notice("Earlier messages may be missing: the server restarted or this page was away too long.");
  });
}
function join(name) {
  name = name.trim();
  if (!name || name === room) return;
  room = name;
  notice("");
  history.replaceState(null, "", "?room=" + encodeURIComponent(room));
  render();
  connect();
}
$("rooms").addEventListener("click", (e) => { if (e.target.dataset.room) join(e.target.dataset.room); });
$("new-room").addEventListener("keydown", (e) => { if (e.key === "Enter") { join(e.target.value); e.target.value = ""; } });
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("send").requestSubmit(); }
});
$("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  try {
    const res = await fetch("/messages?room=" + encodeURIComponent(room), { method: "POST", body: text });
    if (res.ok) { $("text").value = ""; } else { notice("Not sent: " + (await res.text())); }
  } catch (err) {
    notice("Not sent: the server cannot be reached.");
  }
});
render();
connect();
</script>
</body>
</html>
"##;
