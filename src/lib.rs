//! Server-Sent Events on the Rust standard library alone: an encoder
//! ([`Event`]), a flushing writer ([`EventWriter`]), a spec-exact incremental
//! parser ([`Parser`]), an HTTP/1.1 server with a thread per connection
//! ([`Server`]), a broadcast [`Hub`] with replay, and a reconnecting
//! [`Client`]. No dependencies, no `unsafe` code.
//!
//! # The wire format in one page
//!
//! The law is the WHATWG HTML standard, section [9.2 "Server-sent
//! events"](https://html.spec.whatwg.org/multipage/server-sent-events.html).
//! A server answers a `GET` with `200`, `Content-Type: text/event-stream`
//! and an endless body of UTF-8 lines, an empty line ending each event:
//!
//! ```text
//! : connected                 <- a comment: ignored by clients (keep-alives)
//! retry: 5000                 <- reconnect after 5000 ms if the connection drops (as read)
//! event: time                 <- the event type (addEventListener("time", ...))
//! id: evt-1                   <- the id; sent back as Last-Event-ID on reconnect
//! data: 2025-01-18T04:30:00Z  <- one line of data
//!                             <- an empty line: dispatch the event
//! data: first line            <- type "message" (no event: field)
//! data: second line           <- data lines are joined with LF: "first line\nsecond line"
//!                             <- dispatch
//! ```
//!
//! The rules a parser follows (9.2.6, "interpreting an event stream"):
//!
//! * Lines end with CRLF, LF or CR. A leading byte-order mark is dropped.
//! * `name: value` splits at the **first** colon, and **one** space after
//!   it is removed (`data:  x` is the value `" x"`). A line without a colon
//!   is a name with an empty value. A line starting with a colon is a comment.
//! * `data` appends the value and an LF to the data buffer; `event` sets the
//!   type; `id` sets the last event id (unless the value contains NUL; an
//!   empty `id:` resets it); `retry` sets the reconnection time if the value
//!   is ASCII digits only. Other names are ignored.
//! * An empty line dispatches: if the data buffer is empty nothing fires;
//!   otherwise one trailing LF is removed, and an event of the buffered type
//!   (`message` by default) fires with the data and the last event id.
//!   Data and type reset; the last event id stays.
//! * An event not followed by an empty line when the stream ends is dropped.
//!
//! A client that loses the connection waits the reconnection time and
//! requests the URL again with a `Last-Event-ID` header, so the server can
//! resume; a `204 No Content` answer tells it to stop for good. A CR or LF
//! inside `id` or `event` would start a new field (injection): [`Event`]
//! refuses those values (and ids a `Last-Event-ID` header cannot carry back),
//! and splits data and comments into one line per line.
//!
//! # Writing and reading events
//!
//! ```
//! use stdsse::{Event, EventWriter, Item, Parser};
//!
//! let mut out = EventWriter::new(Vec::new());
//! out.send(&Event::new().event("time")?.id("evt-1")?.data("2025-01-18T04:30:00Z"))?;
//! assert_eq!(out.get_ref(), b"event: time\nid: evt-1\ndata: 2025-01-18T04:30:00Z\n\n");
//! let mut parser = Parser::new();
//! parser.feed(out.get_ref());
//! let Some(Ok(Item::Event(event))) = parser.next_item() else { panic!() };
//! assert_eq!((event.event_type.as_str(), event.data.as_str()), ("time", "2025-01-18T04:30:00Z"));
//! assert_eq!(parser.get_last_event_id(), "evt-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Serving events
//!
//! An event-stream handler decides before anything is sent: it refuses
//! with a [`Response`], or accepts with the body to run on the stream
//! ([`Accept`]), into which what it learned (the user) moves.
//!
//! ```no_run
//! use stdsse::{Accept, Event, Response, Server};
//! use std::time::Duration;
//!
//! let mut server = Server::bind("127.0.0.1:8080")?;
//! server.sse("/events", |req| {
//!     let bearer = req.header("Authorization").and_then(|v| v.strip_prefix("Bearer "));
//!     let user = bearer.map(str::to_string).ok_or_else(|| {
//!         Response::text(401, "who are you?").header("WWW-Authenticate", "Bearer")
//!     })?;
//!     Ok(Accept::new(move |mut stream| {
//!         stream.send(&Event::new().data(format!("hello {user}")))?;
//!         for n in 1.. {
//!             stream.send(&Event::new().id(format!("evt-{n}"))?.data("tick"))?;
//!             stream.sleep(Duration::from_secs(1))?;
//!         }
//!         Ok(())
//!     })
//!     .header("Cache-Control", "no-store"))
//! });
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Past one machine: instances sharing one stream through Redis
//!
//! The same program on two machines against one Redis: a post to either reaches every
//! subscriber of both, in one order, and a client resumes on either with no gap
//! ([`HubBuilder::redis`](hub::HubBuilder::redis); `chat --redis URL` does it).
//!
//! ```no_run
//! use stdsse::hub::{Hub, Subscription};
//! use stdsse::{Event, Response, Server};
//!
//! let hub = Hub::builder().redis("redis://:secret@10.0.0.5:6379/0", "app:news").build()?;
//! let mut server = Server::bind("0.0.0.0:8080")?;
//! server.sse("/events", hub.handler(|_req| Ok(Subscription::new())));
//! let publisher = hub.clone();
//! server.post("/news", move |req| match publisher.publish(Event::new().data(String::from_utf8_lossy(req.body()))) {
//!     Ok(()) => Response::new(204),
//!     Err(_) => Response::text(503, "Redis is down\n").header("Retry-After", "1"), // or closed
//! });
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Conventions
//!
//! Builders take plain names (`data(x)`), so getters on builder types use
//! `get_`, as std's `Command` does; other getters have plain names. Every
//! limit is a named setting with a documented default. Errors follow std's
//! mpsc: one type per operation, a short `Display`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(
    missing_debug_implementations,
    clippy::must_use_candidate,
    clippy::return_self_not_must_use
)]

#[macro_use]
mod util;

pub mod client;
pub mod event;
pub mod http;
pub mod hub;
pub mod parser;
pub mod redis;
mod scan;
pub mod server;
mod stream;
pub mod writer;

pub use client::{Client, ClientError, Received};
pub use event::{Event, EventError, Field, Frame};
pub use http::{Request, Response};
pub use hub::Hub;
pub use parser::{Item, MessageEvent, ParseError, Parser};
pub use server::{Accept, EventStream, SendError, Server, ShutdownHandle};
pub use writer::EventWriter;
