//! Threads of the server, counted in `/proc/self/status`: a rejected
//! connection gets no thread, and after shutdown every thread the server
//! started has ended. The count covers the whole process, so this binary
//! holds exactly one test (nothing else runs beside it).

mod common;

#[cfg(target_os = "linux")]
#[test]
fn threads_end_with_the_server_and_rejections_spawn_none() {
    use std::time::Duration;

    use common::{get, wait_until, TestServer};
    use stdsse::{Accept, Event, Response};

    /// Threads in this process now.
    fn threads() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line =
            status.lines().find_map(|l| l.strip_prefix("Threads:")).expect("a Threads: line");
        line.trim().parse().expect("a thread count")
    }
    fn wait_threads(what: &str, n: usize) {
        wait_until(&format!("{what}: {n} threads"), || threads() == n);
    }

    let baseline = threads();
    let server = TestServer::start(|s| {
        s.max_connections(2)
            .keep_alive(Some(Duration::from_millis(100)))
            .shutdown_timeout(Duration::from_secs(3))
            .shutdown_retry(Duration::from_millis(500), Duration::from_millis(100))
            .get("/", |_| Response::text(200, "hello"))
            .sse("/hold", |_req| {
                Ok(Accept::new(move |mut stream| {
                    stream.send(&Event::new().data("held"))?;
                    loop {
                        stream.sleep(Duration::from_secs(60))?;
                    }
                }))
            });
    });
    // The thread running `run` (it accepts) and the ticker.
    wait_threads("server started", baseline + 2);

    let open = |n: usize| {
        let mut client = server.client();
        client.send(&get("/hold"));
        client.read_until(b"data: held\n\n");
        wait_until(&format!("{n} streams open"), || server.handle.stats().open_streams == n);
        client
    };
    let first = open(1);
    let second = open(2);
    wait_threads("two streams", baseline + 4);

    // Full: the accept thread answers 503 itself; no thread is spawned.
    for _ in 0..3 {
        let resp = server.request(&get("/"));
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("Retry-After"), Some("1"));
        assert_eq!(threads(), baseline + 4, "a thread for a rejected connection");
    }
    assert_eq!(server.handle.stats().rejected, 3);

    // A stream ends: its thread ends, and new connections are served.
    drop(first);
    wait_until("the stream is closed", || server.handle.stats().open_connections == 1);
    wait_threads("one stream", baseline + 3);
    server.assert_alive();
    // (That connection counts until its thread has closed it.)
    wait_until("the request's connection is closed", || {
        server.handle.stats().open_connections == 1
    });

    // An idle keep-alive connection and a stream, then shutdown.
    let mut idle = server.client();
    idle.send(&get("/"));
    assert_eq!(idle.response().status, 200);
    let handle = server.handle.clone();
    server.stop();
    let stats = handle.stats();
    assert_eq!((stats.open_connections, stats.open_streams), (0, 0), "{stats:?}");
    wait_threads("after shutdown", baseline);
    drop((second, idle));
}
