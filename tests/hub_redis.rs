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
        if !common::redis_server_on_path() {
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
    hub_at(&redis.url(), history, per_topic)
}

/// The same on the Redis at `url`.
fn hub_at(url: &str, history: usize, per_topic: usize) -> (Hub, Heard) {
    let heard = Heard::default();
    let log = heard.clone();
    let hub = Hub::builder()
        .history(history, 1 << 20)
        .topic_history(per_topic, 1 << 20)
        .redis(url, "test:stream")
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

/// The events up to and with the first whose data is `last`.
fn until(rx: &Receiver, last: &str) -> Vec<(String, String, String)> {
    let mut got = vec![next(rx)];
    while got[got.len() - 1].2 != last {
        got.push(next(rx));
    }
    got
}

fn is_gap(event: &(String, String, String)) -> bool {
    (event.0.as_str(), event.2.as_str()) == ("stdsse-gap", "unknown-id")
}

/// Waits until the log hook heard a line that starts with `what`.
fn wait_heard(heard: &Heard, what: &str) {
    common::wait_until(what, || heard.lock().unwrap().iter().any(|h| h.starts_with(what)));
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

/// A receiver on each hub, three events published on `a` and received by
/// both (returned), then `FLUSHALL`.
fn three_then_flush(
    redis: &Redis,
    a: &Hub,
    b: &Hub,
) -> (Receiver, Receiver, Vec<(String, String, String)>) {
    let (ra, rb) =
        (a.receiver(Subscription::new()).unwrap(), b.receiver(Subscription::new()).unwrap());
    for n in 0..3 {
        a.publish(say(format!("old{n}"))).unwrap();
    }
    let old = take(&ra, 3);
    assert_eq!(take(&rb, 3), old);
    redis.conn().call(&[b"FLUSHALL"]).unwrap();
    (ra, rb, old)
}

#[test]
fn after_a_flush_a_resume_gets_the_gap_and_nothing_from_before() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let ((a, heard), (b, _)) = (hub(&redis, 100, 100), hub(&redis, 100, 1));
    let (ra, rb, old) = three_then_flush(&redis, &a, &b);
    a.publish(say("new".into())).unwrap();
    // The hubs notice the new epoch within a round trip (1 s): the event
    // published after the flush comes with it, on both.
    let new = until(&ra, "new").pop().unwrap();
    assert_eq!(until(&rb, "new").pop().unwrap(), new);
    let epoch = |id: &str| id.split('-').next().unwrap().to_string();
    assert_ne!(epoch(&new.1), epoch(&old[0].1), "a new epoch after the flush");
    wait_heard(&heard, "EpochChanged");
    // The old ids are unknown now: the gap signal, then only what came
    // after the loss (the history's replay of an unknown id), never the
    // old events again under their old ids.
    for hub in [&a, &b] {
        let r = hub.receiver(Subscription::new().last_event_id(Some(&old[1].1))).unwrap();
        assert!(is_gap(&next(&r)));
        assert_eq!(next(&r), new, "only the new epoch's event");
        assert!(r.recv_timeout(Duration::from_millis(100)).is_err(), "nothing more");
    }
}

#[test]
fn the_subscribers_live_across_a_flush_get_the_gap_before_the_new_events() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let ((a, _), (b, heard)) = (hub(&redis, 100, 100), hub(&redis, 100, 100));
    let (ra, rb, old) = three_then_flush(&redis, &a, &b);
    // At once, before B's reader can have seen the flush (its `XREAD`
    // blocks up to a second): B may serve it from its history.
    let resumed = b.receiver(Subscription::new().last_event_id(Some(&old[0].1))).unwrap();
    a.publish(say("new".into())).unwrap();
    for (name, r) in [("live on A", &ra), ("live on B", &rb), ("resumed on B", &resumed)] {
        let got = until(r, "new");
        let before = &got[..got.len().saturating_sub(2)];
        assert!(got.iter().rev().nth(1).is_some_and(is_gap), "{name}: a gap first: {got:?}");
        assert!(before.iter().all(|e| e.2.starts_with("old")), "{name}: {got:?}");
    }
    wait_heard(&heard, "EpochChanged");
}

