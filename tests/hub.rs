//! The broadcast hub over real sockets: a `Server` on 127.0.0.1:0 whose
//! `/events` route subscribes streams to a `Hub`, and raw TCP clients that
//! parse the event stream with `stdsse::parser::Parser`. The last tests
//! subscribe in-process `Receiver`s instead.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{wait_for, wait_until_within, NoItem, Sse, TestServer, LONG_WAIT};
use stdsse::hub::{
    Hub, HubBuilder, PublishError, PublishErrorKind, Published, Receiver, SlowClient,
    SubscribeError, Subscription, UnknownId, GAP_EVENT,
};
use stdsse::parser::{Item, MessageEvent, Parser};
use stdsse::{Accept, Event};

/// A server whose `/events` route is `hub.public_handler("topic")`. The server's
/// own keep-alives are off: everything on a subscribed stream is the hub's.
fn serve(hub: &Hub) -> TestServer {
    let handler = hub.public_handler("topic");
    TestServer::start(move |server| {
        server.keep_alive(None).sse("/events", handler);
    })
    .before_stop(closer(hub))
}

/// Closes the hub first when the test ends: the server's shutdown waits for
/// the streams the hub holds, which it would otherwise release only on its
/// next check for closed streams (up to a second later).
fn closer(hub: &Hub) -> impl FnOnce() + 'static {
    let hub = hub.clone();
    move || {
        let _ = hub.close();
    }
}

fn build(builder: HubBuilder) -> Hub {
    builder.build().expect("start the hub")
}

/// The `n` of a hub-assigned id `<epoch>-<n>`; panics on any other id.
fn seq(hub: &Hub, id: &str) -> u64 {
    id.strip_prefix(hub.epoch())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{id:?} is not of the form {}-<n>", hub.epoch()))
}

/// The id the hub assigns to its `n`th event.
fn id(hub: &Hub, n: u64) -> String {
    format!("{}-{n}", hub.epoch())
}

fn wait_subscribers(hub: &Hub, n: u64) {
    wait_until_within(LONG_WAIT, &format!("{n} subscribers"), || hub.stats().subscribers == n);
}

fn wait_history(hub: &Hub, published: u64) {
    wait_until_within(LONG_WAIT, &format!("{published} events in the history"), || {
        let stats = hub.stats();
        stats.published == published && stats.history_len > 0
    });
}

