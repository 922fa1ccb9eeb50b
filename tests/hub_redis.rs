//! The hub on Redis Streams (`HubBuilder::redis`) against a real
//! `redis-server`, started on a free port in a temporary directory; without
//! one on PATH each test prints SKIP and passes, so `cargo test` stays
//! offline.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use stdsse::hub::{Hub, HubLogKind, PublishError, PublishErrorKind, Receiver, Subscription};
use stdsse::redis::{Conn, RedisUrl};
use stdsse::{Event, Frame, Item, Parser};

/// A `redis-server` on a free port, killed (its directory removed) on drop.
struct Redis {
    child: Option<Child>,
    dir: std::path::PathBuf,
    port: u16,
    persist: bool,
}

impl Redis {
    /// Starts one; `persist`: an append-only file, so a restart keeps the data.
    fn start(persist: bool) -> Option<Redis> {
        let version = Command::new("redis-server").arg("--version").output();
        if !version.is_ok_and(|o| o.status.success()) {
            println!("SKIP: redis-server is not on PATH");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir =
            std::env::temp_dir().join(format!("stdsse-hub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis { child: None, dir, port, persist };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> Conn {
        Conn::connect(&RedisUrl::parse(&self.url()).unwrap(), common::WAIT).unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts it on the same port and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let aof = if self.persist { "yes" } else { "no" };
        let port = self.port.to_string();
        let args = ["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        let child = Command::new("redis-server")
            .args(args)
            .args(["--appendonly", aof, "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = RedisUrl::parse(&self.url()).unwrap();
        common::wait_until("redis-server to answer", || {
            Conn::connect(&url, common::WAIT).is_ok_and(|mut c| c.call(&[b"PING"]).is_ok())
        });
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the log hook heard of Redis, as text.
type Heard = Arc<Mutex<Vec<String>>>;

/// A hub on `redis` with `history` events, `per_topic` of each topic.
fn hub(redis: &Redis, history: usize, per_topic: usize) -> (Hub, Heard) {
    let heard = Heard::default();
    let log = heard.clone();
    let hub = Hub::builder()
        .history(history, 1 << 20)
        .topic_history(per_topic, 1 << 20)
        .redis(&redis.url(), "test:stream")
        .log(move |l| {
            if let HubLogKind::Redis(what) = l.kind {
                log.lock().unwrap().push(format!("{what:?}"));
            }
        })
        .build()
        .unwrap();
    (hub, heard)
}

/// The next event a receiver gets: (type, id, data), within the wait.
fn next(rx: &Receiver) -> (String, String, String) {
    next_of(&rx.recv_timeout(common::WAIT).expect("an event in time"))
}

fn next_of(frame: &Frame) -> (String, String, String) {
    let mut parser = Parser::new();
    parser.feed(frame.as_bytes());
    match parser.next_item() {
        Some(Ok(Item::Event(e))) => (e.event_type, e.id, e.data),
        other => panic!("not an event: {other:?} in {frame:?}"),
    }
}

fn take(rx: &Receiver, n: usize) -> Vec<(String, String, String)> {
    (0..n).map(|_| next(rx)).collect()
}

fn data(events: &[(String, String, String)]) -> Vec<&str> {
    events.iter().map(|e| e.2.as_str()).collect()
}

fn say(text: String) -> Event {
    Event::new().data(text)
}

#[test]
fn two_hubs_deliver_the_same_events_in_one_order() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let ((a, _), (b, _)) = (hub(&redis, 1000, 1000), hub(&redis, 1000, 1000));
    let (ra, rb) =
        (a.receiver(Subscription::new()).unwrap(), b.receiver(Subscription::new()).unwrap());
    let publishers: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .map(|(name, hub)| {
            thread::spawn(move || {
                for n in 0..50 {
                    hub.publish(say(format!("{name}{n}"))).unwrap();
                }
            })
        })
        .collect();
    publishers.into_iter().for_each(|p| p.join().unwrap());
    let (on_a, on_b) = (take(&ra, 100), take(&rb, 100));
    assert_eq!(on_a, on_b, "one sequence, ids included");
    let mut seen = data(&on_a);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 100, "every event once");
    // Each publisher's events in its order; ids `<epoch>-<ms>-<seq>`.
    let a_order: Vec<_> = data(&on_a).into_iter().filter(|d| d.starts_with('a')).collect();
    assert_eq!(a_order, (0..50).map(|n| format!("a{n}")).collect::<Vec<_>>());
    assert!(on_a.iter().all(|e| e.1.split('-').count() == 3), "{:?}", on_a[0]);
    assert!(ra.try_recv().is_err() && rb.try_recv().is_err(), "nothing more");
}

#[test]
fn an_id_from_one_hub_resumes_on_another_from_its_history_or_from_redis() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // B keeps one event of each topic: older resumes replay from Redis.
    let ((a, _), (b, _)) = (hub(&redis, 100, 100), hub(&redis, 100, 1));
    let both = || Subscription::new().topic("even").topic("odd");
    let ra = a.receiver(both()).unwrap();
    for n in 0..10 {
        let topic = if n % 2 == 0 { "even" } else { "odd" };
        a.publish_to(&[topic], say(format!("e{n}"))).unwrap();
    }
    let a_all = take(&ra, 10);
    common::wait_until("B to read them all", || b.stats().published == 10);
    #[rustfmt::skip]
    let cases = [
        ("older than B's history", both(), 2, &["e3", "e4", "e5", "e6", "e7", "e8", "e9"][..]),
        ("older, one topic", Subscription::new().topic("odd").topics_only(), 2, &["e3", "e5", "e7", "e9"][..]),
        ("in B's history", both(), 8, &["e9"][..]),
    ];
    let mut receivers = Vec::new();
    for (name, sub, after, want) in cases {
        let r = b.receiver(sub.last_event_id(Some(&a_all[after].1))).unwrap();
        let got = take(&r, want.len());
        assert_eq!(data(&got), want, "{name}");
        assert_eq!(
            got,
            a_all.iter().filter(|e| want.contains(&e.2.as_str())).cloned().collect::<Vec<_>>(),
            "{name}: the same ids"
        );
        receivers.push((name, r));
    }
    // Then the live events, once, with no gap at the hand-over.
    a.publish_to(&["odd"], say("e10".into())).unwrap();
    for (name, r) in &receivers {
        assert_eq!(next(r).2, "e10", "{name}");
        assert!(r.recv_timeout(Duration::from_millis(50)).is_err(), "{name}: no duplicate");
    } // Trimmed past the id: the gap signal, not events that only look
      // like they follow.
    redis.conn().call(&[b"XTRIM", b"test:stream", b"MAXLEN", b"3"]).unwrap();
    let sub = Subscription::new().topic("odd").last_event_id(Some(&a_all[2].1));
    let gap = next(&b.receiver(sub).unwrap());
    assert_eq!((gap.0.as_str(), gap.2.as_str()), ("stdsse-gap", "unknown-id"));
}

#[test]
fn a_resume_across_a_flushed_stream_gets_the_gap_signal() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let ((a, heard), (b, _)) = (hub(&redis, 100, 100), hub(&redis, 100, 1));
    let (ra, rb) =
        (a.receiver(Subscription::new()).unwrap(), b.receiver(Subscription::new()).unwrap());
    for n in 0..3 {
        a.publish(say(format!("old{n}"))).unwrap();
    }
    let old = take(&ra, 3);
    redis.conn().call(&[b"FLUSHALL"]).unwrap();
    // The hubs notice the new epoch within a round trip (1 s): an event
    // published after the flush comes with it, on both.
    a.publish(say("new".into())).unwrap();
    let epoch = |id: &str| id.split('-').next().unwrap().to_string();
    // (B's receiver has the old ones still to take.)
    for (r, n) in [(&ra, 1), (&rb, 4)] {
        let new = take(r, n).pop().unwrap();
        assert_eq!(new.2, "new");
        assert_ne!(epoch(&new.1), epoch(&old[0].1), "a new epoch after the flush");
    }
    // On both hubs: the gap, never "old" events that only look like they
    // follow.
    for hub in [&a, &b] {
        let sub = Subscription::new().last_event_id(Some(&old[1].1));
        let r = hub.receiver(sub).unwrap();
        let gap = next(&r);
        assert_eq!((gap.0.as_str(), gap.2.as_str()), ("stdsse-gap", "unknown-id"));
    }
    let heard = heard.lock().unwrap();
    assert!(heard.iter().any(|h| h.starts_with("EpochChanged")), "{heard:?}");
}

#[test]
fn redis_down_fails_publish_at_once_and_a_restart_misses_nothing() {
    let Some(mut redis) = Redis::start(true) else {
        return;
    };
    let ((a, heard), (b, _)) = (hub(&redis, 1000, 1000), hub(&redis, 1000, 1000));
    let (ra, rb) =
        (a.receiver(Subscription::new()).unwrap(), b.receiver(Subscription::new()).unwrap());
    a.publish(say("before".into())).unwrap();
    let before = next(&ra);
    assert_eq!(next(&rb), before);
    redis.stop();
    // Refused promptly (the reader sees the connection close), with the
    // event given back.
    let start = Instant::now();
    let mut accepted = 0; // before A knew: written once Redis is back
    let refused = loop {
        match a.publish(say("while down".into())) {
            Err(e) => break e,
            Ok(()) if start.elapsed() < common::WAIT => {
                accepted += 1;
                thread::sleep(Duration::from_millis(5));
            }
            Ok(()) => panic!("publish still accepted"),
        }
    };
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert_eq!(refused, PublishError(say("while down".into()), PublishErrorKind::Unavailable));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(ra.try_recv().unwrap_err(), TryRecvError::Empty, "still open");
    redis.restart();
    // B publishes as soon as it can; A's reader goes on from its last
    // entry: both get B's event and what A accepted before it knew Redis
    // was down, once each, and nothing from before the stop again.
    let deadline = Instant::now() + common::LONG_WAIT;
    while b.publish(say("after".into())).is_err() {
        assert!(Instant::now() < deadline, "B never reconnected");
        thread::sleep(Duration::from_millis(10));
    }
    let (on_a, on_b) = (take(&ra, accepted + 1), take(&rb, accepted + 1));
    assert_eq!(on_a, on_b, "the same on both");
    let mut got = data(&on_a);
    got.sort_unstable();
    let mut want = vec!["while down"; accepted];
    want.insert(0, "after"); // sorted
    assert_eq!(got, want, "what was accepted, once");
    for r in [&ra, &rb] {
        assert!(r.recv_timeout(Duration::from_millis(200)).is_err(), "no duplicate");
    }
    let heard = heard.lock().unwrap().clone();
    let lost = heard.iter().position(|h| h.starts_with("Lost { writer: false"));
    let back = heard.iter().rposition(|h| h.starts_with("Connected { writer: false"));
    assert!(lost.is_some() && back > lost, "{heard:?}");
}