/// A port that answers every connection with bytes that are not RESP.
fn garbage_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut peer in listener.incoming().flatten() {
            use std::io::Write;
            let _ = peer.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    port
}

#[test]
fn a_port_that_answers_garbage_is_unavailable_and_the_password_stays_hidden() {
    let url = format!("redis://:sekret@127.0.0.1:{}", garbage_port());
    let (hub, heard) = hub_at(&url, 10, 10);
    // Never up: every connection fails its first round trip.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let refused = hub.publish(say("x".into())).unwrap_err();
        assert_eq!(refused.1, PublishErrorKind::Unavailable);
        thread::sleep(Duration::from_millis(20));
    }
    wait_heard(&heard, "Lost { writer: true");
    wait_heard(&heard, "Lost { writer: false");
    let heard = heard.lock().unwrap();
    assert!(!heard.iter().any(|h| h.contains("sekret") || h.starts_with("Connected")), "{heard:?}");
    let builder = Hub::builder().redis(&url, "s");
    assert!(!format!("{builder:?}").contains("sekret"), "{builder:?}");
}

#[test]
fn once_redis_is_back_publish_stays_available() {
    let Some(mut redis) = Redis::start(true) else {
        return;
    };
    let (a, heard) = hub(&redis, 1000, 1000);
    let ra = a.receiver(Subscription::new()).unwrap();
    a.publish(say("before".into())).unwrap();
    assert_eq!(next(&ra).2, "before");
    redis.stop();
    wait_heard(&heard, "Lost { writer: false");
    redis.restart();
    let deadline = Instant::now() + common::LONG_WAIT;
    while a.publish(say("after".into())).is_err() {
        assert!(Instant::now() < deadline, "never available again");
        thread::sleep(Duration::from_millis(5));
    }
    // Available means the writer's own connection was verified: no
    // refusal once a publish was accepted.
    for n in 0..40 {
        a.publish(say(format!("more{n}"))).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(data(&take(&ra, 41))[..2], ["after", "more0"]);
}

#[test]
fn a_hub_behind_redis_resumes_a_newer_id_without_skipping_entries() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 1000, 1000);
    let ra = a.receiver(Subscription::new()).unwrap();
    for n in 0..100 {
        a.publish(say(format!("e{n}"))).unwrap();
    }
    let all = take(&ra, 100);
    // B starts now: its reader needs several rounds to read all 100, and a
    // client resumes on it at once after the 90th.
    let (b, _) = hub(&redis, 1000, 1000);
    let resumed = b.receiver(Subscription::new().last_event_id(Some(&all[89].1))).unwrap();
    assert_eq!(take(&resumed, 10), all[90..]);
    common::wait_until("B to deliver all 100", || b.stats().published == 100);
    assert!(resumed.recv_timeout(Duration::from_millis(100)).is_err(), "no duplicate");
}

#[test]
fn the_chat_on_redis_prints_the_listening_line_first() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    for _ in 0..3 {
        // `Example::start` fails unless the first line is the listening one.
        let chat = common::Example::start("chat", &["--redis", &redis.url()]);
        let line = chat.log.recv_timeout(common::WAIT).expect("a Redis log line");
        assert!(line.starts_with("redis: Connected"), "{line}");
    }
}

