//! Request-head parsing: a typical browser `EventSource` request.
//!
//! Target (issue 2/6): under 300 ns per request on the 2-core development
//! machine, including building the owned `Request`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use stdsse::http::{parse_head, Limits, Status};

/// What Chromium sends when a page opens `new EventSource("/events?room=lobby")`
/// (400 bytes, 10 header fields).
const EVENTSOURCE: &[u8] = b"GET /events?room=lobby HTTP/1.1\r\n\
Host: 127.0.0.1:8080\r\n\
Connection: keep-alive\r\n\
Accept: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Referer: http://127.0.0.1:8080/\r\n\
Sec-Fetch-Dest: empty\r\n\
Last-Event-ID: 5f3a9c21-1742\r\n\r\n";

fn head(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("head");
    group.throughput(Throughput::Bytes(EVENTSOURCE.len() as u64));
    group.bench_function("eventsource_request", |b| {
        b.iter(|| match parse_head(black_box(EVENTSOURCE), &limits) {
            Ok(Status::Complete((request, used))) => (request, used),
            other => panic!("not a complete head: {other:?}"),
        })
    });
    group.finish();
}

criterion_group!(benches, head);
criterion_main!(benches);
