//! The hub's history per topic, `topics_only`, `recent` and the log hook,
//! mostly with in-process `Receiver`s (they get the frames a stream would).

mod common;

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_for, wait_until_within, TestServer, LONG_WAIT};
use stdsse::hub::{Hub, HubBuilder, HubLog, Receiver, SlowClient, Subscription};
use stdsse::parser::{Item, MessageEvent, Parser};
use stdsse::Event;

/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(100);

fn build(builder: HubBuilder) -> Hub {
    builder.build().expect("start the hub")
}

fn id(hub: &Hub, n: u64) -> String {
    format!("{}-{n}", hub.epoch())
}

fn publish_to(hub: &Hub, topic: &str, data: &str) {
    let topics: &[&str] = if topic.is_empty() { &[] } else { &[topic] };
    hub.publish_to(topics, Event::new().data(data)).expect("publish");
}

/// Waits until `published` events are published and the history holds
/// `len` of them (it is pruned once the fan-out threads handled them).
fn wait_history(hub: &Hub, published: u64, len: u64) {
    wait_for(
        LONG_WAIT,
        &format!("{len} of {published} events in the history"),
        || hub.stats(),
        |s| (s.published, s.history_len) == (published, len),
    );
}

/// The events a receiver takes until it ends or nothing comes for
/// `quiet`; and whether it ended.
fn receive(receiver: &Receiver, quiet: Duration) -> (Vec<MessageEvent>, bool) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let ended = loop {
        match receiver.recv_timeout(quiet) {
            Ok(frame) => parser.feed(frame.as_bytes()),
            Err(RecvTimeoutError::Timeout) => break false,
            Err(RecvTimeoutError::Disconnected) => break true,
        }
        while let Some(Ok(Item::Event(event))) = parser.next_item() {
            events.push(event);
        }
    };
    (events, ended)
}

/// The data of what a receiver holds (gap signals included), and nothing
/// more arrives.
fn data_of(receiver: &Receiver) -> Vec<String> {
    let (events, _) = receive(receiver, QUIET);
    events.into_iter().map(|e| e.data).collect()
}

/// Subscribes, and publishes `live` to everyone: the receiver's replay
/// and then `live`, nothing else.
fn replay_then_live(hub: &Hub, subscription: Subscription) -> Vec<String> {
    let receiver = hub.receiver(subscription).expect("subscribe");
    publish_to(hub, "", "live");
    let (mut parser, mut got) = (Parser::new(), Vec::new());
    while got.last().map(String::as_str) != Some("live") {
        let frame = receiver.recv_timeout(LONG_WAIT);
        parser.feed(frame.expect("no live event yet").as_bytes());
        while let Some(Ok(Item::Event(event))) = parser.next_item() {
            got.push(event.data);
        }
    }
    assert_eq!(data_of(&receiver), Vec::<String>::new(), "after {got:?}");
    got
}

#[test]
fn a_busy_topic_does_not_push_a_quiet_topics_resume_point_out() {
    // History of 5 (and 5 per topic: the total bites): alice's event (1),
    // then ten for bob (2..=11); the history keeps 7..=11, all bob's.
    struct Case {
        name: &'static str,
        topic: Option<&'static str>,
        after: u64,
        expected: &'static [&'static str],
        gap: bool,
    }
    #[rustfmt::skip]
    let cases = [
        Case { name: "alice saw hers", topic: Some("alice"), after: 1, expected: &["live"], gap: false },
        Case { name: "everyone's only", topic: None, after: 1, expected: &["live"], gap: false },
        Case { name: "bob's first is lost", topic: Some("bob"), after: 2,
               expected: &["unknown-id", "b7", "b8", "b9", "b10", "b11", "live"], gap: true },
        Case { name: "bob right before the oldest", topic: Some("bob"), after: 6,
               expected: &["b7", "b8", "b9", "b10", "b11", "live"], gap: false },
    ];
    for case in cases {
        let hub = build(Hub::builder().history(5, 1 << 20).topic_history(5, 1 << 20));
        publish_to(&hub, "alice", "a1");
        for n in 2..=11 {
            publish_to(&hub, "bob", &format!("b{n}"));
        }
        wait_history(&hub, 11, 5);
        let mut subscription = Subscription::new().last_event_id(Some(&id(&hub, case.after)));
        if let Some(topic) = case.topic {
            subscription = subscription.topic(topic);
        }
        assert_eq!(replay_then_live(&hub, subscription), case.expected, "{}", case.name);
        let stats = hub.stats();
        let expected = if case.gap { (0, 1) } else { (1, 0) };
        assert_eq!((stats.replay_hits, stats.replay_misses), expected, "{}", case.name);
    }
}

