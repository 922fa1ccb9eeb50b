//! Hub publish to in-process subscribers: the hub's own work (id, encoding,
//! history, fan-out to every subscriber) without the kernel's socket work.
//! One iteration publishes one event and waits until every subscriber has
//! received it, so the time is the publish-to-last-delivery latency and the
//! throughput is in deliveries.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stdsse::hub::{Hub, Subscription};
use stdsse::Event;

fn publish(c: &mut Criterion) {
    // `hub_publish`: no topics; `hub_publish_topic`: every subscriber on one
    // topic and every event published to it (the chat's rooms).
    for (name, topic) in [("hub_publish", None), ("hub_publish_topic", Some("room"))] {
        publish_group(c, name, topic);
    }
}

fn publish_group(c: &mut Criterion, name: &str, topic: Option<&str>) {
    let mut group = c.benchmark_group(name);
    for subscribers in [10u64, 1_000, 10_000] {
        let hub = Hub::new().expect("start a hub");
        let subscription = || topic.map_or(Subscription::new(), |t| Subscription::new().topic(t));
        let receivers: Vec<_> =
            (0..subscribers).map(|_| hub.receiver(subscription()).expect("subscribe")).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.stats().subscribers < subscribers {
            assert!(Instant::now() < deadline, "subscribers did not arrive");
            std::thread::sleep(Duration::from_millis(1));
        }
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let event = Event::new().data(format!(r#"{{"symbol":"ACME","seq":{n}}}"#));
                match topic {
                    Some(t) => hub.publish_to(&[t], event),
                    None => hub.publish(event),
                }
                .expect("publish");
                for receiver in &receivers {
                    black_box(receiver.recv().expect("a frame"));
                }
            });
        });
        hub.close().expect("close the hub");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = publish
}
criterion_main!(benches);
