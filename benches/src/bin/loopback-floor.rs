//! The floor under any SSE server's broadcast latency on this machine: the
//! same load as `scale.sh`'s latency run (events of about 80 bytes, at a
//! fixed rate, to N clients over loopback TCP), served by the least a
//! server can do (one plain `write` per client of every event due, no
//! HTTP, no framing, no bookkeeping) to the least a client can do (one
//! `read` into a buffer, no parsing). Each event is stamped with the time
//! it was due, so a writer that falls behind shows as latency. Whatever it measures, a real server and real
//! clients on the same cores measure more.
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml --bin loopback-floor -- \
//!     [--clients 9000] [--rate 100] [--events 500] [--threads 2]
//! ```
//!
//! The writers and the readers are `--threads` threads each, every thread
//! owning an equal share of the connections. A writer sends the events
//! due to its connections in turn, all of them in one blocking write per
//! connection; a reader reads its
//! connections round-robin with blocking reads (an event waits in a socket
//! while the reader serves another, as it would in the load generator's
//! grouped mode). The descriptor limit (both ends of every connection are
//! in this one process) caps `--clients` below half of `ulimit -n`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENT: usize = 80;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Process CPU time (user + system) in seconds, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let (mut clients, mut rate, mut events, mut threads) = (9000usize, 100u64, 500usize, 2usize);
    let mut args = std::env::args().skip(1);
    while let (Some(name), Some(value)) = (args.next(), args.next()) {
        let value: u64 = value.parse().expect("a number");
        match name.as_str() {
            "--clients" => clients = value as usize,
            "--rate" => rate = value.max(1),
            "--events" => events = value as usize,
            "--threads" => threads = value.max(1) as usize,
            _ => panic!("unknown option {name}"),
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (mut writers, mut readers): (Vec<Vec<TcpStream>>, Vec<Vec<TcpStream>>) = (
        (0..threads).map(|_| Vec::new()).collect(),
        (0..threads).map(|_| Vec::new()).collect(),
    );
    for i in 0..clients {
        let client = TcpStream::connect(addr).expect("connect (raise ulimit -n?)");
        let (server, _) = listener.accept().expect("accept");
        server.set_nodelay(true).expect("nodelay");
        writers[i % threads].push(server);
        readers[i % threads].push(client);
    }
    let start = Arc::new(Barrier::new(2 * threads + 1));
    let reader_threads: Vec<_> = readers
        .into_iter()
        .map(|mut conns| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut latencies = Vec::with_capacity(conns.len() * events);
                let mut got = vec![0usize; conns.len()];
                let mut partial = vec![[0u8; EVENT]; conns.len()];
                let mut buf = [0u8; 64 * 1024];
                let mut left = conns.len();
                while left > 0 {
                    for (i, conn) in conns.iter_mut().enumerate() {
                        if got[i] == events * EVENT {
                            continue;
                        }
                        let n = conn.read(&mut buf).expect("read");
                        let now = now_ns();
                        for &byte in &buf[..n] {
                            partial[i][got[i] % EVENT] = byte;
                            got[i] += 1;
                            if got[i] % EVENT == 0 {
                                let sent = u64::from_le_bytes(partial[i][..8].try_into().unwrap());
                                latencies.push(now.saturating_sub(sent));
                            }
                        }
                        left -= usize::from(got[i] == events * EVENT);
                    }
                }
                latencies
            })
        })
        .collect();
    let writer_threads: Vec<_> = writers
        .into_iter()
        .map(|mut conns| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let (begin, begin_ns) = (Instant::now(), now_ns());
                let due = |k: usize| Duration::from_secs_f64(k as f64 / rate as f64);
                let mut batch = Vec::new();
                let mut sent = 0;
                while sent < events {
                    // Every event due by now goes out in one write per
                    // connection: batching is all a server can do once it
                    // falls behind.
                    let elapsed = begin.elapsed();
                    let now_due = (0..=events)
                        .take_while(|&k| k == 0 || due(k - 1) <= elapsed)
                        .count()
                        - 1;
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
            })
        })
        .collect();
    let cpu_before = cpu_seconds();
    let begin = Instant::now();
    start.wait();
    for writer in writer_threads {
        writer.join().expect("writer");
    }
    let mut latencies: Vec<u64> = reader_threads
        .into_iter()
        .flat_map(|r| r.join().expect("reader"))
        .collect();
    let (wall, cpu) = (begin.elapsed().as_secs_f64(), cpu_seconds() - cpu_before);
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    let deliveries = latencies.len();
    println!(
        "{clients} clients, {events} events at {rate}/s: {deliveries} deliveries, \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         {:.2} us CPU per delivery (write + read), {:.0}% of one core over {wall:.1} s",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        cpu * 1e6 / deliveries as f64,
        cpu / wall * 100.0,
    );
}