/// `XLEN` of the stream, or `LLEN` of a topic's ids.
fn count(redis: &Redis, command: &[u8], key: &str) -> i64 {
    match redis.conn().call(&[command, key.as_bytes()]).unwrap() {
        stdsse::redis::Reply::Integer(n) => n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn redis_keeps_each_topics_history_as_the_hub_does_and_a_resume_on_a_new_hub_agrees() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // Ten events in all, five of each topic: bob's eleven drop his oldest
    // six, not ann's two, once every hub can have read them (3 s); then 12
    // for everyone drop the oldest in all.
    let (a, _) = hub(&redis, 10, 5);
    // Read as published: a subscriber may be at most half a bound behind.
    let ra = a.receiver(Subscription::new().topic("ann").topic("bob")).unwrap();
    let post = |topics: &[&str], text: String| {
        a.publish_to(topics, say(text)).unwrap();
        next(&ra)
    };
    let mut seen = vec![post(&["ann"], "a0".into())];
    seen.extend((0..11).map(|n| post(&["bob"], format!("b{n}"))));
    assert_eq!(count(&redis, b"XLEN", "test:stream"), 12, "none deleted before it can be read");
    thread::sleep(Duration::from_millis(3100));
    seen.push(post(&["ann"], "a1".into()));
    let id = |data: &str| seen.iter().find(|e| e.2 == data).unwrap().1.clone();
    assert_eq!(count(&redis, b"XLEN", "test:stream"), 7, "a0, b6..b10, a1");
    assert_eq!(count(&redis, b"LLEN", "test:stream:t:bob"), 5);
    // A hub started now learns the history from Redis; it must not hide
    // bob's loss from a resume that also wants bob (b0..b5 are gone).
    let (b, _) = hub(&redis, 10, 5);
    for hub in [&a, &b] {
        common::wait_until("the history at its bounds", || hub.stats().history_len == 7);
    }
    #[rustfmt::skip]
    let cases: [(&str, &[&str], &str, &[&str]); 5] = [
        ("ann lost nothing", &["ann"], "a0", &["a1"]),
        ("bob lost b1..b5", &["ann", "bob"], "a0", &["stdsse-gap"]),
        ("bob, from one kept", &["bob"], "b7", &["b8", "b9", "b10"]),
        ("bob, from one lost", &["bob"], "b2", &["stdsse-gap"]),
        ("bob, from his newest lost", &["bob"], "b5", &["b6", "b7", "b8", "b9", "b10"]),
    ];
    for (on, hub) in [("A", &a), ("B, new", &b)] {
        for (name, topics, after, want) in cases {
            let sub = topics.iter().fold(Subscription::new().topics_only(), |s, t| s.topic(*t));
            let r = hub.receiver(sub.last_event_id(Some(&id(after)))).unwrap();
            let got = take(&r, want.len());
            let got: Vec<_> =
                got.iter().map(|e| if is_gap(e) { "stdsse-gap" } else { &e.2 }).collect();
            assert_eq!(got, want, "{on}: {name}");
        }
    }
    // Events for everyone then drop the oldest in all, once those are due.
    let mut n = 0;
    common::wait_until("ann's and bob's ids dropped by the total", || {
        n += 1;
        drop(post(&[], format!("all{n}")));
        ["ann", "bob"].iter().all(|t| count(&redis, b"LLEN", &format!("test:stream:t:{t}")) == 0)
    });
    // Trimmed behind the hub's back: its ids are skipped, not an error.
    redis.conn().call(&[b"XTRIM", b"test:stream", b"MAXLEN", b"0"]).unwrap();
    a.publish_to(&["bob"], say("b11".into())).unwrap();
    assert_eq!(next(&ra).2, "b11");
}

#[test]
fn an_entry_deleted_before_the_hub_read_it_gives_the_live_the_gap() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 100, 100);
    let r = a.receiver(Subscription::new()).unwrap();
    a.publish(say("e0".into())).unwrap();
    assert_eq!(next(&r).2, "e0");
    // As a lagging reader sees it: e1 deleted (by a bound) before it was read.
    let mut c = redis.conn();
    let frame: &[u8] = b"data: e\n\n";
    for command in [
        &[&b"MULTI"[..]][..],
        &[b"XADD", b"test:stream", b"9999999999990-1", b"d", frame, b"t", b""],
        &[b"XADD", b"test:stream", b"9999999999990-2", b"d", frame, b"t", b""],
        &[b"XDEL", b"test:stream", b"9999999999990-1"],
        &[b"HSET", b"test:stream:lost", b"\n", b"9999999999990-1"],
        &[b"EXEC"],
    ] {
        c.call(command).unwrap();
    }
    assert!(is_gap(&next(&r)), "the gap signal first");
    assert!(next(&r).1.ends_with("-9999999999990-2"));
    a.publish(say("e3".into())).unwrap();
    assert_eq!(next(&r).2, "e3", "then no more gaps");
}