fn data(events: &[MessageEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// Reads events up to and including the one whose data is `last`.
fn events_until(sse: &mut Sse, last: &str) -> Vec<MessageEvent> {
    let mut events = Vec::new();
    loop {
        let event = sse.next_event();
        let done = event.data == last;
        events.push(event);
        if done {
            return events;
        }
    }
}

fn publish(hub: &Hub, data: &str) {
    hub.publish(Event::new().data(data)).expect("publish");
}

/// Reads the next event and checks its data and the `n` of its
/// hub-assigned id.
fn expect_next(sse: &mut Sse, hub: &Hub, data: &str, n: u64, label: &str) {
    let event = sse.next_event();
    assert_eq!((event.data.as_str(), seq(hub, &event.id)), (data, n), "{label}");
}

#[test]
fn every_subscriber_gets_every_event_once_in_publish_order() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    const SUBSCRIBERS: usize = 20;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    let hub = build(Hub::builder());
    let epoch = hub.epoch();
    assert!(!epoch.is_empty() && !epoch.contains('-') && epoch.is_ascii(), "epoch {epoch:?}");
    assert_ne!(epoch, build(Hub::builder()).epoch(), "two hubs, one epoch");
    let server = serve(&hub);
    let clients: Vec<Sse> = (0..SUBSCRIBERS).map(|_| server.sse("/events", &[])).collect();
    wait_subscribers(&hub, SUBSCRIBERS as u64);

    let readers: Vec<_> =
        clients.into_iter().map(|mut sse| thread::spawn(move || sse.events(TOTAL))).collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = hub.clone();
            thread::spawn(move || {
                for i in 0..PER_PUBLISHER {
                    hub.publish(Event::new().data(format!("{p}:{i}"))).expect("publish");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher thread");
    }
    for (s, reader) in readers.into_iter().enumerate() {
        let events = reader.join().expect("reader thread");
        let mut next = [0usize; PUBLISHERS];
        for (k, event) in events.iter().enumerate() {
            assert_eq!(event.event_type, "message");
            // Ids count up from 1 without holes: strictly increasing, and
            // every event arrives exactly once.
            assert_eq!(seq(&hub, &event.id), k as u64 + 1, "subscriber {s}: {event:?}");
            let (p, i) = event.data.split_once(':').expect("publisher:seq");
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "subscriber {s}: publisher {p} out of order");
            next[p] += 1;
        }
        assert_eq!(next, [PER_PUBLISHER; PUBLISHERS], "subscriber {s}");
    }
    wait_until_within(LONG_WAIT, "every delivery counted", || {
        hub.stats().delivered == (TOTAL * SUBSCRIBERS) as u64
    });
    let stats = hub.stats();
    assert_eq!((stats.published, stats.evicted, stats.dropped), (TOTAL as u64, 0, 0));
}

#[test]
fn replay_hands_over_to_live_without_gap_or_duplicate() {
    const ITERATIONS: u64 = 150;
    const READ: u64 = 60;
    let hub = build(Hub::builder().history(1_000_000, 256 << 20));
    let server = serve(&hub);
    let stop = Arc::new(AtomicBool::new(false));

    // The watcher sees every event and shares the ids seen so far.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut watcher = server.sse("/events", &[]);
    wait_subscribers(&hub, 1);
    let watch = {
        let (hub, seen, stop) = (hub.clone(), seen.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match watcher.next_item(Duration::from_millis(50)) {
                    Ok(Item::Event(event)) => seen.lock().unwrap().push(seq(&hub, &event.id)),
                    Ok(Item::Comment(_)) | Err(NoItem::Timeout) => {}
                    Err(NoItem::Eof) => panic!("the watcher's stream ended"),
                }
            }
        })
    };
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (hub, stop) = (hub.clone(), stop.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    hub.publish(Event::new().data(format!("{p}:{i}"))).expect("publish");
                    i += 1;
                    thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();

    for iteration in 0..ITERATIONS {
        wait_until_within(LONG_WAIT, "the watcher to see events", || {
            seen.lock().unwrap().len() > 10
        });
        let resume = {
            let seen = seen.lock().unwrap();
            // The newest id seen, or one up to 200 events older.
            let back = (iteration as usize * 37) % 200;
            seen[seen.len() - 1 - back.min(seen.len() - 1)]
        };
        let resume_id = id(&hub, resume);
        let mut sse = if iteration % 2 == 0 {
            server.sse("/events", &[("Last-Event-ID", &resume_id)])
        } else {
            server.sse(&format!("/events?lastEventId={resume_id}"), &[])
        };
        for expected in resume + 1..=resume + READ {
            let event = sse.next_event();
            assert_ne!(event.event_type, GAP_EVENT, "iteration {iteration}");
            assert_eq!(
                seq(&hub, &event.id),
                expected,
                "iteration {iteration}, resumed after {resume}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        publisher.join().expect("publisher thread");
    }
    watch.join().expect("watcher thread");
    let seen = seen.lock().unwrap();
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "the watcher missed events");
    let stats = hub.stats();
    assert_eq!((stats.replay_hits, stats.replay_misses), (ITERATIONS, 0));
    assert_eq!((stats.evicted, stats.dropped), (0, 0));
}

#[test]
fn last_event_id_from_header_or_query_parameter() {
    let hub = build(Hub::builder());
    let server = serve(&hub);
    for n in 1..=5 {
        publish(&hub, &format!("e{n}"));
    }
    wait_history(&hub, 5);
    let (two, three) = (id(&hub, 2), id(&hub, 3));
    // name, target, Last-Event-ID header, expected replay
    let cases: [(&str, String, Option<&str>, &[&str]); 4] = [
        ("header", "/events".into(), Some(&two), &["e3", "e4", "e5"]),
        ("query", format!("/events?lastEventId={two}"), None, &["e3", "e4", "e5"]),
        // The header wins over the query parameter.
        ("both", format!("/events?lastEventId={two}"), Some(&three), &["e4", "e5"]),
        // An empty id is no id: no gap signal, no replay, live only.
        ("empty", "/events?lastEventId=".into(), None, &[]),
    ];
    let mut clients: Vec<_> = cases
        .iter()
        .map(|(name, target, header, _)| {
            let headers: Vec<_> = header.iter().map(|v| ("Last-Event-ID", *v)).collect();
            (*name, server.sse(target, &headers))
        })
        .collect();
    for ((name, sse), (_, _, _, expected)) in clients.iter_mut().zip(&cases) {
        let events = sse.events(expected.len());
        assert_eq!(&data(&events), expected, "{name}");
    }
    wait_subscribers(&hub, cases.len() as u64);
    publish(&hub, "live");
    for (name, sse) in &mut clients {
        expect_next(sse, &hub, "live", 6, name);
    }
    let stats = hub.stats();
    assert_eq!((stats.replay_hits, stats.replay_misses), (3, 0));
}

/// Makes an id for a hub.
type IdOf = fn(&Hub) -> String;

#[test]
fn unknown_ids_get_the_gap_signal_then_the_retained_events() {
    // History of 5: after 8 events it holds 4..=8.
    let other_epoch = |hub: &Hub| {
        if hub.epoch() == "deadbeef" {
            "deadbeee-3".to_string()
        } else {
            "deadbeef-3".to_string()
        }
    };
    // name, the id the client sends, whether it is unknown (a gap)
    let cases: [(&str, IdOf, bool); 6] = [
        ("another epoch", other_epoch, true),
        ("garbage", |_| "not an id at all".into(), true),
        ("expired", |hub| id(hub, 2), true),
        ("never issued", |hub| id(hub, 100), true),
        ("right before the oldest retained", |hub| id(hub, 3), false),
        ("retained", |hub| id(hub, 6), false),
    ];
    for policy in [UnknownId::ReplayAll, UnknownId::LiveOnly] {
        for (name, last_id, gap) in &cases {
            let hub = build(Hub::builder().history(5, 1 << 20).unknown_id(policy));
            let server = serve(&hub);
            for n in 1..=8 {
                publish(&hub, &format!("e{n}"));
            }
            wait_history(&hub, 8);
            // The history is trimmed once every fan-out thread has handled
            // the events (see HubBuilder::backlog): wait for it to hold 4..=8.
            wait_until_within(LONG_WAIT, "a history of 5", || hub.stats().history_len == 5);
            let last_id = last_id(&hub);
            let mut sse = server.sse("/events", &[("Last-Event-ID", &last_id)]);
            let mut expected: Vec<String> = Vec::new();
            if *gap {
                let event = sse.next_event();
                assert_eq!(
                    (event.event_type.as_str(), event.data.as_str(), event.id.as_str()),
                    (GAP_EVENT, "unknown-id", ""),
                    "{policy:?}, {name}"
                );
            }
            let from = if *gap { 4 } else { seq(&hub, &last_id) + 1 };
            if !*gap || policy == UnknownId::ReplayAll {
                expected.extend((from..=8).map(|n| format!("e{n}")));
            }
            let replayed = sse.events(expected.len());
            assert_eq!(data(&replayed), expected, "{policy:?}, {name}");
            wait_subscribers(&hub, 1);
            publish(&hub, "live");
            expect_next(&mut sse, &hub, "live", 9, &format!("{policy:?}, {name}"));
            let stats = hub.stats();
            let expected_counts = if *gap { (0, 1) } else { (1, 0) };
            assert_eq!(
                (stats.replay_hits, stats.replay_misses),
                expected_counts,
                "{policy:?}, {name}"
            );
        }
    }
}

#[test]
fn history_is_bounded_by_count_bytes_and_age() {
    struct Case {
        name: &'static str,
        count: usize,
        bytes: usize,
        events: usize,
        data_len: usize,
    }
    #[rustfmt::skip]
    let cases = [
        Case { name: "count", count: 5, bytes: 1 << 20, events: 20, data_len: 10 },
        Case { name: "bytes", count: 1000, bytes: 1000, events: 20, data_len: 100 },
        Case { name: "both", count: 7, bytes: 1000, events: 20, data_len: 100 },
        Case { name: "one event over the byte bound stays", count: 1000, bytes: 100, events: 3, data_len: 500 },
    ];
    for case in cases {
        let hub = build(Hub::builder().history(case.count, case.bytes));
        let server = serve(&hub);
        for n in 0..case.events {
            publish(&hub, &format!("{n:02}{}", "x".repeat(case.data_len - 2)));
        }
        // What the bounds keep: the newest events while both bounds hold,
        // and always the newest one. Each is "id: <id>\ndata: <data>\n\n".
        let frame =
            |n: usize| "id: \ndata: \n\n".len() + id(&hub, n as u64 + 1).len() + case.data_len;
        let (mut retained, mut bytes) = (0, 0);
        for n in (0..case.events).rev() {
            let (count, more) = (retained + 1, bytes + frame(n));
            if retained > 0 && (count > case.count || more > case.bytes) {
                break;
            }
            (retained, bytes) = (count, more);
        }
        assert!(retained < case.events, "{}: the case prunes nothing", case.name);
        wait_for(
            LONG_WAIT,
            &format!("{}: {retained} events, {bytes} bytes in the history", case.name),
            || hub.stats(),
            |s| {
                (s.published, s.history_len, s.history_bytes)
                    == (case.events as u64, retained as u64, bytes as u64)
            },
        );
        // The newest are the ones kept: a client with an unknown id gets
        // exactly those.
        let mut sse = server.sse("/events", &[("Last-Event-ID", "unknown")]);
        assert_eq!(sse.next_event().event_type, GAP_EVENT, "{}", case.name);
        let replayed = sse.events(retained);
        let first = case.events - retained;
        for (k, event) in replayed.iter().enumerate() {
            assert!(
                event.data.starts_with(&format!("{:02}", first + k)),
                "{}: {event:?}",
                case.name
            );
        }
        wait_subscribers(&hub, 1);
        publish(&hub, "after");
        assert_eq!(sse.next_event().data, "after", "{}", case.name);
    }

    // Age: entries older than the maximum age go, even without publishes.
    let hub = build(
        Hub::builder()
            .history_max_age(Some(Duration::from_millis(150)))
            .keep_alive(Some(Duration::from_millis(100))),
    );
    let server = serve(&hub);
    for n in 1..=3 {
        publish(&hub, &format!("e{n}"));
    }
    wait_history(&hub, 3);
    wait_until_within(LONG_WAIT, "the history to expire", || {
        let stats = hub.stats();
        stats.history_len == 0 && stats.history_bytes == 0
    });
    // The client that saw the newest event missed nothing: no gap signal.
    let mut up_to_date = server.sse("/events", &[("Last-Event-ID", &id(&hub, 3))]);
    // One that saw an expired older one may have missed events.
    let mut behind = server.sse("/events", &[("Last-Event-ID", &id(&hub, 2))]);
    let gap = behind.next_event();
    assert_eq!((gap.event_type.as_str(), gap.data.as_str()), (GAP_EVENT, "unknown-id"));
    wait_subscribers(&hub, 2);
    publish(&hub, "live");
    assert_eq!(up_to_date.next_event().data, "live");
    assert_eq!(behind.next_event().data, "live");
    let stats = hub.stats();
    assert_eq!((stats.replay_hits, stats.replay_misses), (1, 1));
}

#[test]
fn publisher_chosen_ids_are_kept_and_resumable() {
    let hub = build(Hub::builder());
    let server = serve(&hub);
    let mut live = server.sse("/events", &[]);
    wait_subscribers(&hub, 1);
    let events = [
        Event::new().data("a"),
        Event::new().id("x").unwrap().data("b"),
        Event::new().data("c"),
        Event::new().id("order/42").unwrap().data("d"),
        Event::new().data("e"),
    ];
    for event in events {
        hub.publish(event).expect("publish");
    }
    let received = live.events(5);
    let ids: Vec<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [id(&hub, 1).as_str(), "x", &id(&hub, 3), "order/42", &id(&hub, 5)]);
    assert_eq!(data(&received), ["a", "b", "c", "d", "e"]);

    let cases: [(&str, &[&str]); 4] = [
        ("x", &["c", "d", "e"]),
        ("order/42", &["e"]),
        (&id(&hub, 3), &["d", "e"]),
        (&id(&hub, 5), &[]),
    ];
    let mut resumed = Vec::new();
    for (last_id, expected) in cases {
        let mut sse = server.sse("/events", &[("Last-Event-ID", last_id)]);
        let replayed = sse.events(expected.len());
        assert_eq!(data(&replayed), expected, "after {last_id}");
        resumed.push(sse);
    }
    wait_subscribers(&hub, 5);
    publish(&hub, "live");
    for sse in resumed.iter_mut().chain([&mut live]) {
        expect_next(sse, &hub, "live", 6, "resumed or live");
    }
    assert_eq!(hub.stats().replay_misses, 0);
}

#[test]
fn topics_reach_their_subscribers_once_and_filters_drop() {
    let hub = build(Hub::builder());
    let filtered_hub = hub.clone();
    let server = TestServer::start(|server| {
        server.keep_alive(None).sse("/events", hub.public_handler("topic"));
        server.sse("/filtered", move |_req| {
            let filtered_hub = filtered_hub.clone();
            Ok(Accept::new(move |stream| {
                let subscription = Subscription::new().topic("a").filter(|p| {
                    assert!(!p.id.is_empty() && !p.frame.as_bytes().is_empty());
                    p.event_type == Some("keep")
                });
                Ok(filtered_hub.subscribe(stream, subscription)?)
            }))
        });
    })
    .before_stop(closer(&hub));
    let targets = [
        "/events?topic=a&topic=b",
        "/events?topic=a&topic=a",
        "/events?topic=c",
        "/events",
        "/filtered",
    ];
    let mut clients: Vec<Sse> = targets.iter().map(|t| server.sse(t, &[])).collect();
    wait_subscribers(&hub, targets.len() as u64);

    let typed = |t: &str, d: &str| Event::new().event(t).unwrap().data(d);
    let to = |topics: &[&str], event: Event| hub.publish_to(topics, event).expect("publish_to");
    to(&["a"], Event::new().data("a1"));
    to(&["b"], Event::new().data("b1"));
    to(&["a", "b"], Event::new().data("ab1"));
    to(&["c"], Event::new().data("c1"));
    hub.publish(Event::new().data("all1")).unwrap();
    to(&["a"], typed("drop", "a-drop"));
    to(&["a"], typed("keep", "a-keep"));
    hub.publish(typed("keep", "all-keep")).unwrap();
    to(&["b"], typed("keep", "b-keep"));
    to(&["a", "a"], Event::new().data("aa1"));
    to(&["b", "c"], typed("keep", "bc-keep"));
    hub.publish(typed("keep", "end")).unwrap();

    let expected: [&[&str]; 5] = [
        &[
            "a1", "b1", "ab1", "all1", "a-drop", "a-keep", "all-keep", "b-keep", "aa1", "bc-keep",
            "end",
        ],
        &["a1", "ab1", "all1", "a-drop", "a-keep", "all-keep", "aa1", "end"],
        &["c1", "all1", "all-keep", "bc-keep", "end"],
        &["all1", "all-keep", "end"],
        &["a-keep", "all-keep", "end"],
    ];
    for ((target, sse), expected) in targets.iter().zip(&mut clients).zip(expected) {
        assert_eq!(data(&events_until(sse, "end")), expected, "{target}");
    }
}

const FLOOD: usize = 10_000;
/// How far the publisher may run ahead of the reading subscriber, in events:
/// well under what its socket buffers hold, so that only the client that
/// never reads can pass the backlog bound (64 events here).
const LEAD: usize = 50;

/// Reads `sse` on a thread, counting the events as they arrive, until EOF.
fn counting_reader(mut sse: Sse) -> (Arc<AtomicUsize>, thread::JoinHandle<Vec<MessageEvent>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let reader = thread::spawn(move || {
        let mut events = Vec::new();
        loop {
            match sse.next_item(LONG_WAIT) {
                Ok(Item::Event(event)) => {
                    events.push(event);
                    counter.store(events.len(), Ordering::SeqCst);
                }
                Ok(Item::Comment(_)) => {}
                Err(NoItem::Eof) => return events,
                Err(NoItem::Timeout) => panic!("stalled after {} events", events.len()),
            }
        }
    });
    (count, reader)
}

/// Publishes [`FLOOD`] events of about 1 KiB (data `<5-digit index>:xxx...`),
/// never more than [`LEAD`] ahead of what `received` says.
fn publish_flood(hub: &Hub, received: &AtomicUsize) {
    let filler = "x".repeat(1018);
    for i in 0..FLOOD {
        if i % 10 == 0 && i >= LEAD {
            wait_until_within(LONG_WAIT, "the reading subscriber to keep up", || {
                received.load(Ordering::SeqCst) + LEAD >= i
            });
        }
        hub.publish(Event::new().data(format!("{i:05}:{filler}"))).expect("publish");
    }
}

fn index_of(event: &MessageEvent) -> usize {
    event.data[..5].parse().unwrap_or_else(|_| panic!("bad data {:?}", &event.data[..20]))
}

/// The resident set size of this process, in KiB (Linux only).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_client_that_never_reads_is_evicted_and_memory_stays_bounded() {
    let hub = build(Hub::builder().backlog(64, 256 << 10));
    let server = serve(&hub);
    let mut slow = server.sse("/events", &[]);
    let normal = server.sse("/events", &[]);
    wait_subscribers(&hub, 2);
    let (received, reader) = counting_reader(normal);
    publish_flood(&hub, &received);
    wait_until_within(LONG_WAIT, "the slow client's eviction", || hub.stats().evicted >= 1);
    wait_subscribers(&hub, 1);
    // Its connection was closed: what reached its socket buffer, then EOF.
    let partial: Vec<MessageEvent> = slow
        .until_eof()
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event),
            Item::Comment(_) => None,
        })
        .collect();
    assert!(partial.len() < FLOOD, "the slow client got everything");
    for (k, event) in partial.iter().enumerate() {
        assert_eq!(index_of(event), k);
    }
    wait_until_within(LONG_WAIT, "every event handled", || hub.stats().published == FLOOD as u64);
    hub.close().expect("close");
    let events = reader.join().expect("reader thread");
    assert_eq!(events.len(), FLOOD, "the normal subscriber missed events");
    for (k, event) in events.iter().enumerate() {
        assert_eq!(index_of(event), k);
        assert_eq!(seq(&hub, &event.id), k as u64 + 1);
    }

    let stats = hub.stats();
    assert_eq!((stats.evicted, stats.dropped, stats.subscribers), (1, 0, 0), "{stats:?}");
    assert!(stats.history_len <= 2000 && stats.history_bytes <= 2 << 20, "{stats:?}");
    wait_until_within(LONG_WAIT, "the streams to close", || {
        server.handle.stats().open_streams == 0
    });
    if let Some(rss) = rss_kib() {
        assert!(rss < 200 * 1024, "RSS {rss} KiB after the flood");
    }
}

