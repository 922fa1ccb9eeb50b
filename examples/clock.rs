//! A live clock over Server-Sent Events.
//!
//! ```text
//! cargo run --example clock -- --addr 127.0.0.1:8080 --interval-ms 1000
//! ```
//!
//! * `GET /events`: a `: connected` comment, then every interval an event
//!   `event: time`, `id: evt-N` (N = 1, 2, 3, ...), `data:` the UTC time in
//!   RFC 3339. A reconnect with `Last-Event-ID: evt-K` continues at
//!   `evt-(K+1)`. Ids stop growing at `evt-18446744073709551615` (the
//!   largest u64): later ticks repeat it rather than wrap to `evt-0`. Any
//!   other `Last-Event-ID` (not `evt-` and a u64) starts again at `evt-1`.
//! * `GET /`: a page that shows the ticks live with `EventSource`.
//! * Ctrl+C: graceful shutdown, exit status 0.
//!
//! Its first line on stderr is `listening on http://HOST:PORT` (port 0 picks
//! a free port, and the real one is printed); then one access-log line per
//! request and per ended stream.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use stdsse::{Accept, Event, Response, Server};

const USAGE: &str = "clock [--addr 127.0.0.1:8080] [--interval-ms 1000]";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>stdsse clock</title>
<style>
  body { font: 16px system-ui, sans-serif; margin: 3em auto; max-width: 32em; }
  #time { font: 2.5em ui-monospace, monospace; }
  #state { color: #666; }
</style>
<h1>stdsse clock</h1>
<p id="time">waiting for the first tick</p>
<p id="state">connecting</p>
<ol id="log" reversed></ol>
<script>
  const source = new EventSource("/events");
  const log = document.getElementById("log");
  source.addEventListener("time", (e) => {
    document.getElementById("time").textContent = e.data;
    const item = document.createElement("li");
    item.textContent = e.lastEventId + "  " + e.data;
    item.dataset.id = e.lastEventId;
    log.prepend(item);
    while (log.children.length > 10) log.lastChild.remove();
  });
  source.onopen = () => { document.getElementById("state").textContent = "live"; };
  source.onerror = () => { document.getElementById("state").textContent = "reconnecting"; };
</script>
</html>
"#;

/// `evt-K` from a reconnecting client means: continue at K + 1 (at most
/// u64::MAX); an id the clock did not make starts at 1.
fn first_tick(last_event_id: Option<&str>) -> u64 {
    last_event_id
        .and_then(|id| id.strip_prefix("evt-"))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(1, |k| k.saturating_add(1))
}

fn main() -> std::io::Result<()> {
    let options = common::Options::parse(&["addr", "interval-ms"], USAGE);
    let addr = options.get("addr", "127.0.0.1:8080");
    let interval = Duration::from_millis(options.number("interval-ms", 1000).max(1));

    let mut server = Server::bind(&addr)?;
    server
        .max_connections(10_000)
        .connected_comment(Some("connected"))
        .log(common::log_to_stderr)
        .get("/", |_req| Response::html(200, PAGE))
        .sse("/events", move |_req| {
            Ok(Accept::new(move |mut stream| {
                let mut n = first_tick(stream.last_event_id());
                loop {
                    let event = Event::new()
                        .event("time")?
                        .id(format!("evt-{n}"))?
                        .data(common::now_rfc3339());
                    stream.send(&event)?;
                    stream.sleep(interval)?;
                    n = n.saturating_add(1);
                }
            }))
        });
    common::print_listening(&server);
    let handle = server.handle();
    common::on_ctrl_c(move || handle.shutdown());
    server.run()
}