#[test]
fn a_busy_topic_cannot_evict_a_quiet_topics_history() {
    // Total 10 events, 3 per topic: twenty for busy leave its newest 3 and
    // both of quiet's, and everyone's 2 (they count against the total).
    let hub = || {
        let hub = build(Hub::builder().history(10, 1 << 20).topic_history(3, 1 << 20));
        publish_to(&hub, "quiet", "q1");
        publish_to(&hub, "", "all1");
        publish_to(&hub, "quiet", "q2");
        for n in 1..=20 {
            publish_to(&hub, "busy", &format!("b{n}"));
        }
        publish_to(&hub, "", "all2");
        wait_history(&hub, 24, 7);
        hub
    };
    let cases: [(&str, &[&str]); 3] = [
        ("quiet", &["q1", "all1", "q2", "all2", "live"]),
        ("busy", &["all1", "b18", "b19", "b20", "all2", "live"]),
        ("other", &["all1", "all2", "live"]),
    ];
    for (topic, expected) in cases {
        // An unknown id replays everything retained for the subscription.
        let subscription = Subscription::new().topic(topic).last_event_id(Some("x"));
        let mut want = vec!["unknown-id"];
        want.extend(expected);
        assert_eq!(replay_then_live(&hub(), subscription), want, "{topic}");
    }
    // The quiet topic's client that saw q2 missed nothing.
    let hub = hub();
    let quiet = Subscription::new().topic("quiet").last_event_id(Some(&id(&hub, 3)));
    assert_eq!(replay_then_live(&hub, quiet), ["all2", "live"]);
}

#[test]
fn topics_only_subscriptions_get_none_of_everyones_events() {
    let hub = Hub::new().expect("hub");
    publish_to(&hub, "", "before");
    publish_to(&hub, "a", "a1");
    wait_history(&hub, 2, 2);
    let receiver =
        hub.receiver(Subscription::new().topic("a").topics_only().recent(5)).expect("subscribe");
    for (topic, data) in [("", "all"), ("b", "b1"), ("a", "a2")] {
        publish_to(&hub, topic, data);
    }
    assert_eq!(data_of(&receiver), ["a1", "a2"]);
    // Everyone's events lost do not make its resume a gap either.
    let hub = build(Hub::builder().history(2, 1 << 20));
    publish_to(&hub, "a", "a1");
    for n in 1..=3 {
        publish_to(&hub, "", &format!("all{n}"));
    }
    wait_history(&hub, 4, 2);
    let resumed = hub
        .receiver(Subscription::new().topic("a").topics_only().last_event_id(Some(&id(&hub, 1))))
        .expect("subscribe");
    publish_to(&hub, "a", "a2");
    assert_eq!(data_of(&resumed), ["a2"]);
}