#[test]
fn drop_oldest_counts_drops_and_signals_the_gap() {
    let hub = build(
        Hub::builder()
            .backlog(64, 256 << 10)
            .slow_client(SlowClient::DropOldest)
            .close_timeout(LONG_WAIT),
    );
    let server = serve(&hub);
    let mut slow = server.sse("/events", &[]);
    let normal = server.sse("/events", &[]);
    wait_subscribers(&hub, 2);
    let (received, reader) = counting_reader(normal);
    publish_flood(&hub, &received);
    wait_until_within(LONG_WAIT, "drops", || hub.stats().dropped >= 1);
    publish(&hub, "end");
    // Now the slow client reads: what its socket held, then the gap signal
    // where events were dropped, then the newest ones.
    let received = events_until(&mut slow, "end");
    hub.close().expect("close");
    let all = reader.join().expect("reader thread");
    assert_eq!(all.len(), FLOOD + 1, "the normal subscriber missed events");
    for (k, event) in all[..FLOOD].iter().enumerate() {
        assert_eq!(index_of(event), k);
    }

    let stats = hub.stats();
    assert_eq!(stats.evicted, 0, "{stats:?}");
    let (gaps, events): (Vec<_>, Vec<_>) = received.iter().partition(|e| e.event_type == GAP_EVENT);
    assert!(!gaps.is_empty(), "no gap signal");
    assert!(gaps.iter().all(|g| g.data == "lagged"), "{gaps:?}");
    // Everything the normal subscriber got, the slow one got or had dropped.
    assert_eq!(events.len() as u64 + stats.dropped, FLOOD as u64 + 1, "{stats:?}");
    // Each hole in the sequence has a gap signal right before it.
    let mut previous: Option<usize> = None;
    let mut after_gap = false;
    for event in &received {
        if event.event_type == GAP_EVENT {
            after_gap = true;
            continue;
        }
        let index = if event.data == "end" { FLOOD } else { index_of(event) };
        let expected = previous.map_or(0, |p| p + 1);
        assert!(index >= expected, "out of order: {index} after {previous:?}");
        assert!(index == expected || after_gap, "a hole before {index} without a gap signal");
        previous = Some(index);
        after_gap = false;
    }
    assert!(stats.history_bytes <= 2 << 20, "{stats:?}");
}