#[test]
fn each_call_deletes_at_most_its_budget_and_the_next_calls_the_rest() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 100, 5);
    (0..30).for_each(|n| a.publish_to(&["bob"], say(format!("b{n}"))).unwrap());
    let len = || count(&redis, b"XLEN", "test:stream");
    let bob = || count(&redis, b"LLEN", "test:stream:t:bob");
    common::wait_until("the 30 in Redis", || len() == 30);
    thread::sleep(Duration::from_millis(3100));
    // One post: 4 arguments of the script's, so 20 deletions of the 26 due
    // (a call adds and deletes at once: the list's length shows it ran).
    a.publish_to(&["bob"], say("b30".into())).unwrap();
    common::wait_until("the first call", || bob() != 30);
    assert_eq!((len(), bob()), (11, 11));
    a.publish_to(&["bob"], say("b31".into())).unwrap();
    common::wait_until("the next call", || bob() != 11);
    assert_eq!((len(), bob()), (5, 5), "the bound");
}

#[test]
fn past_twice_the_count_of_topics_that_lost_one_floor_stands_for_all() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // One event in all: every post past the first deletes one, for its topic.
    let (a, _) = hub(&redis, 1, 1);
    let topics: Vec<String> = (0..70).map(|n| format!("t{n}")).collect();
    let first = a.receiver(Subscription::new().topic("t0").topics_only()).unwrap();
    topics.iter().for_each(|t| a.publish_to(&[t], say(t.clone())).unwrap());
    let old = next(&first).1;
    thread::sleep(Duration::from_millis(3100));
    let lost = |field: &[u8]| redis.conn().call(&[b"HEXISTS", b"test:stream:lost", field]).unwrap();
    common::wait_until("the floor", || {
        a.publish(say("more".into())).unwrap();
        lost(b"\r") == stdsse::redis::Reply::Integer(1)
    });
    assert!(count(&redis, b"HLEN", "test:stream:lost") <= 64 + 2, "bounded");
    // t0's own mark is gone: the floor gives its resume the gap signal.
    let hub_b = hub(&redis, 1, 1).0;
    let r = hub_b.receiver(Subscription::new().topic("t0").topics_only().last_event_id(Some(&old)));
    assert!(is_gap(&next(&r.unwrap())));
}

#[test]
fn a_new_hub_keeps_what_the_stream_held_as_history_not_news() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 2000, 2000);
    let ra = a.receiver(Subscription::new()).unwrap();
    (0..1500).for_each(|n| a.publish(say(format!("old{n}"))).unwrap());
    let first = next(&ra).1;
    common::wait_until("the 1,500 in Redis", || count(&redis, b"XLEN", "test:stream") == 1500);
    // Subscribed as soon as B is built (it has read the stream by then): a
    // new subscriber gets only what is published after, as on an
    // in-process hub, and one resuming from the first gets every later one.
    let (b, _) = hub(&redis, 2000, 2000);
    let (fresh, recent) = (b.receiver(Subscription::new()).unwrap(), Subscription::new().recent(2));
    let resumed = b.receiver(Subscription::new().last_event_id(Some(&first))).unwrap();
    a.publish(say("new".into())).unwrap();
    assert_eq!(next(&fresh).2, "new", "no old event as news");
    let all = take(&resumed, 1500);
    assert_eq!(
        (all[0].2.as_str(), all[1498].2.as_str(), all[1499].2.as_str()),
        ("old1", "old1499", "new")
    );
    common::wait_until("B's history loaded", || b.stats().history_len == 1501);
    let r = b.receiver(recent).unwrap();
    assert_eq!(data(&take(&r, 2)), ["old1499", "new"], "the history has them");
}

