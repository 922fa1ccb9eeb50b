//! The project's `Server` on 127.0.0.1:0 in a background thread.

use std::io;
use std::net::SocketAddr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use stdsse::{Server, ShutdownHandle};

use super::*;

/// A server running `Server::run` in a background thread; shut down and
/// joined (bounded) by [`TestServer::stop`] or when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    before_stop: Option<Box<dyn FnOnce()>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0, lets `configure` add routes and settings, and runs
    /// the server in a background thread.
    ///
    /// `STDSSE_TEST_STACK_SIZE` (bytes), when set, overrides the connection
    /// thread stack size: it is how the stack the server needs was measured.
    pub fn start(configure: impl FnOnce(&mut Server)) -> TestServer {
        let mut server = Server::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        if let Some(size) =
            std::env::var("STDSSE_TEST_STACK_SIZE").ok().and_then(|s| s.parse().ok())
        {
            server.stack_size(size);
        }
        configure(&mut server);
        let addr = server.local_addr();
        let handle = server.handle();
        let join = thread::Builder::new()
            .name("test-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        TestServer { addr, handle, join: Some(join), before_stop: None }
    }

    /// Runs `f` first when the server is stopped or dropped (for example to
    /// close a hub that holds detached streams, which shutdown waits for).
    pub fn before_stop(mut self, f: impl FnOnce() + 'static) -> TestServer {
        self.before_stop = Some(Box::new(f));
        self
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A new client connected to this server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends one request on a new connection and reads the response.
    pub fn request(&self, bytes: &[u8]) -> Resp {
        let mut client = self.client();
        client.send(bytes);
        client.response()
    }

    /// `GET /` on a new connection must answer 200: the server still works.
    pub fn assert_alive(&self) {
        let resp = self.request(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(resp.status, 200, "the server stopped serving: {resp:?}");
    }

    /// Opens an event stream on `target` with extra request headers.
    pub fn sse(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, target, headers)
    }

    /// Shuts the server down and waits (bounded) for `run` to return.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(f) = self.before_stop.take() {
            f();
        }
        self.handle.shutdown();
        let Some(join) = self.join.take() else { return };
        let deadline = Instant::now() + LONG_WAIT;
        while !join.is_finished() {
            if Instant::now() > deadline {
                assert!(thread::panicking(), "Server::run did not return after shutdown");
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let result = join.join();
        if !thread::panicking() {
            result.expect("the server thread panicked").expect("Server::run failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
