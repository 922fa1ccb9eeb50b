//! The floor under any SSE server's broadcast latency on this machine: the
//! same load as `scale.sh`'s latency run (events of about 80 bytes, at a
//! fixed rate, to N clients over loopback TCP), served by the least a
//! server can do (one plain `write` per client of every event due, no
//! HTTP, no framing, no bookkeeping) to the least a client can do (one
//! `read` into a buffer, no parsing). Each event is stamped with the time
//! it was due, so a writer that falls behind shows as latency. Whatever it
//! measures, a real server and real clients on the same cores measure more.
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml --bin loopback-floor -- \
//!     [--clients 10000] [--rate 100] [--events 500] [--threads 1]
//! ```
//!
//! The program is the server; it starts a copy of itself as the clients, so
//! each process holds one end of every connection (10,000 connections fit
//! under a descriptor limit of 20,000). Each side runs `--threads` threads,
//! every thread owning an equal share of the connections. A writer sends
//! the events due to its connections in turn, all of them in one blocking
//! write per connection; a reader reads its connections round-robin with
//! blocking reads (an event waits in a socket while the reader serves
//! another, as in the load generator's grouped mode).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENT: usize = 80;

struct Args {
    clients: usize,
    rate: u64,
    events: usize,
    threads: usize,
    /// Set in the client process: the server's address.
    connect: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

/// This process's CPU time (user + system) in seconds, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn parse_args() -> Args {
    let mut args = Args { clients: 10_000, rate: 100, events: 500, threads: 1, connect: None };
    let mut it = std::env::args().skip(1);
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        let number = || value.parse::<u64>().expect("a number");
        match name.as_str() {
            "--clients" => args.clients = number() as usize,
            "--rate" => args.rate = number().max(1),
            "--events" => args.events = number() as usize,
            "--threads" => args.threads = number().max(1) as usize,
            "--connect" => args.connect = Some(value),
            _ => panic!("unknown option {name}"),
        }
    }
    args
}

/// Deals `items` out to `threads` shares.
fn deal<T>(items: Vec<T>, threads: usize) -> Vec<Vec<T>> {
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    shares
}

fn main() {
    let args = parse_args();
    match &args.connect {
        Some(addr) => clients(&args, addr),
        None => server(&args),
    }
}

/// The client process: reads every event on every connection, then prints
/// its CPU seconds on one line (at once, so that the server can stop its
/// clock) and every latency in nanoseconds on the next.
fn clients(args: &Args, addr: &str) {
    let conns: Vec<TcpStream> = (0..args.clients)
        .map(|_| TcpStream::connect(addr).expect("connect (raise ulimit -n?)"))
        .collect();
    let cpu_before = cpu_seconds();
    let total = args.events * EVENT;
    let readers: Vec<_> = deal(conns, args.threads)
        .into_iter()
        .map(|mut conns| {
            thread::spawn(move || {
                let mut latencies = Vec::with_capacity(conns.len() * total / EVENT);
                let mut got = vec![0usize; conns.len()];
                let mut partial = vec![[0u8; EVENT]; conns.len()];
                let mut buf = [0u8; 64 * 1024];
                let mut left = conns.len();
                while left > 0 {
                    for (i, conn) in conns.iter_mut().enumerate() {
                        if got[i] == total {
                            continue;
                        }
                        let n = conn.read(&mut buf).expect("read");
                        assert!(n > 0, "the server closed early");
                        let now = now_ns();
                        for &byte in &buf[..n] {
                            partial[i][got[i] % EVENT] = byte;
                            got[i] += 1;
                            if got[i] % EVENT == 0 {
                                let sent = u64::from_le_bytes(
                                    partial[i][..8].try_into().expect("8 bytes"),
                                );
                                latencies.push(now.saturating_sub(sent));
                            }
                        }
                        left -= usize::from(got[i] == total);
                    }
                }
                latencies
            })
        })
        .collect();
    let latencies: Vec<Vec<u64>> = readers.into_iter().map(|r| r.join().expect("reader")).collect();
    println!("{}", cpu_seconds() - cpu_before);
    let mut line = String::new();
    for latency in latencies.into_iter().flatten() {
        line.push(' ');
        line.push_str(&latency.to_string());
    }
    println!("{line}");
}

/// The server process: starts the clients, accepts them, sends the events
/// and reports.
fn server(args: &Args) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .args(["--clients", &args.clients.to_string()])
        .args(["--events", &args.events.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--connect", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let conns: Vec<TcpStream> = (0..args.clients)
        .map(|_| {
            let (conn, _) = listener.accept().expect("accept");
            conn.set_nodelay(true).expect("nodelay");
            conn
        })
        .collect();
    let cpu_before = cpu_seconds();
    let (begin, begin_ns) = (Instant::now(), now_ns());
    let (rate, events) = (args.rate, args.events);
    let writers: Vec<_> = deal(conns, args.threads)
        .into_iter()
        .map(|mut conns| {
            thread::spawn(move || {
                let due = |k: usize| Duration::from_secs_f64(k as f64 / rate as f64);
                let mut batch = Vec::new();
                let mut sent = 0;
                while sent < events {
                    // Every event due by now goes out in one write per
                    // connection: batching is all a server can do once it
                    // falls behind.
                    let elapsed = begin.elapsed();
                    let now_due = (sent..events)
                        .take_while(|&k| due(k) <= elapsed)
                        .last()
                        .map_or(sent, |k| k + 1);
                    if now_due == sent {
                        thread::sleep(due(sent).saturating_sub(elapsed));
                        continue;
                    }
                    batch.clear();
                    for k in sent..now_due {
                        // Stamped with when it was due: lateness counts.
                        let mut event = [b'x'; EVENT];
                        let stamp = begin_ns + due(k).as_nanos() as u64;
                        event[..8].copy_from_slice(&stamp.to_le_bytes());
                        batch.extend_from_slice(&event);
                    }
                    for conn in &mut conns {
                        conn.write_all(&batch).expect("write");
                    }
                    sent = now_due;
                }
                conns // kept open until every writer is done
            })
        })
        .collect();
    let _conns: Vec<_> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    let server_cpu = cpu_seconds() - cpu_before;
    let mut report = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    report.read_line(&mut line).expect("the clients' CPU time");
    let wall = begin.elapsed().as_secs_f64();
    let client_cpu: f64 = line.trim().parse().unwrap_or(0.0);
    line.clear();
    report.read_line(&mut line).expect("the clients' latencies");
    let _ = child.wait();
    let mut latencies: Vec<u64> = line.split_whitespace().filter_map(|l| l.parse().ok()).collect();
    latencies.sort_unstable();
    assert!(!latencies.is_empty(), "no deliveries");
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    let deliveries = latencies.len() as f64;
    println!(
        "{} clients, {events} events at {rate}/s: {} deliveries; latency p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; CPU per delivery {:.2} us (server {:.2}, clients {:.2}); \
         {:.0}% of one core over {wall:.1} s",
        args.clients,
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        (server_cpu + client_cpu) * 1e6 / deliveries,
        server_cpu * 1e6 / deliveries,
        client_cpu * 1e6 / deliveries,
        (server_cpu + client_cpu) / wall * 100.0,
    );
}
