//! Shared by the integration tests, one file per thing it serves:
//!
//! - here, the bounded waits ([`wait_until`], [`wait_for`]);
//! - `server`: the project's `Server` on 127.0.0.1:0 in a background
//!   thread ([`TestServer`]);
//! - `oracle`: requests a raw client sends ([`get`], [`request_bytes`]) and
//!   an independent parser of the responses it reads ([`Resp`],
//!   [`parse_head`]);
//! - `raw`: a raw TCP client that reads responses one by one ([`Client`]),
//!   decoding chunked bodies ([`Dechunker`]), and one-shot requests
//!   ([`http`]);
//! - `sse`: an event-stream reader on a raw socket ([`Sse`]);
//! - `scripted`: a server that misbehaves on purpose ([`Scripted`]) and a
//!   runner that drives a `stdsse::client::Client` on its own thread
//!   ([`Run`]);
//! - `examples`: the examples as child processes ([`Example`],
//!   [`run_example`]);
//! - `fuzz`: a small deterministic random number generator and mutator;
//! - here too, whether the Redis tests run ([`redis_server_on_path`]).
//!
//! Every wait here ends at a deadline; reaching one fails the test.

#![allow(dead_code)] // each test binary uses part of this module

mod examples;
pub mod fuzz;
mod oracle;
mod raw;
mod scripted;
mod server;
mod sse;

#[allow(unused_imports)] // each test binary uses part of them
pub use {examples::*, oracle::*, raw::*, scripted::*, server::*, sse::*};

use std::fmt::Debug;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait in the server and client tests may take.
/// Generous, so that a loaded machine does not make a test flaky; a test
/// that reaches it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The same for the hub and example tests (many streams, child processes),
/// and for a server's shutdown.
pub const LONG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `get` every millisecond until `ok` holds for its value, which is
/// returned; fails the test with the last value after `limit`.
pub fn wait_for<T: Debug>(
    limit: Duration,
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = get();
        if ok(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what} (last: {value:?})");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `condition` until it holds; fails the test after `limit`.
pub fn wait_until_within(limit: Duration, what: &str, condition: impl FnMut() -> bool) {
    wait_for(limit, what, condition, |&held| held);
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(WAIT, what, condition);
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `redis-server` is on PATH, for the tests against a real one:
/// without it they print SKIP and pass, so `cargo test` stays offline,
/// unless `STDSSE_REQUIRE_REDIS` is set (CI, which installs it first).
pub fn redis_server_on_path() -> bool {
    let version = std::process::Command::new("redis-server").arg("--version").output();
    let present = version.is_ok_and(|o| o.status.success());
    assert!(
        present || std::env::var_os("STDSSE_REQUIRE_REDIS").is_none(),
        "redis-server is not on PATH"
    );
    if !present {
        println!("SKIP: redis-server is not on PATH");
    }
    present
}
