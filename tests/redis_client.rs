//! The RESP client (`stdsse::redis`) against real sockets: a silent and a
//! closing peer always, and a real `redis-server` when one is on PATH (it
//! is started on a free port in a temporary directory; without it the test
//! prints SKIP and passes, so `cargo test` stays offline).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::thread::{self, JoinHandle};

use stdsse::http::Status;
use stdsse::redis::{parse_reply, Conn, RedisError, RedisUrl, Reply, ReplyLimits, LIMITS};
use Reply::{Array, Bulk, Integer, Simple};

const SMALL: ReplyLimits = ReplyLimits { bulk: 8, array: 4, depth: 2, line: 40, total: 64 };

fn url(s: &str) -> RedisUrl {
    RedisUrl::parse(s).unwrap()
}

fn bulk(s: &str) -> Reply {
    Bulk(Some(s.into()))
}

#[test]
fn replies_parse_whole_and_every_prefix_is_partial() {
    let nested = Array(Some(vec![Array(Some(vec![Integer(1), Bulk(None)])), bulk("x")]));
    let cases: Vec<(&[u8], Reply)> = vec![
        (b"+OK\r\n", Simple("OK".into())),
        (b"+\r\n", Simple(String::new())),
        (b"-ERR no such key\r\n", Reply::Error("ERR no such key".into())),
        (b":-9223372036854775808\r\n", Integer(i64::MIN)),
        (b":9223372036854775807\r\n", Integer(i64::MAX)),
        (b"$0\r\n\r\n", bulk("")),
        (b"$8\r\nab\r\n*1\r\n\r\n", bulk("ab\r\n*1\r\n")),
        (b"$-1\r\n", Bulk(None)),
        (b"*-1\r\n", Array(None)),
        (b"*0\r\n", Array(Some(vec![]))),
        (b"*2\r\n*2\r\n:1\r\n$-1\r\n$1\r\nx\r\n", nested),
    ];
    for (input, want) in cases {
        let whole = Ok(Status::Complete((want, input.len())));
        assert_eq!(parse_reply(input, &SMALL), whole, "{input:?}");
        let trailing = [input, b"+next\r\n"].concat();
        assert_eq!(parse_reply(&trailing, &SMALL), whole, "{input:?}");
        for cut in 0..input.len() {
            assert_eq!(parse_reply(&input[..cut], &SMALL), Ok(Status::Partial), "{input:?} {cut}");
        }
        assert_eq!(common::fuzz::resp_reply(input), "complete");
    }
}

#[test]
fn bad_or_oversized_replies_are_errors() {
    let long = [b"+".as_slice(), &[b'x'; 70]].concat();
    let cr_at_the_bound = [b"+".as_slice(), &[b'x'; 62], b"\rx"].concat();
    let cases: [(&[u8], &str); 29] = [
        (b"$-2\r\n", "bad length"),
        (b"*-2\r\n", "bad length"),
        (b"$99999999999999999999\r\n", "bad length"),
        (b"$1x\r\n", "bad length"),
        // `[ "-" ] 1*DIGIT`, as Redis writes them: no sign but a minus, no space.
        (b"$+3\r\nabc\r\n", "bad length"),
        (b"*+1\r\n:1\r\n", "bad length"),
        (b"$ 3\r\nabc\r\n", "bad length"),
        (b":+3\r\n", "bad integer"),
        (b":--3\r\n", "bad integer"),
        (b":-\r\n", "bad integer"),
        (b":\r\n", "bad integer"),
        (b"$9\r\n", "length over the limit"),
        (b"*5\r\n", "length over the limit"),
        (b"*1\r\n*1\r\n*1\r\n", "arrays nested too deep"),
        (b":\r\n", "bad integer"),
        (b":9223372036854775808\r\n", "bad integer"),
        (b":1 \r\n", "bad integer"),
        (b"$1\r\nxy\r\n", "bulk string without CRLF"),
        (b"+OK\n", "bare LF"),
        (b"+OK\rx", "CR without LF"),
        (b"%1\r\n", "unknown reply type (RESP3?)"),
        (b"_\r\n", "unknown reply type (RESP3?)"),
        (b">1\r\n", "unknown reply type (RESP3?)"),
        (&long, "line too long"),
        (&cr_at_the_bound, "line too long"),
        (&[b"*1\r\n", &long[..]].concat(), "line too long"),
        (
            &[b"*4\r\n".as_slice(), &[b"+".as_slice(), &[b'x'; 30], b"\r\n"].concat().repeat(3)]
                .concat(),
            "reply too large",
        ),
        (&[b"+".as_slice(), &[b'x'; 41]].concat(), "line too long"),
        (&[b"*1\r\n-".as_slice(), &[b'x'; 41]].concat(), "line too long"),
    ];
    for (input, why) in cases {
        assert_eq!(parse_reply(input, &SMALL), Err(RedisError::Protocol(why)), "{input:?}");
    }
    let at_the_line_bound = [b"+".as_slice(), &[b'x'; 40], b"\r\n"].concat();
    assert!(matches!(parse_reply(&at_the_line_bound, &SMALL), Ok(Status::Complete(_))));
    let deep = b"*1\r\n".repeat(9);
    let too_deep = Err(RedisError::Protocol("arrays nested too deep"));
    assert_eq!(parse_reply(&deep, &LIMITS), too_deep);
}