#[test]
fn a_burst_longer_than_the_backlog_bound_reaches_reading_clients() {
    // The fan-out queues a whole batch before writing: clients that read
    // must not count as slow because a burst outgrew their backlog bound.
    // 1000 events of about 30 bytes: far less than their socket buffers.
    const BURST: u64 = 1000;
    let hub = build(Hub::builder().backlog(64, 64 << 10));
    let server = serve(&hub);
    let clients: Vec<Sse> = (0..3).map(|_| server.sse("/events", &[])).collect();
    wait_subscribers(&hub, 3);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut sse| thread::spawn(move || sse.events(BURST as usize)))
        .collect();
    for n in 1..=BURST {
        publish(&hub, &n.to_string());
    }
    for reader in readers {
        let events = reader.join().expect("reader thread");
        let ids: Vec<u64> = events.iter().map(|e| seq(&hub, &e.id)).collect();
        assert_eq!(ids, (1..=BURST).collect::<Vec<_>>());
    }
    let stats = hub.stats();
    assert_eq!((stats.evicted, stats.dropped), (0, 0));
}

#[test]
fn keep_alives_on_idle_subscribers_and_prompt_removal() {
    for keep_alive in [Some(Duration::from_millis(100)), None] {
        let hub = build(Hub::builder().keep_alive(keep_alive));
        let server = serve(&hub);
        let mut sse = server.sse("/events", &[]);
        wait_subscribers(&hub, 1);
        assert_eq!(server.handle.stats().open_streams, 1);
        if keep_alive.is_some() {
            for _ in 0..2 {
                assert_eq!(sse.next_item(LONG_WAIT), Ok(Item::Comment(String::new())));
            }
        }
        drop(sse);
        wait_until_within(LONG_WAIT, "the subscriber's removal", || {
            hub.stats().subscribers == 0 && server.handle.stats().open_streams == 0
        });
    }
}

#[test]
fn close_ends_every_stream_and_refuses_later_calls() {
    let (base, jitter) = (Duration::from_millis(1000), Duration::from_millis(500));
    let hub = build(
        Hub::builder()
            .close_event(Some(Event::new().event("bye").unwrap().data("closing")))
            .close_retry(base, jitter),
    );
    // `/events` subscribes; `/probe` also records what `subscribe` returned.
    let results = Arc::new(Mutex::new(Vec::new()));
    let (probe_hub, probe_results) = (hub.clone(), results.clone());
    let server = TestServer::start(|server| {
        server.keep_alive(None).sse("/events", hub.public_handler("topic"));
        server.sse("/probe", move |_req| {
            let (probe_hub, probe_results) = (probe_hub.clone(), probe_results.clone());
            Ok(Accept::new(move |stream| {
                let result = probe_hub.subscribe(stream, Subscription::new());
                probe_results.lock().unwrap().push(result);
                Ok(result?)
            }))
        });
    });
    let mut clients: Vec<Sse> = (0..3).map(|_| server.sse("/events", &[])).collect();
    wait_subscribers(&hub, 3);
    publish(&hub, "before");
    for sse in &mut clients {
        assert_eq!(sse.next_event().data, "before");
    }
    hub.close().expect("close");
    assert!(hub.is_closed());
    for sse in &mut clients {
        let events: Vec<_> = sse
            .until_eof()
            .into_iter()
            .filter_map(|item| match item {
                Item::Event(event) => Some(event),
                Item::Comment(_) => None,
            })
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].event_type.as_str(), events[0].data.as_str()), ("bye", "closing"));
        let retry = sse.retry().expect("a retry: hint");
        assert!(retry >= base && retry <= base + jitter, "retry {retry:?}");
        assert!(sse.last_chunk_seen(), "the body ended without the last chunk");
    }

    let event = Event::new().id("kept").unwrap().data("too late");
    assert_eq!(
        hub.publish(event.clone()),
        Err(PublishError(event.clone(), PublishErrorKind::Closed))
    );
    assert_eq!(
        hub.publish_to(&["a"], event.clone()),
        Err(PublishError(event, PublishErrorKind::Closed))
    );
    // A new stream cannot subscribe: it ends at once, without events.
    let mut late = server.sse("/probe", &[]);
    let items = late.until_eof();
    assert!(items.iter().all(|i| matches!(i, Item::Comment(_))), "{items:?}");
    assert!(late.last_chunk_seen(), "the body ended without the last chunk");
    assert_eq!(*results.lock().unwrap(), [Err(SubscribeError)]);
    assert_eq!(hub.close(), Ok(()), "closing twice");
    assert_eq!(hub.stats().subscribers, 0);
    wait_until_within(LONG_WAIT, "the streams to close", || {
        server.handle.stats().open_streams == 0
    });
}

#[test]
fn stats_count_publishes_deliveries_and_replays() {
    let hub = build(Hub::builder());
    let server = serve(&hub);
    let mut clients: Vec<Sse> = (0..2).map(|_| server.sse("/events", &[])).collect();
    wait_subscribers(&hub, 2);
    for n in 1..=10 {
        publish(&hub, &format!("e{n}"));
    }
    for sse in &mut clients {
        assert_eq!(sse.events(10).len(), 10);
    }
    let wait_counts = |published, delivered, hits, misses| {
        wait_until_within(
            LONG_WAIT,
            &format!("published {published}, delivered {delivered}"),
            || {
                let s = hub.stats();
                (s.published, s.delivered, s.replay_hits, s.replay_misses)
                    == (published, delivered, hits, misses)
            },
        );
    };
    wait_counts(10, 20, 0, 0);

    // A known id: a hit, and 5 replayed events delivered.
    let mut hit = server.sse("/events", &[("Last-Event-ID", &id(&hub, 5))]);
    assert_eq!(hit.events(5).len(), 5);
    wait_counts(10, 25, 1, 0);
    // An unknown one: a miss; the gap signal is not counted as delivered.
    let mut miss = server.sse("/events", &[("Last-Event-ID", "nope")]);
    assert_eq!(miss.events(11).len(), 11);
    wait_counts(10, 35, 1, 1);

    publish(&hub, "e11");
    for sse in clients.iter_mut().chain([&mut hit, &mut miss]) {
        assert_eq!(sse.next_event().data, "e11");
    }
    wait_counts(11, 39, 1, 1);
    let stats = hub.stats();
    assert_eq!((stats.subscribers, stats.history_len, stats.evicted, stats.dropped), (4, 11, 0, 0));
    assert!(stats.history_bytes > 0);
    let json = stats.to_json();
    for (key, value) in
        [("published", 11), ("delivered", 39), ("replay_hits", 1), ("replay_misses", 1)]
    {
        assert!(json.contains(&format!("\"{key}\":{value}")), "{json}");
    }
}

// ---------------------------------------------------------------------------
// Body framing, and the first events of a new subscriber
// ---------------------------------------------------------------------------