#[test]
fn recent_replays_the_newest_wanted_events_then_live() {
    struct Case {
        name: &'static str,
        subscription: fn() -> Subscription,
        expected: &'static [&'static str],
    }
    // History: e1 (everyone), t2 (topic t), e3, t4, e5.
    let cases = [
        Case { name: "none by default", subscription: Subscription::new, expected: &["live"] },
        Case {
            name: "two",
            subscription: || Subscription::new().recent(2),
            expected: &["e3", "e5", "live"],
        },
        Case {
            name: "more than retained",
            subscription: || Subscription::new().topic("t").recent(100),
            expected: &["e1", "t2", "e3", "t4", "e5", "live"],
        },
        Case {
            name: "topic and filter decide",
            subscription: || {
                (Subscription::new().topic("t").recent(2))
                    .filter(|p| !p.frame.as_bytes().ends_with(b"e5\n\n"))
            },
            expected: &["e3", "t4", "live"],
        },
        Case {
            name: "a resume replays what it missed instead",
            subscription: || Subscription::new().recent(3).last_event_id(Some("x")),
            expected: &["unknown-id", "e1", "e3", "e5", "live"],
        },
    ];
    for case in cases {
        let hub = Hub::new().expect("hub");
        for (topic, data) in [("", "e1"), ("t", "t2"), ("", "e3"), ("t", "t4"), ("", "e5")] {
            publish_to(&hub, topic, data);
        }
        wait_history(&hub, 5, 5);
        let got = replay_then_live(&hub, (case.subscription)());
        assert_eq!(got, case.expected, "{}", case.name);
    }
}

#[test]
fn an_evicted_subscriber_resumes_although_its_topic_drops_events() {
    // The topic keeps 10 events, the total far more: the subscriber must
    // be evicted while its topic still holds what it missed.
    let hub = build(
        Hub::builder()
            .history(10_000, 1 << 30)
            .topic_history(10, 1 << 30)
            .backlog(1000, 1 << 30)
            .fanout_threads(1),
    );
    let slow = hub.receiver(Subscription::new().topic("t")).expect("subscribe");
    let pace = hub.receiver(Subscription::new().topic("t")).expect("subscribe");
    let mut published = 0;
    while hub.stats().evicted == 0 {
        published += 1;
        assert!(published <= 100, "never evicted");
        publish_to(&hub, "t", &published.to_string());
        // In step with one that reads, on the same fan-out thread.
        pace.recv_timeout(LONG_WAIT).expect("the event");
    }
    let (before, ended) = receive(&slow, LONG_WAIT);
    assert!(ended, "evicted");
    let last = before.last().expect("some events reached it").id.clone();
    // It comes back at once, and the topic publishes on.
    let resumed = hub
        .receiver(Subscription::new().topic("t").last_event_id(Some(last.as_str())))
        .expect("subscribe");
    publish_to(&hub, "t", "live");
    let mut got: Vec<String> = before.into_iter().map(|e| e.data).collect();
    got.extend(data_of(&resumed));
    let mut expected: Vec<String> = (1..=published).map(|n| n.to_string()).collect();
    expected.push("live".into());
    assert_eq!(got, expected, "gap or duplicate");
    assert_eq!(hub.stats().replay_misses, 0);
}

type Logged = Arc<Mutex<Vec<(String, Option<SocketAddr>)>>>;

/// A builder whose log records each kind (as `Debug` shows it) and peer.
fn logging(builder: HubBuilder) -> (HubBuilder, Logged) {
    let logged = Logged::default();
    let sink = logged.clone();
    let builder = builder.log(move |log: &HubLog<'_>| {
        let mut logged = sink.lock().unwrap_or_else(|e| e.into_inner());
        logged.push((format!("{:?}", log.kind), log.peer));
    });
    (builder, logged)
}

fn kinds(logged: &Logged) -> Vec<String> {
    let logged = logged.lock().unwrap_or_else(|e| e.into_inner());
    logged.iter().map(|(kind, _)| kind.clone()).collect()
}