#[test]
fn urls_parse_and_hide_the_password() {
    let cases = [
        ("redis://localhost", Ok("redis://localhost:6379/0")),
        ("redis://h:7000/", Ok("redis://h:7000/0")),
        ("redis://:p%40ss@h:1/2", Ok("redis://:***@h:1/2")),
        ("redis://u%3A:p:w@@h:1", Ok("redis://u::***@h:1/0")),
        ("redis://u:@[::1]:7000/15", Ok("redis://u:***@[::1]:7000/15")),
        ("redis://[::1]", Ok("redis://[::1]:6379/0")),
        ("http://h:1", Err("not redis://")),
        ("redis://h:x", Err("bad port")),
        ("redis://h:70000", Err("bad port")),
        ("redis://h:+80", Err("bad port")),
        ("redis://h:", Err("bad port")),
        ("redis://h:1/+1", Err("bad db")),
        ("redis://h:1/-1", Err("bad db")),
        ("redis://h:1/x", Err("bad db")),
        ("redis://h:1/0?x=1", Err("bad db")),
        ("redis://secret@h:1", Err("userinfo is not user:password")),
        ("redis://:%zz@h", Err("bad %-escape")),
        ("redis://:%4@h", Err("bad %-escape")),
        ("redis://:%ff@h", Err("userinfo is not UTF-8")),
        ("redis://:6379", Err("no host")),
    ];
    for (input, want) in cases {
        let want = want.map(str::to_string).map_err(RedisError::Url);
        assert_eq!(RedisUrl::parse(input).map(|u| u.to_string()), want, "{input}");
    }
    let url = url("redis://alice:s3cret@h:1/2");
    assert_eq!(
        (format!("{url}"), format!("{url:?}")),
        ("redis://alice:***@h:1/2".into(), "redis://alice:***@h:1/2".into())
    );
}

/// What a fake Redis read: the bytes and the commands they parse to.
type Heard = JoinHandle<(Vec<u8>, Vec<Reply>)>;

/// A fake Redis on 127.0.0.1 that answers `+OK` to every command and
/// gives back the bytes it read and the commands they parse to.
fn fake_redis() -> (u16, Heard) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(common::WAIT)).unwrap();
        let (mut bytes, mut commands, mut at) = (Vec::new(), Vec::new(), 0);
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = peer.read(&mut chunk) {
            bytes.extend_from_slice(&chunk[..n]);
            while let Ok(Status::Complete((command, len))) = parse_reply(&bytes[at..], &LIMITS) {
                commands.push(command);
                at += len;
                peer.write_all(b"+OK\r\n").unwrap();
            }
        }
        (bytes, commands)
    });
    (port, server)
}

#[test]
fn auth_and_select_send_the_decoded_userinfo() {
    let (port, server) = fake_redis();
    let conn =
        Conn::connect(&url(&format!("redis://u%3A:p:w%40@127.0.0.1:{port}/2")), common::WAIT);
    drop(conn.unwrap());
    let auth = Array(Some(vec![bulk("AUTH"), bulk("u:"), bulk("p:w@")]));
    let select = Array(Some(vec![bulk("SELECT"), bulk("2")]));
    assert_eq!(server.join().unwrap().1, vec![auth, select]);
    let (port, server) = fake_redis();
    drop(Conn::connect(&url(&format!("redis://:only@127.0.0.1:{port}")), common::WAIT).unwrap());
    assert_eq!(server.join().unwrap().1, vec![Array(Some(vec![bulk("AUTH"), bulk("only")]))]);
}