#[test]
fn a_hub_built_on_a_full_stream_gives_recent_the_newest_at_once() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 2000, 2000);
    (0..1500).for_each(|n| a.publish(say(format!("old{n}"))).unwrap());
    common::wait_until("the 1,500 in Redis", || count(&redis, b"XLEN", "test:stream") == 1500);
    // `build` returns once the hub has read what the stream held (100
    // round trips here): the newest two are there for `recent`.
    let (b, _) = hub(&redis, 2000, 2000);
    let r = b.receiver(Subscription::new().recent(2)).unwrap();
    a.publish(say("new".into())).unwrap();
    assert_eq!(data(&take(&r, 3)), ["old1498", "old1499", "new"]);
}

/// A resume that Redis cannot place gets the gap signal even once the hub
/// has forgotten idle topics (its floor raised): "no id" must never read as
/// an id the history places.
#[test]
fn a_resume_redis_cannot_place_gets_the_gap_after_the_hub_forgot_topics() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, _) = hub(&redis, 1, 1);
    let x = || Subscription::new().topic("x").topics_only();
    let rx = a.receiver(x()).unwrap();
    ["x1", "x2"].iter().for_each(|d| a.publish_to(&["x"], say(d.to_string())).unwrap());
    let first = next(&rx).1;
    (0..70).for_each(|n| a.publish_to(&[&format!("t{n}")], say(format!("t{n}"))).unwrap());
    common::wait_until("A read them all", || a.stats().published == 72);
    // An id of this epoch older than anything in the stream.
    let (epoch, _) = first.split_once('-').unwrap();
    let r = a.receiver(x().last_event_id(Some(&format!("{epoch}-1-0")))).unwrap();
    a.publish_to(&["x"], say("x3".into())).unwrap();
    let got = until(&r, "x3");
    assert!(is_gap(&got[0]), "{got:?}");
}

/// An entry that another program added without our fields is read (an id
/// only) and deleted like ours: the script that trims it must not fail
/// halfway, or the writer would add its batch twice.
#[test]
fn a_foreign_entry_in_the_stream_is_trimmed_without_publishing_twice() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, heard) = hub(&redis, 1, 1);
    redis.conn().call(&[b"XADD", b"test:stream", b"*", b"d", b"data: foreign\n\n"]).unwrap();
    common::wait_until("A read it", || a.stats().published == 1);
    let rx = a.receiver(Subscription::new()).unwrap();
    thread::sleep(Duration::from_millis(3100)); // old enough to be deleted
    for d in ["e0", "e1", "e2"] {
        a.publish(say(d.into())).unwrap();
        assert_eq!(next(&rx).2, d);
    }
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "no duplicate");
    assert_eq!(a.stats().published, 4, "the foreign entry and three");
    assert!(count(&redis, b"XLEN", "test:stream") <= 3);
    assert!(!heard.lock().unwrap().iter().any(|h| h.starts_with("Lost")), "{heard:?}");
}

/// A client's `Last-Event-ID` is not trusted to be an entry id: one that
/// Redis would refuse gets the gap signal and leaves Redis's connections,
/// and `publish`, alone.
#[test]
fn a_malformed_resume_id_gets_the_gap_and_publish_keeps_working() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (a, heard) = hub(&redis, 10, 10);
    let rx = a.receiver(Subscription::new()).unwrap();
    a.publish(say("e0".into())).unwrap();
    let first = next(&rx).1;
    let epoch = first.split_once('-').unwrap().0;
    for rest in ["1-2-3", "+1-0", "1-+0", "1", "-1-0", "18446744073709551616-0", "1-0 "] {
        let sub = Subscription::new().last_event_id(Some(&format!("{epoch}-{rest}")));
        let r = a.receiver(sub).unwrap();
        a.publish(say(rest.into())).unwrap();
        assert!(is_gap(&next(&r)), "{rest:?}");
        assert_eq!(next(&rx).2, rest, "{rest:?}: delivered");
    }
    assert!(!heard.lock().unwrap().iter().any(|h| h.starts_with("Lost")), "{heard:?}");
}