/// Over HTTP/1.1 the hub writes every frame as one chunk of a chunked body
/// and ends the body with the last chunk when it closes the stream; over
/// HTTP/1.0 the same frames go out raw and the body ends with the
/// connection.
#[test]
fn hub_streams_are_chunked_over_http11_and_raw_over_http10() {
    let hub = build(
        Hub::builder()
            .close_event(Some(Event::new().event("bye").unwrap().data("closing")))
            .close_retry(Duration::from_millis(1000), Duration::ZERO),
    );
    let server = serve(&hub);
    let mut raw11 = server.client();
    raw11.send(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = raw11.head();
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"), "{head:?}");
    let mut raw10 = server.client();
    raw10.send(b"GET /events HTTP/1.0\r\n\r\n");
    let head = raw10.head();
    assert_eq!(head.header("Transfer-Encoding"), None, "{head:?}");
    let mut sse = server.sse("/events", &[]);
    assert!(sse.is_chunked(), "{:?}", sse.head);
    wait_subscribers(&hub, 3);

    publish(&hub, "one");
    let frame = format!("id: {}\ndata: one\n\n", id(&hub, 1));
    let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
    assert_eq!(String::from_utf8_lossy(&raw11.read_exact(chunk.len())), chunk);
    assert_eq!(String::from_utf8_lossy(&raw10.read_exact(frame.len())), frame);
    assert_eq!(sse.next_event().data, "one");

    hub.close().expect("close");
    // The goodbye, one chunk per frame, then the last chunk and the close.
    let goodbye = ["event: bye\ndata: closing\n\n", "retry: 1000\n"];
    let chunked: String = goodbye.iter().map(|f| format!("{:x}\r\n{f}\r\n", f.len())).collect();
    assert_eq!(String::from_utf8_lossy(&raw11.read_to_end()), chunked + "0\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&raw10.read_to_end()), goodbye.concat());
    let items = sse.until_eof();
    assert!(matches!(&items[..], [Item::Event(e)] if e.event_type == "bye"), "{items:?}");
    assert!(sse.last_chunk_seen(), "no last chunk after hub.close()");
}

/// A subscription without a last event id gets the events published after
/// its response head went out, even those the hub saw before the
/// subscription itself: a client may publish (post a message) the moment
/// its stream opens, and must see its own event.
///
/// Deterministic: each event is published, and taken into the hub's
/// history, after the head was written and before the stream subscribes,
/// once from the access-log hook (which runs right after the head is
/// written) and once from a handler that publishes before it subscribes.
/// Events published before a client's request are not replayed to it.
#[test]
fn a_new_subscriber_gets_events_published_after_its_head() {
    use stdsse::server::LogKind;

    let hub = build(Hub::builder());
    /// Publishes `data` and waits until the hub has taken it.
    fn publish_now(hub: &Hub, data: &str) {
        let before = hub.stats().published;
        publish(hub, data);
        wait_until_within(LONG_WAIT, "the hub to take the event", || {
            hub.stats().published > before
        });
    }
    let server = TestServer::start(|server| {
        let log_hub = hub.clone();
        let wrapped_hub = hub.clone();
        let handler = hub.public_handler("topic");
        server
            .keep_alive(None)
            .log(move |entry| {
                if entry.path == "/logged" && entry.kind == LogKind::Request {
                    publish_now(&log_hub, "from the access log");
                }
            })
            .sse("/events", hub.public_handler("topic"))
            .sse("/logged", handler)
            .sse("/wrapped", move |_req| {
                let hub = wrapped_hub.clone();
                Ok(Accept::new(move |stream| {
                    publish_now(&hub, "from the handler");
                    Ok(hub.subscribe(stream, Subscription::new())?)
                }))
            });
    })
    .before_stop(closer(&hub));

    publish_now(&hub, "before anyone");
    let mut logged = server.sse("/logged", &[]);
    assert_eq!(logged.next_event().data, "from the access log");
    wait_subscribers(&hub, 1);
    let mut wrapped = server.sse("/wrapped", &[]);
    // Published after `logged`'s head as well: both get it.
    assert_eq!(wrapped.next_event().data, "from the handler");
    assert_eq!(logged.next_event().data, "from the handler");
    wait_subscribers(&hub, 2);
    // A later subscriber gets none of the earlier events.
    let mut later = server.sse("/events", &[]);
    wait_subscribers(&hub, 3);
    publish(&hub, "live");
    for sse in [&mut logged, &mut wrapped, &mut later] {
        expect_next(sse, &hub, "live", 4, "logged, wrapped or later");
    }
    let stats = hub.stats();
    assert_eq!((stats.replay_hits, stats.replay_misses), (0, 0));
}

// ---------------------------------------------------------------------------
// Receivers: subscribers in this process
// ---------------------------------------------------------------------------

/// Parses the frames a receiver holds until it ends or `timeout` passes
/// without one; returns the events (comments and retry hints skipped) and
/// whether the subscription ended.
fn receive(receiver: &Receiver, timeout: Duration) -> (Vec<MessageEvent>, bool) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let ended = loop {
        match receiver.recv_timeout(timeout) {
            Ok(frame) => parser.feed(frame.as_bytes()),
            Err(RecvTimeoutError::Timeout) => break false,
            Err(RecvTimeoutError::Disconnected) => break true,
        }
        while let Some(item) = parser.next_item() {
            if let Ok(Item::Event(event)) = item {
                events.push(event);
            }
        }
    };
    (events, ended)
}

/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(100);

#[test]
fn receivers_get_live_events_replays_topics_and_the_close_event() {
    let hub = build(Hub::builder().close_event(Some(Event::new().data("bye"))));
    publish(&hub, "first");
    publish(&hub, "second");
    wait_history(&hub, 2);
    let live = hub.receiver(Subscription::new()).expect("subscribe");
    let resumed =
        hub.receiver(Subscription::new().last_event_id(Some(&id(&hub, 1)))).expect("subscribe");
    let everything =
        hub.receiver(Subscription::new().last_event_id(Some("unknown"))).expect("subscribe");
    let topical = hub.receiver(Subscription::new().topic("a")).expect("subscribe");
    wait_subscribers(&hub, 4);
    publish(&hub, "one");
    hub.publish_to(&["a"], Event::new().data("for a")).expect("publish");
    hub.publish_to(&["b"], Event::new().data("for b")).expect("publish");
    hub.close().expect("close");
    // Queued is not delivered: an event counts when a receiver takes it.
    assert_eq!(hub.stats().delivered, 0);

    let cases: [(&Receiver, &[&str]); 4] = [
        (&live, &["one", "bye"]),
        (&resumed, &["second", "one", "bye"]),
        (&everything, &["unknown-id", "first", "second", "one", "bye"]),
        (&topical, &["one", "for a", "bye"]),
    ];
    for (receiver, expected) in cases {
        let (events, ended) = receive(receiver, LONG_WAIT);
        assert_eq!(data(&events), expected);
        assert!(ended, "the subscription did not end with the hub");
    }
    let stats = hub.stats();
    assert_eq!((stats.replay_hits, stats.replay_misses), (1, 1), "{stats:?}");
    // Events taken by receivers count as delivered (1 + 2 + 3 + 2); the
    // gap signal and the close event are not events.
    assert_eq!(stats.delivered, 8, "{stats:?}");
    assert!(hub.receiver(Subscription::new()).is_err());
}

#[test]
fn closing_delivers_everything_a_receiver_has_not_taken() {
    // One thread publishes, closes, then reads: nothing waits for it.
    const SENT: usize = 500;
    let hub = build(Hub::builder().close_event(Some(Event::new().data("bye"))));
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    wait_subscribers(&hub, 1);
    for n in 0..SENT {
        publish(&hub, &n.to_string());
    }
    hub.close().expect("close");
    let (events, ended) = receive(&receiver, LONG_WAIT);
    let mut expected: Vec<String> = (0..SENT).map(|n| n.to_string()).collect();
    expected.push("bye".into());
    assert_eq!(data(&events), expected);
    assert!(ended);
}

/// The data of the next `n` events a receiver takes (gap signals
/// included), each within [`LONG_WAIT`].
fn take_data(receiver: &Receiver, n: usize) -> Vec<String> {
    let mut parser = Parser::new();
    let mut got = Vec::new();
    while got.len() < n {
        let frame = receiver.recv_timeout(LONG_WAIT).expect("a frame");
        parser.feed(frame.as_bytes());
        while let Some(Ok(Item::Event(event))) = parser.next_item() {
            got.push(event.data);
        }
    }
    got
}

/// Publishes `n` events for everyone, then one to the topic `marker` and
/// waits until `marker` (on the same fan-out thread, taking only that
/// topic) has it: by then the fan-out thread has handled the `n` events
/// for every subscriber.
fn publish_and_settle(hub: &Hub, marker: &Receiver, n: usize) {
    for k in 0..n {
        publish(hub, &k.to_string());
    }
    hub.publish_to(&["marker"], Event::new().data("marker")).expect("publish");
    assert_eq!(take_data(marker, 1), ["marker"]);
}

/// A filter that holds the thread running it, the first time it runs,
/// until the gate is released (or [`LONG_WAIT`] passes). Filters run on
/// the coordinator while a replay is queued, and on a fan-out thread for
/// each published event: this stalls either one.
struct Gate {
    entered: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl Gate {
    fn new() -> (Gate, impl Fn(&Published<'_>) -> bool + Send + Sync + 'static) {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(Some((entered_tx, release_rx)));
        let filter = move |_: &Published<'_>| {
            let first = held.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((entered, release)) = first {
                let _ = entered.send(());
                let _ = release.recv_timeout(LONG_WAIT);
            }
            true
        };
        (Gate { entered, release }, filter)
    }

    /// Waits until a thread is held.
    fn wait_entered(&self, which: &str) {
        self.entered
            .recv_timeout(LONG_WAIT)
            .unwrap_or_else(|_| panic!("{which} never ran the filter"));
    }

    fn open(&self) {
        self.release.send(()).expect("release the held thread");
    }
}

/// Runs `call(k)` for k in 0..n on a thread; the counter says how many
/// calls have returned.
fn counting_thread(
    n: usize,
    call: impl Fn(usize) + Send + 'static,
) -> (Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let done = Arc::new(AtomicUsize::new(0));
    let count = done.clone();
    let thread = thread::spawn(move || {
        for k in 0..n {
            call(k);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (done, thread)
}

/// Publishes "0", "1", ... "`n - 1`" from a thread; the counter says how
/// many `publish` calls have returned.
fn counting_publisher(hub: &Hub, n: usize) -> (Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let hub = hub.clone();
    counting_thread(n, move |k| publish(&hub, &k.to_string()))
}

/// Waits until the counter stops moving, and returns it.
fn settled(count: &AtomicUsize) -> usize {
    let mut last = usize::MAX;
    wait_until_within(LONG_WAIT, "the calls to block", || {
        let now = count.load(Ordering::SeqCst);
        let still = now == last;
        last = now;
        thread::sleep(QUIET);
        still
    });
    count.load(Ordering::SeqCst)
}

/// Joins a counting thread once all `n` calls returned, failing (instead
/// of hanging) if they do not within [`LONG_WAIT`].
fn finish(count: &AtomicUsize, thread: thread::JoinHandle<()>, n: usize) {
    wait_until_within(LONG_WAIT, "every call to return", || count.load(Ordering::SeqCst) == n);
    thread.join().expect("counting thread");
}

#[test]
fn the_backlog_bound_counts_what_a_receiver_has_not_taken() {
    const BACKLOG: usize = 8;
    for policy in [SlowClient::Disconnect, SlowClient::DropOldest] {
        let hub =
            build(Hub::builder().backlog(BACKLOG, 1 << 20).slow_client(policy).fanout_threads(1));
        let slow = hub.receiver(Subscription::new()).expect("subscribe");
        // It takes everything at once; only events for everyone reach it.
        let marker = hub
            .receiver(Subscription::new().filter(|p| !p.topics.is_empty()).topic("marker"))
            .expect("subscribe");
        wait_subscribers(&hub, 2);

        // Exactly the bound waits: nothing happens. (With Disconnect the
        // bound counts every event published since the first one not
        // taken, the marker's too; with DropOldest, the receiver's own.)
        let first = match policy {
            SlowClient::Disconnect => BACKLOG - 1,
            SlowClient::DropOldest => BACKLOG,
        };
        publish_and_settle(&hub, &marker, first);
        let stats = hub.stats();
        assert_eq!((stats.evicted, stats.dropped), (0, 0), "{policy:?}: {stats:?}");

        // One more than the bound: the policy acts.
        publish_and_settle(&hub, &marker, 1);
        // Every frame is queued by now; an evicted receiver's queue ends
        // right after the fan-out thread's round.
        let wait = match policy {
            SlowClient::Disconnect => LONG_WAIT,
            SlowClient::DropOldest => QUIET,
        };
        let (events, ended) = receive(&slow, wait);
        let stats = hub.stats();
        let sent: Vec<String> = (0..first).chain([0]).map(|n| n.to_string()).collect();
        match policy {
            SlowClient::Disconnect => {
                assert_eq!(stats.evicted, 1, "{stats:?}");
                assert!(ended, "an evicted receiver's subscription goes on");
                // What was queued before the eviction, in order.
                assert_eq!(data(&events), sent);
            }
            SlowClient::DropOldest => {
                assert_eq!((stats.evicted, stats.dropped), (0, 1), "{stats:?}");
                assert!(!ended, "a lagging receiver stays subscribed");
                // The gap signal where the oldest was, then the rest.
                let mut expected = vec!["lagged".to_string()];
                expected.extend(sent[1..].iter().cloned());
                assert_eq!(data(&events), expected);
                assert_eq!(events[0].event_type, GAP_EVENT);
            }
        }
        hub.close().expect("close");
    }
}

#[test]
fn dropping_a_receiver_unsubscribes_without_any_event() {
    let hub = Hub::new().expect("hub");
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    wait_subscribers(&hub, 1);
    drop(receiver);
    // Noticed at the fan-out thread's next check, at most a second later.
    wait_subscribers(&hub, 0);
    assert_eq!(hub.stats().published, 0);
}

#[test]
fn publish_blocks_while_the_inbox_is_full() {
    const INBOX: usize = 4;
    let hub = build(Hub::builder().inbox(INBOX));
    publish(&hub, "history");
    wait_history(&hub, 1);
    // Hold the coordinator in a replay (an unknown id replays everything).
    let (gate, filter) = Gate::new();
    let subscription = Subscription::new().last_event_id(Some("unknown")).filter(filter);
    let receiver = hub.receiver(subscription).expect("subscribe");
    gate.wait_entered("the coordinator");

    let (published, publisher) = counting_publisher(&hub, INBOX + 1);
    wait_until_within(LONG_WAIT, "the inbox to fill", || published.load(Ordering::SeqCst) == INBOX);
    thread::sleep(QUIET);
    assert_eq!(published.load(Ordering::SeqCst), INBOX, "publish did not block");

    gate.open();
    finish(&published, publisher, INBOX + 1);
    let mut expected = vec!["unknown-id".to_string(), "history".to_string()];
    expected.extend((0..=INBOX).map(|n| n.to_string()));
    let got = take_data(&receiver, expected.len());
    assert_eq!(got, expected, "nothing lost while publishers waited");
}

#[test]
fn an_evicted_receiver_gets_no_close_event() {
    // Eviction and close usually land in the same fan-out round here.
    let hub = build(Hub::builder().backlog(1, 1 << 20).close_event(Some(Event::new().data("bye"))));
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    wait_subscribers(&hub, 1);
    for n in 0..3 {
        publish(&hub, &n.to_string());
    }
    hub.close().expect("close");
    let (events, ended) = receive(&receiver, LONG_WAIT);
    assert!(ended);
    assert_eq!(hub.stats().evicted, 1);
    assert_eq!(data(&events), ["0", "1"], "what was queued, and no goodbye");
}

#[test]
fn a_publish_wakes_every_thread_blocked_on_a_receiver() {
    let hub = Hub::new().expect("hub");
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    wait_subscribers(&hub, 1);
    thread::scope(|scope| {
        // Two threads wait; one gives up first. The other must still be
        // woken by the next event.
        let patient = scope.spawn(|| receiver.recv_timeout(LONG_WAIT));
        let hasty = scope.spawn(|| receiver.recv_timeout(Duration::from_millis(20)));
        assert_eq!(hasty.join().expect("thread").map(|_| ()), Err(RecvTimeoutError::Timeout));
        let started = std::time::Instant::now();
        publish(&hub, "wake up");
        let frame = patient.join().expect("thread").expect("a frame");
        assert!(frame.as_bytes().ends_with(b"data: wake up\n\n"));
        assert!(started.elapsed() < LONG_WAIT / 2, "woken by its timeout, not by the event");
    });
}

#[test]
fn a_stalled_fan_out_thread_makes_publish_wait_with_bounded_queues() {
    const INBOX: usize = 8;
    const SENT: usize = 1000;
    let hub = build(Hub::builder().inbox(INBOX).fanout_threads(1));
    // Hold the fan-out thread in the filter of the first event.
    let (gate, filter) = Gate::new();
    let stalled = hub.receiver(Subscription::new().filter(filter)).expect("subscribe");
    wait_subscribers(&hub, 1);

    let (published, publisher) = counting_publisher(&hub, SENT);
    gate.wait_entered("the fan-out thread");
    let accepted = settled(&published);
    assert!(
        accepted <= 5 * INBOX,
        "{accepted} events accepted while the fan-out thread was stalled"
    );

    gate.open();
    finish(&published, publisher, SENT);
    let expected: Vec<String> = (0..SENT).map(|n| n.to_string()).collect();
    let got = take_data(&stalled, SENT);
    assert_eq!(got, expected, "nothing lost while publishers waited");
}

#[test]
fn a_panicking_filter_ends_only_its_own_subscription() {
    // One fan-out thread: a panic that escaped would take both down.
    let hub = build(Hub::builder().fanout_threads(1));
    let fragile = hub
        .receiver(Subscription::new().filter(|p| {
            assert!(!p.frame.as_bytes().ends_with(b"boom\n\n"), "filter fails");
            true
        }))
        .expect("subscribe");
    let sturdy = hub.receiver(Subscription::new()).expect("subscribe");
    wait_subscribers(&hub, 2);
    for data in ["a", "boom", "b"] {
        publish(&hub, data);
    }
    assert_eq!(take_data(&sturdy, 3), ["a", "boom", "b"]);
    let (events, ended) = receive(&fragile, LONG_WAIT);
    assert_eq!(data(&events), ["a"]);
    assert!(ended, "the subscription whose filter panicked goes on");
    wait_subscribers(&hub, 1);
    publish(&hub, "after");
    assert_eq!(take_data(&sturdy, 1), ["after"]);

    // The same filter during a replay, which runs on the coordinator.
    let replayed = hub
        .receiver(Subscription::new().last_event_id(Some("unknown")).filter(|p| {
            assert!(!p.frame.as_bytes().ends_with(b"boom\n\n"), "filter fails");
            true
        }))
        .expect("subscribe");
    let (events, ended) = receive(&replayed, LONG_WAIT);
    assert_eq!(data(&events), ["unknown-id", "a"]);
    assert!(ended);
    wait_subscribers(&hub, 1);
    publish(&hub, "still here");
    assert_eq!(take_data(&sturdy, 1), ["still here"]);
}

#[test]
fn a_stalled_fan_out_thread_makes_subscribing_wait_with_bounded_queues() {
    const INBOX: usize = 8;
    const HISTORY: usize = 10;
    const TRIES: usize = 1000;
    let hub = build(Hub::builder().inbox(INBOX).fanout_threads(1));
    for n in 0..HISTORY {
        publish(&hub, &n.to_string());
    }
    wait_history(&hub, HISTORY as u64);
    let (gate, filter) = Gate::new();
    let stalled = hub.receiver(Subscription::new().filter(filter)).expect("subscribe");
    wait_subscribers(&hub, 1);
    publish(&hub, "stall");
    gate.wait_entered("the fan-out thread");

    // Each reconnect replays the whole history.
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (subscribed, subscriber) = {
        let (hub, kept) = (hub.clone(), kept.clone());
        counting_thread(TRIES, move |_| {
            let resumed = Subscription::new().last_event_id(Some("unknown"));
            let receiver = hub.receiver(resumed).expect("subscribe");
            kept.lock().unwrap_or_else(|e| e.into_inner()).push(receiver);
        })
    };
    let accepted = settled(&subscribed);
    // A receiver's replay waits in its own queue, so each subscription
    // counts once: at most an inbox's worth admitted (plus the one that
    // crossed the limit), one held by the coordinator, the inbox full. (A
    // stream's replay travels with it and counts frame by frame.)
    assert!(
        accepted <= 2 * INBOX + 2,
        "{accepted} replays accepted while the fan-out thread was stalled"
    );

    gate.open();
    finish(&subscribed, subscriber, TRIES);
    assert_eq!(take_data(&stalled, 1), ["stall"]);
    kept.lock().unwrap_or_else(|e| e.into_inner()).clear();
    wait_subscribers(&hub, 1);
}

/// The events among `items`, comments left out.
fn only_events(items: Vec<Item>) -> Vec<MessageEvent> {
    items
        .into_iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event),
            Item::Comment(_) => None,
        })
        .collect()
}

#[test]
fn an_evicted_client_resumes_every_missed_event_once() {
    // The slow client's events are 16 KiB, to fill its socket buffers; in
    // the filtered case, nine in ten events are small ones for others.
    struct Case {
        name: &'static str,
        backlog: Option<usize>,
        slow: &'static str,
        every: u64,
    }
    #[rustfmt::skip]
    let cases = [
        Case { name: "the default backlog", backlog: None, slow: "/events?topic=rare&topic=other", every: 1 },
        Case { name: "one event in ten", backlog: Some(20), slow: "/events?topic=rare", every: 10 },
    ];
    const HISTORY: usize = 200;
    const MOST: u64 = 50_000;
    let big = "x".repeat(16 << 10);
    for case in cases {
        let mut builder = Hub::builder().history(HISTORY, 256 << 20);
        if let Some(events) = case.backlog {
            builder = builder.backlog(events, 1 << 20);
        }
        let hub = build(builder);
        let server = serve(&hub);
        let mut slow = server.sse(case.slow, &[]);
        let mut all = server.sse("/events?topic=rare&topic=other", &[]);
        wait_subscribers(&hub, 2);
        let is_rare = |n: u64| n.is_multiple_of(case.every);
        // Publish in step with the client that reads, until the slow one
        // is evicted: nothing is on its way when that happens.
        let mut published = 0;
        while hub.stats().evicted == 0 {
            published += 1;
            assert!(published <= MOST, "{}: never evicted", case.name);
            let topic = if is_rare(published) { "rare" } else { "other" };
            let data = if is_rare(published) { &big } else { "small" };
            hub.publish_to(&[topic], Event::new().data(format!("{published}:{data}")))
                .expect("publish");
            let expected = format!("{published}:{data}");
            expect_next(&mut all, &hub, &expected, published, case.name);
        }
        let wanted: Vec<u64> = (1..=published).filter(|&n| is_rare(n)).collect();
        // What reached its socket, then EOF; then it reconnects at once.
        let before = only_events(slow.until_eof());
        let ids: Vec<u64> = before.iter().map(|e| seq(&hub, &e.id)).collect();
        assert_eq!(ids, wanted[..ids.len()], "{}", case.name);
        let last = &before.last().expect("some events reached the socket").id;
        let mut resumed = server.sse(case.slow, &[("Last-Event-ID", last)]);
        let rest = resumed.events(wanted.len() - ids.len());
        let rest_ids: Vec<u64> = rest.iter().map(|e| seq(&hub, &e.id)).collect();
        assert_eq!(rest_ids, wanted[ids.len()..], "{}: gap or duplicate", case.name);
        wait_subscribers(&hub, 2);
        publish(&hub, "live");
        expect_next(&mut resumed, &hub, "live", published + 1, case.name);
        let stats = hub.stats();
        assert_eq!((stats.replay_hits, stats.replay_misses), (1, 0), "{}", case.name);
    }
}

#[test]
fn ids_of_the_hubs_form_are_the_hubs_to_give() {
    let hub = build(Hub::builder());
    let server = serve(&hub);
    let mut live = server.sse("/events", &[]);
    wait_subscribers(&hub, 1);
    for data in ["a", "b", "c"] {
        publish(&hub, data);
    }
    // A publisher forges the id of the first event, and one just like it.
    for forged in [id(&hub, 1), format!("{}-+2", hub.epoch())] {
        hub.publish(Event::new().id(forged).unwrap().data("forged")).expect("publish");
    }
    publish(&hub, "e");
    let received = live.events(6);
    let ids: Vec<u64> = received.iter().map(|e| seq(&hub, &e.id)).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "the hub's ids are unique");
    // Resuming from any of them replays exactly what came after it.
    let mut resumed = Vec::new();
    for (k, event) in received.iter().enumerate() {
        let mut sse = server.sse("/events", &[("Last-Event-ID", &event.id)]);
        let replayed = sse.events(received.len() - 1 - k);
        assert_eq!(data(&replayed), data(&received[k + 1..]), "after {}", event.id);
        resumed.push(sse);
    }
    wait_subscribers(&hub, 7);
    publish(&hub, "live");
    for sse in &mut resumed {
        expect_next(sse, &hub, "live", 7, "no duplicate before the live event");
    }
    assert_eq!(hub.stats().replay_misses, 0);
}

#[test]
fn huge_or_malformed_hub_ids_are_unknown() {
    let hub = build(Hub::builder());
    let server = serve(&hub);
    for n in 1..=3 {
        publish(&hub, &format!("e{n}"));
    }
    wait_history(&hub, 3);
    let epoch = hub.epoch();
    let cases = [
        format!("{epoch}-{}", u64::MAX),
        format!("{epoch}-{}0", u64::MAX),
        format!("{epoch}-99999999999999999999999999999999"),
        format!("{epoch}-"),
        format!("{epoch}--1"),
        format!("{epoch}-+1"),
        format!("{epoch}-01"),
    ];
    for last_id in &cases {
        let mut sse = server.sse("/events", &[("Last-Event-ID", last_id)]);
        let gap = sse.next_event();
        assert_eq!(
            (gap.event_type.as_str(), gap.data.as_str()),
            (GAP_EVENT, "unknown-id"),
            "{last_id}"
        );
        assert_eq!(data(&sse.events(3)), ["e1", "e2", "e3"], "{last_id}");
    }
    assert_eq!(hub.stats().replay_misses, cases.len() as u64);
}

/// Publishes `n` events of 16 KiB in step with `reader`, far more than the
/// socket buffers of a client that does not read hold.
fn fill_sockets(hub: &Hub, reader: &mut Sse, n: u64) {
    let big = "x".repeat(16 << 10);
    for k in 1..=n {
        publish(hub, &big);
        assert_eq!(seq(hub, &reader.next_event().id), k);
    }
}

/// A hub whose bounds never evict: only the stall timeout can.
fn stall_hub(stall: Duration) -> Hub {
    build(Hub::builder().history(100_000, 1 << 30).backlog(100_000, 1 << 30).stall_timeout(stall))
}

#[test]
fn a_stalled_subscriber_is_evicted_after_the_stall_timeout() {
    let hub = stall_hub(Duration::from_millis(300));
    let server = serve(&hub);
    let mut stalled = server.sse("/events", &[]);
    let mut reader = server.sse("/events", &[]);
    wait_subscribers(&hub, 2);
    // (Whether it was evicted while the others were still being filled
    // depends on the machine's speed; the slow reader below pins that a
    // socket making progress is not evicted.)
    fill_sockets(&hub, &mut reader, 1000);
    wait_until_within(LONG_WAIT, "the stalled subscriber's eviction", || hub.stats().evicted == 1);
    wait_subscribers(&hub, 1);
    let got = only_events(stalled.until_eof());
    assert!(got.len() < 1000, "it got everything");
    publish(&hub, "still here");
    assert_eq!(reader.next_event().data, "still here");
}

#[test]
fn a_subscriber_that_reads_slowly_is_not_stalled() {
    // It takes 64 KiB (a loopback segment's worth) every 100 ms from a full
    // socket: its backlog drains slower than the stall timeout, but each
    // write takes some of it, after the back-off has grown in between. The
    // timeout is 20 reads long, so a loaded machine's pauses do not count.
    let hub = stall_hub(Duration::from_secs(2));
    let server = serve(&hub);
    let mut slow = server.sse("/events", &[]);
    let mut reader = server.sse("/events", &[]);
    wait_subscribers(&hub, 2);
    const SENT: u64 = 1000;
    fill_sockets(&hub, &mut reader, SENT);
    let mut taken = 0;
    for _ in 0..25 {
        thread::sleep(Duration::from_millis(100));
        for _ in 0..4 {
            assert_eq!(seq(&hub, &slow.next_event().id), taken + 1);
            taken += 1;
        }
    }
    assert_eq!(hub.stats().evicted, 0, "a slow reader was taken for stalled");
    // Then it reads everything: no eviction, nothing lost.
    let rest = slow.events((SENT - taken) as usize);
    assert_eq!(seq(&hub, &rest.last().unwrap().id), SENT);
    assert_eq!(hub.stats().evicted, 0);
}

/// `Hub::handler`: the application maps the request to a subscription (its
/// topics from the user it authenticated) or to a refusal, sent as a plain
/// response; the client's last event id applies unless the map set one.
#[test]
fn handler_maps_requests_to_subscriptions_or_refusals() {
    let hub = build(Hub::builder());
    let server = TestServer::start(|server| {
        let handler = hub.handler(|req| {
            let user = req
                .header("Authorization")
                .ok_or_else(|| stdsse::Response::text(401, "who are you?"))?;
            let subscription = Subscription::new().topic(format!("user/{user}"));
            Ok(match req.query_param("from") {
                Some(id) => subscription.last_event_id(Some(&id)),
                None => subscription,
            })
        });
        server.keep_alive(None).sse("/mine", handler);
    })
    .before_stop(closer(&hub));
    let resp = server.request(b"GET /mine HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((resp.status, resp.body_str()), (401, "who are you?"));

    for (user, data) in [("ann", "a1"), ("bob", "b2"), ("ann", "a3"), ("ann", "a4")] {
        let topic = format!("user/{user}");
        hub.publish_to(&[topic], Event::new().data(data)).unwrap();
    }
    wait_history(&hub, 4);
    let ann = [("Authorization", "ann")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    #[rustfmt::skip]
    let table: &[(&str, String, Headers, &str, u64)] = &[
        ("the header's id", "/mine".into(), &[("Last-Event-ID", &id(&hub, 1))], "a3", 3),
        ("the query's id", format!("/mine?lastEventId={}", id(&hub, 1)), &[], "a3", 3),
        ("the map's id wins", format!("/mine?from={}", id(&hub, 3)), &[("Last-Event-ID", &id(&hub, 1))], "a4", 4),
    ];
    for (name, target, headers, data, n) in table {
        let headers: Vec<_> = ann.iter().chain(headers.iter()).copied().collect();
        let mut sse = server.sse(target, &headers);
        expect_next(&mut sse, &hub, data, *n, name);
    }
}

/// A client that sent a byte after its request, then closed, is noticed as
/// gone (what it sends is read and dropped), also without keep-alives.
#[test]
fn a_client_that_sent_more_then_closed_is_removed_without_keep_alives() {
    let hub = build(Hub::builder().keep_alive(None));
    let server = serve(&hub);
    let mut sse = server.sse("/events", &[]);
    wait_subscribers(&hub, 1);
    sse.stream.write_all(b"X").expect("send a byte");
    drop(sse);
    wait_subscribers(&hub, 0);
}

/// The server's shutdown does not write into a stream a hub owns, which may
/// be inside a frame: it cuts it, and the client drops the partial event
/// (no goodbye or last chunk inside the event's data).
#[test]
fn server_shutdown_cuts_a_hub_stream_inside_a_frame() {
    let hub = build(Hub::builder().backlog(10, 64 << 20));
    let handler = hub.public_handler("topic");
    let server = TestServer::start(move |s| {
        s.keep_alive(None).sse("/events", handler); // the hub stays open
    });
    let mut client = server.client();
    client.send(&common::get("/events"));
    client.read_until(b"\r\n\r\n");
    wait_subscribers(&hub, 1);
    hub.publish(Event::new().id("big").unwrap().data("x".repeat(16 << 20))).expect("publish");
    // Part of it fills the socket buffers; the fan-out's retries back off
    // (to 250 ms), and a read makes room that a goodbye would take.
    thread::sleep(Duration::from_millis(700));
    let mut raw = client.read_exact(256 << 10);
    server.stop();
    raw.extend(client.read_to_close().expect("a close, not a reset"));
    let (mut body, mut parser) = (Vec::new(), Parser::new());
    common::Dechunker::new().feed(&raw, &mut body);
    parser.feed(&body);
    parser.finish();
    let items: Vec<_> = std::iter::from_fn(|| parser.next_item()).collect();
    assert!(items.is_empty(), "{} bytes of {} gave {} items", body.len(), 16 << 20, items.len());
}

/// Every counter in the Prometheus text, each with a value of its own.
/// (Moved from a unit test in src/hub/mod.rs.)
#[test]
fn stats_in_the_prometheus_text_format() {
    let hub = build(Hub::builder().history(3, 1 << 20).backlog(2, 1 << 20));
    // It never reads: evicted once two events are waiting.
    let idle = hub.receiver(Subscription::new()).expect("subscribe");
    for id in ["a", "b", "c", "d", "e"] {
        hub.publish(Event::new().data("x").id(id).unwrap()).expect("publish");
    }
    wait_until_within(LONG_WAIT, "the eviction and the trimmed history", || {
        let stats = hub.stats();
        (stats.evicted, stats.history_len, stats.subscribers) == (1, 3, 0)
    });
    let mut len = 0;
    for (from, frames) in [("d", 1), ("zzz", 4), ("yyy", 4)] {
        let receiver = hub.receiver(Subscription::new().last_event_id(Some(from)));
        let receiver = receiver.expect("subscribe");
        for _ in 0..frames {
            len = receiver.recv_timeout(LONG_WAIT).expect("replayed").len();
        }
        std::mem::forget(receiver); // stays subscribed
    }
    drop(idle);
    wait_subscribers(&hub, 3); // a replay may arrive before its subscriber counts
    let expected = format!(
        "\
# HELP stdsse_hub_subscribers Subscribers now.
# TYPE stdsse_hub_subscribers gauge
stdsse_hub_subscribers 3
# HELP stdsse_hub_published_total Events published.
# TYPE stdsse_hub_published_total counter
stdsse_hub_published_total 5
# HELP stdsse_hub_delivered_total Events delivered to a subscriber.
# TYPE stdsse_hub_delivered_total counter
stdsse_hub_delivered_total 7
# HELP stdsse_hub_evicted_total Subscribers disconnected as slow or stalled.
# TYPE stdsse_hub_evicted_total counter
stdsse_hub_evicted_total 1
# HELP stdsse_hub_dropped_total Events dropped from slow subscribers' backlogs.
# TYPE stdsse_hub_dropped_total counter
stdsse_hub_dropped_total 0
# HELP stdsse_hub_replay_hits_total Resumes without a gap.
# TYPE stdsse_hub_replay_hits_total counter
stdsse_hub_replay_hits_total 1
# HELP stdsse_hub_replay_misses_total Resumes with the gap signal.
# TYPE stdsse_hub_replay_misses_total counter
stdsse_hub_replay_misses_total 2
# HELP stdsse_hub_history_events Events in the history.
# TYPE stdsse_hub_history_events gauge
stdsse_hub_history_events 3
# HELP stdsse_hub_history_bytes Bytes of the history.
# TYPE stdsse_hub_history_bytes gauge
stdsse_hub_history_bytes {}
",
        3 * len
    );
    assert_eq!(hub.stats().to_prometheus(), expected);
}
