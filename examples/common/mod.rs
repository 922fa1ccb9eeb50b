//! Shared by the examples: graceful shutdown on Ctrl+C, command-line
//! options and an access log on stderr.
//!
//! The standard library cannot catch a signal. `on_ctrl_c` installs a
//! handler with one call to the C library's `signal` (the only `unsafe` in
//! this repository; the library itself forbids it). The handler only sets a
//! flag, the one thing a signal handler may safely do; a watcher thread sees
//! the flag and starts the server's graceful shutdown.

#![allow(dead_code)] // each example uses part of this module

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use stdsse::http::Limits;
use stdsse::hub::Hub;
use stdsse::server::{LogEntry, LogKind};
use stdsse::{Request, Response, Server};

/// The largest message accepted (chat) or notification (notify), in bytes
/// of UTF-8: larger bodies get `413`.
///
/// It protects the server (a request body is held in memory) and must fit
/// every client on the way: a message becomes the data of one event, which
/// a client counts as the text plus one LF per line (CR and CRLF become
/// LF, so at most the text plus one byte) plus the type `message`. That is
/// at most `MAX_MESSAGE + 8` bytes, far below the event limit of stdsse's
/// `Parser`, `Client` and `tail` (16 MiB by default); browsers, Node's
/// `eventsource`, httpx-sse, sseclient-py, curl and nginx (unbuffered, as
/// the stream asks) set none. The interop suite and `tests/chat_example.rs`
/// send a message of exactly this size to each of them.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The server's limits with bodies bounded by [`MAX_MESSAGE`].
pub fn message_limits() -> Limits {
    Limits { max_body: MAX_MESSAGE, ..Limits::default() }
}

/// A posted message's text: the body, which must be non-empty UTF-8 (else
/// `400` saying why; a body over [`MAX_MESSAGE`] never gets here: `413`).
pub fn message_text(req: &Request) -> Result<&str, Response> {
    match std::str::from_utf8(req.body()) {
        Ok("") => Err(Response::text(400, "the message is empty\n")),
        Ok(text) => Ok(text),
        Err(_) => Err(Response::text(400, "the message is not valid UTF-8\n")),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_signal(_signal: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

// `unsafe extern`: edition 2024 requires it (calling into C is unsafe),
// and every edition since Rust 1.82 accepts it, so the helper can be copied
// into a crate of either edition (`.ci/edition2024.sh` checks that).
#[cfg(unix)]
unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// On Ctrl+C (SIGINT) or SIGTERM, run `stop` (which shuts the server down
/// gracefully, so that `run()` returns and the example exits with status 0).
pub fn on_ctrl_c(stop: impl FnOnce() + Send + 'static) {
    #[cfg(unix)]
    // SAFETY: `signal` is given a valid signal number and an `extern "C"`
    // function that only stores to an atomic (async-signal-safe).
    unsafe {
        signal(2, on_signal); // SIGINT
        signal(15, on_signal); // SIGTERM
    }
    thread::spawn(move || loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            eprint_line("shutting down");
            stop();
            return;
        }
        thread::sleep(Duration::from_millis(50));
    });
}

/// Writes `line` and a newline to stderr in one `write_all`: `eprintln!`
/// makes one `write(2)` per formatted piece, so a script reading stderr
/// could see `listening on http://127` before the rest of the address.
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Prints `listening on http://HOST:PORT`, the line scripts wait for.
pub fn print_listening(server: &Server) {
    eprint_line(&format!("listening on http://{}", server.local_addr()));
}

/// Prints one log line to stderr.
pub fn log_to_stderr(entry: &LogEntry<'_>) {
    let what = match entry.kind {
        LogKind::StreamEnd => " (stream ended)",
        LogKind::Rejected => " (connection refused)",
        LogKind::AcceptError => " (accept failed)",
        _ => "",
    };
    let remote = entry.remote.map_or("-".to_string(), |a| a.to_string());
    eprint_line(&format!(
        "{} {} {} {} {}B {}.{}ms{}{}",
        remote,
        entry.method,
        entry.path,
        entry.status,
        entry.bytes,
        // Milliseconds with one decimal, in integers: float formatting
        // would add about 25 KiB to every example binary.
        entry.duration.as_micros() / 1000,
        entry.duration.as_micros() % 1000 / 100,
        what,
        entry.error.map(|e| format!(": {e}")).unwrap_or_default(),
    ));
}

/// Command-line options: `--name value` pairs, with defaults.
pub struct Options {
    args: Vec<(String, String)>,
}

impl Options {
    /// Reads `--name value` pairs; anything else (or a name not in `known`)
    /// prints `usage` and exits with status 2.
    pub fn parse(known: &[&str], usage: &str) -> Options {
        let mut args = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(name) = it.next() {
            let known_name =
                name.strip_prefix("--").filter(|n| known.contains(n)).map(str::to_string);
            match (known_name, it.next()) {
                (Some(name), Some(value)) => args.push((name, value)),
                _ => {
                    eprintln!("usage: {usage}");
                    std::process::exit(2);
                }
            }
        }
        Options { args }
    }

    /// The last value given for `name`, or `default`.
    pub fn get(&self, name: &str, default: &str) -> String {
        let found = self.args.iter().rev().find(|(n, _)| n == name);
        found.map_or(default, |(_, v)| v.as_str()).to_string()
    }

    /// Every value given for `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        let given = self.args.iter().filter(|(n, _)| n == name);
        given.map(|(_, v)| v.clone()).collect()
    }

    /// The value of `name` parsed as a number, or exit with a message.
    pub fn number(&self, name: &str, default: u64) -> u64 {
        self.optional(name).unwrap_or(default)
    }

    /// The value of `name` parsed as a number if it was given (exit with a
    /// message if it is not a number).
    pub fn optional(&self, name: &str) -> Option<u64> {
        let (_, value) = self.args.iter().rev().find(|(n, _)| n == name)?;
        Some(value.parse().unwrap_or_else(|_| {
            eprintln!("--{name}: not a number: {value}");
            std::process::exit(2);
        }))
    }
}

/// The current UTC time in RFC 3339 with milliseconds, e.g.
/// `2025-01-18T04:30:00.123Z`, from the system clock (no time zone data
/// needed for UTC).
pub fn now_rfc3339() -> String {
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// `GET /stats`: the hub's and the server's counters as one JSON object,
/// `{"hub":{...},"server":{...}}`.
pub fn stats_route(server: &mut Server, hub: &Hub) {
    let hub = hub.clone();
    let handle = server.handle();
    server.get("/stats", move |_req| {
        let json = format!(
            "{{\"hub\":{},\"server\":{}}}",
            hub.stats().to_json(),
            handle.stats().to_json()
        );
        Response::json(200, json)
    });
}

/// Serves `GET /metrics`: the server's and the hub's counters in the
/// Prometheus text format (version 0.0.4).
pub fn metrics_route(server: &mut Server, hub: &Hub) {
    let hub = hub.clone();
    let handle = server.handle();
    server.get("/metrics", move |_req| {
        let text = handle.stats().to_prometheus() + &hub.stats().to_prometheus();
        Response::new(200)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(text)
    });
}

/// Prints `listening on http://HOST:PORT` and serves until Ctrl+C; then
/// closes the hub (every subscriber gets its goodbye and retry hint) and
/// shuts the server down gracefully.
pub fn serve_until_ctrl_c(server: Server, hub: Hub) -> std::io::Result<()> {
    print_listening(&server);
    let handle = server.handle();
    on_ctrl_c(move || {
        let _ = hub.close();
        handle.shutdown();
    });
    server.run()
}
