//! The examples as child processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Builds example `name` (`cargo build --example NAME`, once per test
/// binary) and returns the path of its binary: in the same target
/// directory and profile as this test binary (`target/<profile>/deps/…` →
/// `target/<profile>/examples/NAME`).
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, binary)) = built.iter().find(|(n, _)| n == name) {
        return binary.clone();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in <target>/<profile>/deps");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--offline", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|profile| profile == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name}: {status}");
    let binary =
        profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.is_file(), "no {name} binary at {}", binary.display());
    built.push((name.to_string(), binary.clone()));
    binary
}

/// Runs example `name` with `args` and `input` on its standard input, and
/// returns its output; with a `limit`, kills it and fails the test when it
/// runs longer.
pub fn run_example(name: &str, args: &[&str], input: &[u8], limit: Option<Duration>) -> Output {
    let mut child = Command::new(example_binary(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write to the example");
    drop(stdin);
    if let Some(limit) = limit {
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} {args:?} ran longer than {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    child.wait_with_output().expect("the example's output")
}

/// An example server running as a child process on 127.0.0.1:0, started
/// directly (not through cargo) so that signals reach it; killed when
/// dropped if still running.
pub struct Example {
    pub child: Child,
    /// Where it listens, from its first stderr line.
    pub addr: SocketAddr,
    /// The rest of its stderr (the access log), line by line.
    pub log: Receiver<String>,
    name: String,
}

impl Example {
    /// Starts example `name` with `--addr 127.0.0.1:0` and `args`; its first
    /// stderr line (within [`LONG_WAIT`]) must be
    /// `listening on http://HOST:PORT` with the real port.
    pub fn start(name: &str, args: &[&str]) -> Example {
        let binary = example_binary(name);
        let mut child = Command::new(&binary)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut example = Example {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log: complete_lines(stderr),
            name: name.to_string(),
        };
        example.addr = listening_addr(&example.log).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(example.addr.port(), 0, "the real port is printed");
        example
    }

    /// Whatever the example wrote to stderr since start (for messages).
    pub fn log_so_far(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Sends SIGINT (Ctrl+C) with `kill -INT` (Unix only).
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT: {status}");
    }

    /// Waits up to [`LONG_WAIT`] for the example to exit; its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LONG_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the example") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after SIGINT: {:?}",
                self.name,
                self.log_so_far()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The complete lines `reader` delivers, without their LF, read on a
/// thread that drains it to the end (so a child never blocks on a full
/// pipe). A last line that the end of input cuts short is not a line.
pub fn complete_lines(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok() && line.pop() == Some(b'\n') {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    lines
}

/// The address in the first of `lines` (within [`LONG_WAIT`]), which must
/// be `listening on http://HOST:PORT`, whole: a line is only taken once its
/// LF has arrived.
pub fn listening_addr(lines: &Receiver<String>) -> Result<SocketAddr, String> {
    let first =
        lines.recv_timeout(LONG_WAIT).map_err(|e| format!("no complete first stderr line: {e}"))?;
    first
        .strip_prefix("listening on http://")
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| format!("unexpected first stderr line {first:?}"))
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