#[test]
fn the_log_hook_hears_evictions_drops_filter_panics_and_gaps() {
    struct Case {
        name: &'static str,
        builder: fn() -> HubBuilder,
        subscription: fn() -> Subscription,
        expected: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "evicted",
            builder: || Hub::builder().backlog(1, 1 << 20),
            subscription: Subscription::new,
            expected: &["Evicted { stalled: false }"],
        },
        Case {
            name: "dropped",
            builder: || (Hub::builder().backlog(1, 1 << 20)).slow_client(SlowClient::DropOldest),
            subscription: Subscription::new,
            expected: &[
                "DroppedOldest { events: 1 }",
                "Gap { reason: \"lagged\" }",
                "DroppedOldest { events: 1 }",
            ],
        },
        Case {
            name: "filter panicked",
            builder: Hub::builder,
            subscription: || {
                Subscription::new().filter(|p| {
                    assert!(!p.frame.as_bytes().ends_with(b"1\n\n"), "filter fails");
                    true
                })
            },
            expected: &["FilterPanicked { message: Some(\"filter fails\") }"],
        },
        Case {
            name: "unknown id",
            builder: Hub::builder,
            subscription: || Subscription::new().last_event_id(Some("x")),
            expected: &["Gap { reason: \"unknown-id\" }"],
        },
    ];
    for case in cases {
        let (builder, logged) = logging((case.builder)());
        let hub = build(builder.fanout_threads(1));
        let receiver = hub.receiver((case.subscription)()).expect("subscribe");
        for n in 0..3 {
            publish_to(&hub, "", &n.to_string());
        }
        wait_until_within(LONG_WAIT, case.name, || kinds(&logged).len() >= case.expected.len());
        std::thread::sleep(QUIET);
        assert_eq!(kinds(&logged), case.expected, "{}", case.name);
        let peers = logged.lock().unwrap_or_else(|e| e.into_inner());
        assert!(peers.iter().all(|(_, peer)| peer.is_none()), "{}", case.name);
        drop(receiver);
    }
}

#[test]
fn the_log_names_a_streams_peer() {
    let (builder, logged) = logging(Hub::builder());
    let hub = build(builder);
    let handler = hub.public_handler("topic");
    let closer = hub.clone();
    let server = TestServer::start(move |server| {
        server.keep_alive(None).sse("/events", handler);
    })
    .before_stop(move || {
        let _ = closer.close();
    });
    let mut sse = server.sse("/events", &[("Last-Event-ID", "x")]);
    assert_eq!(sse.next_event().data, "unknown-id");
    let logged = logged.lock().unwrap_or_else(|e| e.into_inner());
    let (kind, peer) = logged.first().expect("logged");
    assert_eq!(kind, "Gap { reason: \"unknown-id\" }");
    assert!(peer.is_some_and(|peer| peer.ip().is_loopback()), "{peer:?}");
}

/// A publisher's empty id would reset a client's last event id (`id:`
/// alone), so that its next resume starts as a new client's: the hub gives
/// its own id instead.
#[test]
fn an_empty_id_is_replaced_by_the_hubs_own() {
    let hub = build(Hub::builder());
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    hub.publish(Event::new().id("").expect("an empty id").data("one")).expect("publish");
    let (events, _) = receive(&receiver, QUIET);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [id(&hub, 1)]);
}

/// A topic named twice counts once against its bound: with one event per
/// topic, the event stays for a resume.
#[test]
fn a_topic_named_twice_counts_once() {
    let hub = build(Hub::builder().history(100, 1 << 20).topic_history(1, 1 << 20));
    publish_to(&hub, "", "all");
    hub.publish_to(&["b", "b"], Event::new().data("b1")).expect("publish");
    wait_history(&hub, 2, 2);
    let resume = Subscription::new().topic("b").last_event_id(Some(&id(&hub, 1)));
    assert_eq!(replay_then_live(&hub, resume), ["b1", "live"]);
}

/// Topic names count against the history's byte bound: three events with
/// 4,000-byte names exceed 10,000 bytes, so the oldest goes.
#[test]
fn topic_names_count_against_the_history_bytes() {
    let hub = build(Hub::builder().history(100, 10_000));
    for n in 0..3 {
        hub.publish_to(&[n.to_string().repeat(4000)], Event::new().data("x")).expect("publish");
    }
    wait_history(&hub, 3, 2);
    assert!(hub.stats().history_bytes > 8000, "{:?}", hub.stats());
}

/// A close timeout too long for the clock waits for the close event to be
/// taken, and no thread of the hub panics.
#[test]
fn a_close_timeout_past_any_clock_still_sends_the_close_event() {
    let hub = build(
        Hub::builder().close_timeout(Duration::MAX).close_event(Some(Event::new().data("bye"))),
    );
    let receiver = hub.receiver(Subscription::new()).expect("subscribe");
    hub.close().expect("close");
    assert_eq!(data_of(&receiver), ["bye"]);
}
