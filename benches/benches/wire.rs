//! Encoding and parsing throughput of the wire format.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stdsse::parser::{Item, Parser};
use stdsse::Event;

/// A typical event of about 100 bytes on the wire.
fn typical(n: u64) -> Event {
    Event::new().event("price").and_then(|e| e.id(n.to_string())).expect("valid event").data(
        format!(
            r#"{{"symbol":"ACME","bid":{}.25,"ask":{}.75,"seq":{n}}}"#,
            100 + n % 50,
            100 + n % 50
        ),
    )
}

/// About 1 MB of typical events: `event`, `id` and one to three `data`
/// lines each, with a keep-alive comment now and then.
fn stream() -> Vec<u8> {
    let mut wire = Vec::new();
    let mut n = 0u64;
    while wire.len() < 1_000_000 {
        let mut event = typical(n);
        let data = event.get_data().unwrap_or("").to_owned();
        event = match n % 3 {
            0 => event,
            1 => event.data(format!("{data}\n{{\"note\":\"second line\"}}")),
            _ => event.data(format!("{data}\n[1,2,3]\n{{\"last\":true}}")),
        };
        if n.is_multiple_of(50) {
            wire.extend_from_slice(b":\n\n");
        }
        event.encode_into(&mut wire);
        n += 1;
    }
    wire
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let keep_alive = Event::new().comment("");
    let event = typical(12345);
    let big = Event::new()
        .data("0123456789abcdef0123456789abcdef0123456789abcdef012345678\n".repeat(176));
    let mut out = Vec::with_capacity(16 * 1024);
    for (name, event) in [("keep_alive", &keep_alive), ("typical", &event), ("10KiB", &big)] {
        group.throughput(Throughput::Bytes(event.encode().len() as u64));
        // Into a reused buffer, as `EventWriter` does.
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(event).encode_into(&mut out);
                black_box(&out);
            })
        });
    }
    // Into a new buffer, as `Frame::from` does.
    group.throughput(Throughput::Bytes(event.encode().len() as u64));
    group.bench_function("typical_new_vec", |b| b.iter(|| black_box(&event).encode()));
    group.finish();
}

fn parse(c: &mut Criterion) {
    let wire = stream();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("typical_1MB_8KiB_chunks", |b| {
        b.iter_batched_ref(
            Parser::new,
            |parser| {
                let mut events = 0usize;
                for chunk in wire.chunks(8192) {
                    parser.feed(chunk);
                    while let Some(item) = parser.next_item() {
                        if let Ok(Item::Event(event)) = item {
                            events += event.data.len();
                        }
                    }
                }
                black_box(events)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, encode, parse);
criterion_main!(benches);
