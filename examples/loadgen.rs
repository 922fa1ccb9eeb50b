//! A load generator for SSE servers (standard library only).
//!
//! ```text
//! cargo run --release --example loadgen -- \
//!     --events http://127.0.0.1:8080/events --publish http://127.0.0.1:8080/messages \
//!     --clients 1000 --messages 2000 --rate 0 [--pid SERVER_PID] [--hold-secs 0]
//! ```
//!
//! Opens `--clients` event streams, then posts `--messages` messages to the
//! publish URL over one persistent connection, `--rate` per second (0: as
//! fast as the server answers; `--pipeline D` keeps up to D requests in
//! flight, HTTP/1.1 pipelining). `--events` and `--publish` may be given
//! several times, for several servers sharing one stream: the clients are
//! spread over the event URLs round-robin, and message `seq` goes to
//! publish URL `seq % N`, each over its own connection, on one schedule.
//! Every message body is `<seq> <send time in
//! ns since the Unix epoch>`, so each client can tell the publish-to-receive
//! latency and which messages it missed or got twice. It reports
//! connections established and failed, deliveries per second, latency
//! p50/p99/max, missing and duplicated events, and (with `--pid`, on Linux)
//! the server's RSS and thread count before and after the clients connect.
//! With `--messages 0 --hold-secs S` it just holds the connections for S
//! seconds (keep-alives flowing) and reports the server's memory per client.
//!
//! The last line is the same figures as JSON, for scripts.
//!
//! By default each client is a thread with a 64 KiB stack that blocks in
//! `read`. `--per-thread K` gives each thread K clients, read round-robin
//! with blocking reads: one wake-up per event serves K clients, which takes
//! most of the load generator's own cost off the two cores it shares with
//! the server. Bytes that wait in a socket while the thread reads another
//! one count as latency, so grouping can only make the server look slower.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stdsse::http::{ChunkedDecoder, Status};
use stdsse::parser::{Item, Parser};

const USAGE: &str = "loadgen --events URL... [--publish URL...] [--clients N] [--messages M] [--rate R] \
[--pipeline D] [--pid PID] [--hold-secs S] [--connect-parallel K] [--timeout-secs T] [--per-thread K]";

struct Args {
    events: Vec<Url>,
    publish: Vec<Url>,
    clients: usize,
    messages: usize,
    rate: u64,
    pipeline: usize,
    pid: Option<u32>,
    hold: Duration,
    connect_parallel: usize,
    timeout: Duration,
    per_thread: usize,
}

#[derive(Clone)]
struct Url {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Url {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| fail("only http:// URLs"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or_else(|_| fail("bad port"))),
        None => (authority, 80),
    };
    Url {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        path: if path.is_empty() { "/".into() } else { path.into() },
    }
}

fn fail(message: &str) -> ! {
    eprintln!("loadgen: {message}\nusage: {USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        events: Vec::new(),
        publish: Vec::new(),
        clients: 100,
        messages: 100,
        rate: 0,
        pipeline: 1,
        pid: None,
        hold: Duration::ZERO,
        connect_parallel: 64,
        timeout: Duration::from_secs(30),
        per_thread: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let value = it.next().unwrap_or_else(|| fail("missing value"));
        let number = || value.parse::<u64>().unwrap_or_else(|_| fail("not a number"));
        match name.as_str() {
            "--events" => args.events.push(parse_url(&value)),
            "--publish" => args.publish.push(parse_url(&value)),
            "--clients" => args.clients = number() as usize,
            "--messages" => args.messages = number() as usize,
            "--rate" => args.rate = number(),
            "--pipeline" => args.pipeline = number().max(1) as usize,
            "--pid" => args.pid = Some(number() as u32),
            "--hold-secs" => args.hold = Duration::from_secs(number()),
            "--connect-parallel" => args.connect_parallel = number().max(1) as usize,
            "--timeout-secs" => args.timeout = Duration::from_secs(number()),
            "--per-thread" => args.per_thread = number().max(1) as usize,
            _ => fail(&format!("unknown option {name}")),
        }
    }
    if args.events.is_empty() {
        fail("--events is required");
    }
    if args.messages > 0 && args.publish.is_empty() {
        fail("--messages needs --publish");
    }
    args
}

