//! The server fixture of the robustness suite (built as an example; see
//! Cargo.toml): not an example to copy, a target to attack.
//!
//! ```text
//! cargo run --release --example testbed -- --addr 127.0.0.1:0 \
//!     [--max-connections 1024] [--head-timeout-ms 10000] [--keep-alive-ms 15000] \
//!     [--access-log 0]
//! ```
//!
//! The stdsse [`Server`] and a [`Hub`] with the routes the suite needs:
//!
//! * `GET /`: `200`, the text `hello`.
//! * `POST /echo`: `200`, the request body as it was received.
//! * `GET /panic`: the handler panics (the server answers `500`).
//! * `GET /panic-stream`: an event-stream handler that panics after the head.
//! * `GET /events[?topic=T]`: an event stream from the hub
//!   (`hub.public_handler("topic")`).
//! * `POST /publish?count=N&size=S`: publishes `N` events (type `bulk`, the
//!   hub's ids) whose data is `S` bytes: the event's number from 0, eight
//!   digits, then `x` up to `S` (at least the eight digits). Answers `200`
//!   with `{"published":N}` once they are queued.
//! * `GET /inject?field=F&value=V` (`F` is `id`, `event`, `data` or
//!   `comment`): builds an event with that field set to `V` (decoded from
//!   the query). If the encoder refuses the value, `400` with the
//!   `EventError` text; otherwise the event is published and the answer is
//!   `200` `published`.
//! * `GET /stats`: `{"hub":{...},"server":{...}}`, the hub's and the
//!   server's counters.
//!
//! `--head-timeout-ms` sets the server's head deadline, `--keep-alive-ms`
//! the keep-alive interval of both the server and the hub (which is also how
//! often they look for clients that went away), `--max-connections` the
//! connection limit. The access log goes to stderr with `--access-log 1`.
//! SIGINT or SIGTERM shuts down gracefully. The first stderr line is
//! `listening on http://HOST:PORT`.

#[path = "../../examples/common/mod.rs"]
mod common;

use std::time::Duration;

use stdsse::hub::Hub;
use stdsse::{Accept, Event, EventError, Request, Response, Server};

const USAGE: &str = "testbed [--addr 127.0.0.1:0] [--max-connections 1024] \
[--head-timeout-ms 10000] [--keep-alive-ms 15000] [--access-log 0|1]";

/// The most events one `/publish` may ask for, and the largest event.
const MAX_COUNT: u64 = 1_000_000;
const MAX_SIZE: u64 = 1 << 20;

/// `POST /publish?count=N&size=S`.
fn publish(hub: &Hub, req: &Request) -> Response {
    let number = |name: &str, default: u64| -> Option<u64> {
        match req.query_param(name) {
            None => Some(default),
            Some(text) => text.parse().ok(),
        }
    };
    let (Some(count), Some(size)) = (number("count", 1), number("size", 16)) else {
        return Response::text(400, "count and size must be numbers\n");
    };
    if count > MAX_COUNT || size > MAX_SIZE {
        return Response::text(400, format!("at most {MAX_COUNT} events of {MAX_SIZE} bytes\n"));
    }
    let template = "x".repeat(size as usize);
    for n in 0..count {
        let mut data = format!("{n:08}");
        if data.len() < template.len() {
            data.push_str(&template[data.len()..]);
        }
        let event = match Event::new().event("bulk") {
            Ok(event) => event.data(data),
            Err(e) => return Response::text(500, format!("{e}\n")),
        };
        if hub.publish(event).is_err() {
            return Response::text(503, "the hub is closed\n");
        }
    }
    Response::json(200, format!("{{\"published\":{count}}}"))
}

/// `GET /inject?field=F&value=V`.
fn inject(hub: &Hub, req: &Request) -> Response {
    let field = req.query_param("field").unwrap_or_default();
    let value = req.query_param("value").unwrap_or_default();
    let built: Result<Event, EventError> = match field.as_str() {
        "id" => Event::new().id(value).map(|e| e.data("inject")),
        "event" => Event::new().event(value).map(|e| e.data("inject")),
        "data" => Ok(Event::new().data(value)),
        "comment" => Ok(Event::new().comment(value)),
        _ => return Response::text(400, "field must be id, event, data or comment\n"),
    };
    match built {
        Err(e) => Response::text(400, format!("{e}\n")),
        Ok(event) => match hub.publish(event) {
            Ok(()) => Response::text(200, "published\n"),
            Err(_) => Response::text(503, "the hub is closed\n"),
        },
    }
}

fn main() -> std::io::Result<()> {
    let options = common::Options::parse(
        &["addr", "max-connections", "head-timeout-ms", "keep-alive-ms", "access-log"],
        USAGE,
    );
    let addr = options.get("addr", "127.0.0.1:0");
    let max_connections = options.number("max-connections", 1024) as usize;
    let head_timeout = Duration::from_millis(options.number("head-timeout-ms", 10_000));
    let keep_alive = Duration::from_millis(options.number("keep-alive-ms", 15_000));
    let access_log = options.number("access-log", 0) != 0;

    let hub = Hub::builder().keep_alive(Some(keep_alive)).build()?;
    let mut server = Server::bind(&addr)?;
    server
        .max_connections(max_connections)
        .head_timeout(head_timeout)
        .keep_alive(Some(keep_alive))
        .get("/", |_req| Response::text(200, "hello"))
        .post("/echo", |req| {
            Response::new(200)
                .header("Content-Type", "application/octet-stream")
                .body(req.body().to_vec())
        })
        .get("/panic", |_req| panic!("the /panic route panics on purpose (robustness suite)"))
        .sse("/panic-stream", |_req| {
            Ok(Accept::new(|mut stream| {
                stream.comment("about to panic")?;
                panic!("the /panic-stream route panics on purpose (robustness suite)")
            }))
        })
        .sse("/events", hub.public_handler("topic"));
    if access_log {
        server.log(common::log_to_stderr);
    }
    let publish_hub = hub.clone();
    server.post("/publish", move |req| publish(&publish_hub, req));
    let inject_hub = hub.clone();
    server.get("/inject", move |req| inject(&inject_hub, req));
    common::stats_route(&mut server, &hub);
    common::serve_until_ctrl_c(server, hub)
}