#[test]
fn commands_are_arrays_of_bulk_strings_whatever_the_data() {
    let (port, server) = fake_redis();
    let mut conn = Conn::connect(&url(&format!("redis://127.0.0.1:{port}")), common::WAIT).unwrap();
    let data = b"\r\n*1\r\n$4\r\nQUIT\r\n";
    conn.send(&[b"XADD", b"s", data, b""]);
    conn.flush().unwrap();
    assert_eq!(conn.recv().unwrap(), Simple("OK".into()));
    drop(conn);
    let (bytes, commands) = server.join().unwrap();
    let want = b"*4\r\n$4\r\nXADD\r\n$1\r\ns\r\n$16\r\n\r\n*1\r\n$4\r\nQUIT\r\n\r\n$0\r\n\r\n";
    assert_eq!(bytes, want);
    let one = Array(Some(vec![bulk("XADD"), bulk("s"), Bulk(Some(data.to_vec())), bulk("")]));
    assert_eq!(commands, vec![one]);
}

#[test]
fn a_silent_server_times_out_and_a_closing_one_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let silent =
        Conn::connect(&url(&format!("redis://:pw@127.0.0.1:{port}")), Duration::from_millis(200));
    assert_eq!(silent.err().unwrap(), RedisError::Timeout);
    assert!(started.elapsed() < common::WAIT);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closer = thread::spawn(move || {
        // Reads the AUTH command first, so the close is a FIN, not a reset.
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(common::WAIT)).unwrap();
        let _ = peer.read(&mut [0; 64]);
    });
    let closed = Conn::connect(&url(&format!("redis://:pw@127.0.0.1:{port}")), common::WAIT);
    assert_eq!(closed.err().unwrap(), RedisError::Io(std::io::ErrorKind::UnexpectedEof));
    closer.join().unwrap();
}

#[test]
fn a_reply_that_trickles_in_without_end_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dripper = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let _ = peer.write_all(b"*1000000\r\n");
        // One element every 10 ms: each read is well within the timeout.
        while peer.write_all(b":1\r\n").is_ok() {
            thread::sleep(Duration::from_millis(10));
        }
    });
    let mut conn =
        Conn::connect(&url(&format!("redis://127.0.0.1:{port}")), Duration::from_millis(300))
            .unwrap();
    let started = Instant::now();
    assert_eq!(conn.call(&[b"PING"]).err().unwrap(), RedisError::Timeout);
    assert!(started.elapsed() < common::WAIT);
    drop(conn);
    dripper.join().unwrap();
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
    if !common::redis_server_on_path() {
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
    common::wait_until("redis-server to answer", || Conn::connect(&ping, common::WAIT).is_ok());
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
    let wrong = Conn::connect(&at(":guess@", 0), common::WAIT).err().unwrap();
    assert!(matches!(&wrong, RedisError::Server(e) if e.starts_with("WRONGPASS")), "{wrong:?}");
    assert!(!wrong.to_string().contains("guess"));
    let mut default = Conn::connect(&at(":pa%3Ass%40@", 0), common::WAIT).unwrap();
    let mut alice = Conn::connect(&at("alice:wonder%20land@", 3), common::WAIT).unwrap();
    let whoami = |c: &mut Conn| c.call(&[b"ACL", b"WHOAMI"]).unwrap();
    assert_eq!((whoami(&mut default), whoami(&mut alice)), (bulk("default"), bulk("alice")));

    // SELECT: alice is in db 3, default in db 0.
    assert_eq!(alice.call(&[b"SET", b"k", b"in 3"]).unwrap(), Reply::Simple("OK".into()));
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
    let range = default.call(&[b"XRANGE", b"s", b"-", b"+", b"COUNT", b"10"]).unwrap();
    assert_eq!(range, Reply::Array(Some(vec![entry.clone()])));
    let read = default.call(&[b"XREAD", b"BLOCK", b"1000", b"STREAMS", b"s", b"0-0"]).unwrap();
    assert_eq!(
        read,
        Reply::Array(Some(vec![Reply::Array(Some(vec![
            bulk("s"),
            Reply::Array(Some(vec![entry]))
        ]))]))
    );
    let none = default.call(&[b"XREAD", b"BLOCK", b"50", b"STREAMS", b"s", &id]).unwrap();
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