fn connect(url: &Url) -> io::Result<TcpStream> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

/// What every client shares with the main thread.
struct Shared {
    stop: AtomicBool,
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Clients that have every message.
    complete: AtomicUsize,
    received: AtomicU64,
    last_receive_ns: AtomicU64,
    messages: usize,
    /// Latencies in microseconds, merged from each client at its end.
    latencies: Mutex<Vec<u32>>,
    missing: AtomicU64,
    duplicated: AtomicU64,
    clients_with_loss: AtomicUsize,
}

/// One SSE connection and what it has received.
struct Conn {
    stream: TcpStream,
    /// Set when the body is chunked (HTTP/1.1): decodes it for the parser.
    chunks: Option<ChunkedDecoder>,
    body: Vec<u8>,
    parser: Parser,
    /// How many times each message arrived.
    seen: Vec<u8>,
    got: usize,
    latencies: Vec<u32>,
}

impl Conn {
    fn open(url: &Url, shared: &Shared) -> Option<Conn> {
        match open_stream(url) {
            Ok((stream, chunked)) => {
                shared.connected.fetch_add(1, Ordering::SeqCst);
                Some(Conn {
                    stream,
                    chunks: chunked.then(|| ChunkedDecoder::new(usize::MAX)),
                    body: Vec::new(),
                    parser: Parser::new(),
                    seen: vec![0; shared.messages],
                    got: 0,
                    latencies: Vec::with_capacity(shared.messages),
                })
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }

    /// One blocking read (bounded by the socket's read timeout) and the
    /// events it completed. Returns false once the connection is over.
    fn read(&mut self, buf: &mut [u8], shared: &Shared) -> bool {
        let n = match self.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return true
            }
            Err(_) => return false,
        };
        match &mut self.chunks {
            None => self.parser.feed(&buf[..n]),
            Some(chunks) => {
                self.body.clear();
                let done = chunks.decode(&buf[..n], &mut self.body);
                self.parser.feed(&self.body);
                if !matches!(done, Ok(Status::Partial)) {
                    return false; // the last chunk, or broken framing
                }
            }
        }
        let now = now_ns();
        while let Some(item) = self.parser.next_item() {
            let Ok(Item::Event(event)) = item else {
                continue;
            };
            let mut parts = event.data.split(' ');
            let (Some(Ok(seq)), Some(Ok(sent))) =
                (parts.next().map(str::parse::<usize>), parts.next().map(str::parse::<u64>))
            else {
                continue;
            };
            if seq >= self.seen.len() {
                continue;
            }
            self.seen[seq] = self.seen[seq].saturating_add(1);
            if self.seen[seq] == 1 {
                self.got += 1;
                self.latencies
                    .push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
                if self.got == shared.messages {
                    shared.complete.fetch_add(1, Ordering::SeqCst);
                }
            }
            shared.received.fetch_add(1, Ordering::Relaxed);
            shared.last_receive_ns.fetch_max(now, Ordering::Relaxed);
        }
        true
    }

    /// Adds this connection's losses and latencies to the totals.
    fn finish(self, shared: &Shared) {
        let missing = self.seen.iter().filter(|&&c| c == 0).count() as u64;
        let duplicated: u64 = self.seen.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
        shared.missing.fetch_add(missing, Ordering::SeqCst);
        shared.duplicated.fetch_add(duplicated, Ordering::SeqCst);
        if missing + duplicated > 0 {
            shared.clients_with_loss.fetch_add(1, Ordering::SeqCst);
        }
        shared.latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(self.latencies);
    }
}

/// A thread's clients: opened one by one, then read round-robin with
/// blocking reads until stopped. Every client receives every broadcast, so
/// after the read that waits for an event the others of the group usually
/// have it already: one wake-up serves the group. Data that waits in a
/// socket while the thread reads another one counts as latency, so a group
/// can only make the server look slower, never faster.
fn clients(url: &Url, shared: &Shared, count: usize) {
    let mut conns: Vec<Conn> = (0..count).filter_map(|_| Conn::open(url, shared)).collect();
    let mut buf = vec![0u8; 16 * 1024];
    let mut i = 0;
    while !shared.stop.load(Ordering::Relaxed) && !conns.is_empty() {
        i %= conns.len();
        if conns[i].read(&mut buf, shared) {
            i += 1;
        } else {
            conns.swap_remove(i).finish(shared);
        }
    }
    for conn in conns {
        conn.finish(shared);
    }
}

