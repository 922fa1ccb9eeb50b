//! The RESP client (`stdsse::redis`) against real sockets: a silent and a
//! closing peer always, and a real `redis-server` when one is on PATH (it
//! is started on a free port in a temporary directory; without it the test
//! prints SKIP and passes, so `cargo test` stays offline).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stdsse::redis::{Conn, RedisError, RedisUrl, Reply};

fn url(s: &str) -> RedisUrl {
    RedisUrl::parse(s).unwrap()
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.into()))
}

#[test]
fn a_silent_server_times_out_and_a_closing_one_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let silent = Conn::connect(
        &url(&format!("redis://:pw@127.0.0.1:{port}")),
        Duration::from_millis(200),
    );
    assert_eq!(silent.unwrap_err(), RedisError::Timeout);
    assert!(started.elapsed() < common::WAIT);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closer = std::thread::spawn(move || {
        // Reads the AUTH command first, so the close is a FIN, not a reset.
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(common::WAIT)).unwrap();
        let _ = std::io::Read::read(&mut peer, &mut [0; 64]);
    });
    let closed = Conn::connect(&url(&format!("redis://:pw@127.0.0.1:{port}")), common::WAIT);
    assert_eq!(
        closed.unwrap_err(),
        RedisError::Io(std::io::ErrorKind::UnexpectedEof)
    );
    closer.join().unwrap();
}

/// A `redis-server` on a free port, killed (and its directory removed) on drop.
struct Redis {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Option<Redis> {
    let version = Command::new("redis-server").arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        println!("SKIP: redis-server is not on PATH");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("stdsse-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--requirepass",
            "pa:ss@",
            "--user",
            "alice",
            "on",
            ">wonder land",
            "~*",
            "&*",
            "+@all",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let redis = Redis { child, dir, port };
    let ping = url(&format!("redis://:pa%3Ass%40@127.0.0.1:{port}"));
    common::wait_until("redis-server to answer", || {
        Conn::connect(&ping, common::WAIT).is_ok()
    });
    Some(redis)
}

#[test]
fn auth_select_streams_and_a_pipeline_against_redis_server() {
    let Some(redis) = start_redis() else { return };
    let at =
        |userinfo: &str, db: u32| url(&format!("redis://{userinfo}127.0.0.1:{}/{db}", redis.port));
    // AUTH: no password, a wrong one (the error names no password), the default user, an ACL user.
    let mut anonymous = Conn::connect(&at("", 0), common::WAIT).unwrap();
    assert!(
        matches!(anonymous.call(&[b"PING"]), Err(RedisError::Server(e)) if e.starts_with("NOAUTH"))
    );
    let wrong = Conn::connect(&at(":guess@", 0), common::WAIT).unwrap_err();
    assert!(
        matches!(&wrong, RedisError::Server(e) if e.starts_with("WRONGPASS")),
        "{wrong:?}"
    );
    assert!(!wrong.to_string().contains("guess"));
    let mut default = Conn::connect(&at(":pa%3Ass%40@", 0), common::WAIT).unwrap();
    let mut alice = Conn::connect(&at("alice:wonder%20land@", 3), common::WAIT).unwrap();
    let whoami = |c: &mut Conn| c.call(&[b"ACL", b"WHOAMI"]).unwrap();
    assert_eq!(
        (whoami(&mut default), whoami(&mut alice)),
        (bulk("default"), bulk("alice"))
    );

    // SELECT: alice is in db 3, default in db 0.
    assert_eq!(
        alice.call(&[b"SET", b"k", b"in 3"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(default.call(&[b"GET", b"k"]).unwrap(), Reply::Bulk(None));

    // Streams: XADD, XRANGE, XREAD BLOCK (an entry, then a timeout's nil).
    let data = b"data: a\r\n*1\r\n$4\r\nQUIT\r\n\n";
    let Reply::Bulk(Some(id)) = default.call(&[b"XADD", b"s", b"*", b"d", data]).unwrap() else {
        panic!()
    };
    let entry = Reply::Array(Some(vec![
        bulk(std::str::from_utf8(&id).unwrap()),
        Reply::Array(Some(vec![bulk("d"), Reply::Bulk(Some(data.to_vec()))])),
    ]));
    let range = default
        .call(&[b"XRANGE", b"s", b"-", b"+", b"COUNT", b"10"])
        .unwrap();
    assert_eq!(range, Reply::Array(Some(vec![entry.clone()])));
    let read = default
        .call(&[b"XREAD", b"BLOCK", b"1000", b"STREAMS", b"s", b"0-0"])
        .unwrap();
    assert_eq!(
        read,
        Reply::Array(Some(vec![Reply::Array(Some(vec![
            bulk("s"),
            Reply::Array(Some(vec![entry]))
        ]))]))
    );
    let none = default
        .call(&[b"XREAD", b"BLOCK", b"50", b"STREAMS", b"s", &id])
        .unwrap();
    assert_eq!(none, Reply::Array(None));

    // A pipeline: 1,000 commands, one flush, 1,000 replies in order.
    for _ in 0..1000 {
        default.send(&[b"INCR", b"n"]);
    }
    default.flush().unwrap();
    for n in 1..=1000 {
        assert_eq!(default.recv().unwrap(), Reply::Integer(n));
    }
}