/// Connects and reads the response head; fails unless it is a 200 stream.
/// Also tells whether the body is chunked.
fn open_stream(url: &Url) -> io::Result<(TcpStream, bool)> {
    let mut stream = connect(url)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        url.path, url.host, url.port
    )?;
    // Read the head byte by byte so no event bytes are taken from the parser.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(io::Error::other("status is not 200"));
    }
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let chunked = head.contains("\r\ntransfer-encoding: chunked\r\n");
    Ok((stream, chunked))
}

/// Posts every `step`-th message from `first` over one persistent
/// connection, each due at `start + seq / rate` (rate 0: at once), with up to
/// `--pipeline` requests waiting for their answer. Returns when the last
/// answer came.
fn publish(
    url: &Url,
    first: usize,
    step: usize,
    args: &Args,
    start: Instant,
) -> io::Result<Instant> {
    let mut stream = connect(url)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answers = Answers { buf: Vec::with_capacity(4096), waiting: 0 };
    for seq in (first..args.messages).step_by(step) {
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(seq as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let body = format!("{seq} {}", now_ns());
        write!(
            stream,
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
            url.path,
            url.host,
            url.port,
            body.len(),
            body
        )?;
        answers.waiting += 1;
        answers.read_until(&mut stream, args.pipeline - 1)?;
    }
    answers.read_until(&mut stream, 0)?;
    Ok(Instant::now())
}

/// The answers to the requests in flight on a publishing connection.
struct Answers {
    buf: Vec<u8>,
    waiting: usize,
}

impl Answers {
    /// Reads answers until at most `left` are awaited; each must be a 2xx.
    /// They are 204s (no body): each ends with its head.
    fn read_until(&mut self, stream: &mut TcpStream, left: usize) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if !self.buf.starts_with(b"HTTP/1.1 2") {
                    let head = String::from_utf8_lossy(&self.buf[..end.min(40)]).into_owned();
                    return Err(io::Error::other(format!("publish answered {head}")));
                }
                self.buf.drain(..end + 4);
                self.waiting -= 1;
            }
            if self.waiting <= left {
                return Ok(());
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// (RSS in KiB, threads) of a process, from /proc (Linux).
fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

fn main() {
    let args = parse_args();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        last_receive_ns: AtomicU64::new(0),
        messages: args.messages,
        latencies: Mutex::new(Vec::new()),
        missing: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        clients_with_loss: AtomicUsize::new(0),
    });
    let before = args.pid.and_then(proc_status);

    // Connect with bounded parallelism: a storm of SYNs past the server's
    // listen backlog would only measure the kernel's retry timer.
    let connect_start = Instant::now();
    let mut handles = Vec::with_capacity(args.clients);
    for i in (0..args.clients).step_by(args.per_thread) {
        while i
            >= shared.connected.load(Ordering::SeqCst)
                + shared.failed.load(Ordering::SeqCst)
                + args.connect_parallel
        {
            thread::sleep(Duration::from_millis(1));
        }
        let url = args.events[i / args.per_thread % args.events.len()].clone();
        let client_shared = shared.clone();
        let count = args.per_thread.min(args.clients - i);
        let spawned = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || clients(&url, &client_shared, count));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(_) => {
                shared.failed.fetch_add(count, Ordering::SeqCst);
            }
        }
    }
    let settle = Instant::now() + Duration::from_secs(30);
    while shared.connected.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst)
        < args.clients
        && Instant::now() < settle
    {
        thread::sleep(Duration::from_millis(5));
    }
    let connect_time = connect_start.elapsed();
    let connected = shared.connected.load(Ordering::SeqCst);
    // Let the server finish subscribing everyone before the first message.
    thread::sleep(Duration::from_millis(200));
    let with_clients = args.pid.and_then(proc_status);

    if !args.hold.is_zero() {
        thread::sleep(args.hold);
    }
    let held = args.pid.and_then(proc_status);

    let mut publish_time = Duration::ZERO;
    let mut publish_start_ns = 0;
    if args.messages > 0 {
        publish_start_ns = now_ns();
        let start = Instant::now();
        let step = args.publish.len();
        let ends = thread::scope(|s| {
            let args = &args;
            let publishers: Vec<_> = (args.publish.iter().enumerate())
                .map(|(first, url)| s.spawn(move || publish(url, first, step, args, start)))
                .collect();
            publishers
                .into_iter()
                .map(|p| p.join().expect("publisher panicked"))
                .collect::<Vec<_>>()
        });
        for end in ends {
            match end {
                Ok(end) => publish_time = publish_time.max(end - start),
                Err(e) => eprintln!("loadgen: publishing failed: {e}"),
            }
        }
        let deadline = Instant::now() + args.timeout;
        while shared.complete.load(Ordering::SeqCst) < connected && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let after = args.pid.and_then(proc_status);
    shared.stop.store(true, Ordering::SeqCst);
    for handle in handles {
        let _ = handle.join();
    }

    let received = shared.received.load(Ordering::SeqCst);
    let span_ns = shared.last_receive_ns.load(Ordering::SeqCst).saturating_sub(publish_start_ns);
    let per_sec = if span_ns > 0 && args.messages > 0 {
        received as f64 / (span_ns as f64 / 1e9)
    } else {
        0.0
    };
    let mut latencies =
        std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let (p50, p99, max) =
        (percentile(&latencies, 0.50), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
    let published_per_sec = args.messages as f64 / publish_time.as_secs_f64().max(1e-9);
    let missing = shared.missing.load(Ordering::SeqCst);
    let duplicated = shared.duplicated.load(Ordering::SeqCst);

    println!(
        "clients:        {connected} connected, {} failed ({connect_time:.2?} to connect)",
        shared.failed.load(Ordering::SeqCst)
    );
    if args.messages > 0 {
        println!(
            "published:      {} messages in {publish_time:.2?} ({published_per_sec:.0} per second)",
            args.messages
        );
        println!("deliveries:     {received} ({per_sec:.0} per second)");
        println!("latency:        p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
        println!(
            "lost:           {missing} missing, {duplicated} duplicated, {} clients affected",
            shared.clients_with_loss.load(Ordering::SeqCst)
        );
    }
    let per_client = |base: Option<(u64, u64)>, now: Option<(u64, u64)>| match (base, now) {
        (Some((b, _)), Some((n, _))) if connected > 0 => {
            n.saturating_sub(b) as f64 / connected as f64
        }
        _ => 0.0,
    };
    if let (Some((rss0, t0)), Some((rss1, t1))) = (before, with_clients) {
        println!("server before:  {rss0} KiB RSS, {t0} threads");
        println!(
            "server clients: {rss1} KiB RSS, {t1} threads ({:.1} KiB per client)",
            per_client(before, with_clients)
        );
    }
    if let Some((rss, threads)) = held.filter(|_| !args.hold.is_zero()) {
        println!(
            "server held:    {rss} KiB RSS, {threads} threads after {:?} ({:.1} KiB per client)",
            args.hold,
            per_client(before, held)
        );
    }
    if let Some((rss, threads)) = after.filter(|_| args.messages > 0) {
        println!("server after:   {rss} KiB RSS, {threads} threads");
    }
    println!(
        "{{\"clients\":{connected},\"failed\":{},\"messages\":{},\"deliveries\":{received},\"per_sec\":{per_sec:.0},\
\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"missing\":{missing},\"duplicated\":{duplicated},\
\"rss_kib_per_client\":{:.2},\"server_threads\":{},\"per_thread\":{},\"published_per_sec\":{published_per_sec:.0}}}",
        shared.failed.load(Ordering::SeqCst),
        args.messages,
        per_client(before, if args.hold.is_zero() { with_clients } else { held }),
        with_clients.map_or(0, |(_, t)| t),
        args.per_thread,
    );
    if missing + duplicated > 0 {
        std::process::exit(1);
    }
}
