//! Runs `examples/notify.rs` as a child process and checks its rules at
//! their boundaries over real sockets: who may read a stream and how, that
//! a user's stream holds their notifications only, the last 10 on a fresh
//! connect, exact resumes, the admin's rules, CORS with credentials, the
//! metrics, and a graceful exit on SIGINT.

mod common;

use common::{http, wait_for, Example, Resp, Sse, LONG_WAIT};

/// The one origin the example is started with `--allow-origin`.
const ALLOWED: &str = "http://127.0.0.1:9";
const ALICE: (&str, &str) = ("Authorization", "Bearer token-a");
const BOB: (&str, &str) = ("Authorization", "Bearer token-b");
const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-token");

/// Request headers, as a case in a table gives them.
type Headers<'a> = Vec<(&'a str, &'a str)>;

struct Notify(Example);

impl Notify {
    fn start() -> Notify {
        Notify(Example::start(
            "notify",
            &[
                "--user",
                "alice:token-a",
                "--user",
                "bob:token-b",
                "--admin",
                "admin-token",
                "--allow-origin",
                ALLOWED,
            ],
        ))
    }

    fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(self.0.addr, method, target, headers, body)
    }

    /// `GET /events` as an `EventSource` sends it, with `headers`.
    fn get_events(&self, headers: &[(&str, &str)]) -> Resp {
        let headers = [&[("Accept", "text/event-stream")], headers].concat();
        self.request("GET", "/events", &headers, b"")
    }

    fn events(&self, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.0.addr, target, headers)
    }

    /// Sends `user` a notification as the admin; it must be accepted.
    fn send(&self, user: &str, text: &str) {
        let reply =
            self.request("POST", &format!("/notify?user={user}"), &[ADMIN], text.as_bytes());
        assert_eq!(reply.status, 204, "{reply:?}");
    }

    /// Logs in with `token`; the `Cookie` header value to send back.
    fn login(&self, token: &str) -> String {
        let reply = self.request("POST", "/login", &[], token.as_bytes());
        assert_eq!(reply.status, 204, "{reply:?}");
        let cookie = reply.header("Set-Cookie").expect("a Set-Cookie header");
        let (pair, attributes) = cookie.split_once("; ").expect("attributes");
        assert_eq!(attributes, "HttpOnly; SameSite=Lax; Path=/", "{cookie}");
        let id = pair.strip_prefix("session=").expect("the session cookie");
        assert!(
            id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !id.contains(token),
            "not an opaque random id: {id}"
        );
        pair.to_string()
    }

    /// The value of metric `name` in `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let text = self.request("GET", "/metrics", &[], b"").text();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        let line = line.unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len() + 1..].parse().expect("a number")
    }

    fn wait_subscribers(&self, n: u64) {
        let what = format!("{n} subscribers");
        let count = || self.metric("stdsse_hub_subscribers");
        wait_for(LONG_WAIT, &what, count, |&s| s == n);
    }
}

fn datas(sse: &mut Sse, n: usize) -> Vec<String> {
    sse.events(n).into_iter().map(|e| e.data).collect()
}

#[test]
fn a_stream_needs_a_token_or_a_session_and_gets_nothing_else() {
    let notify = Notify::start();
    let cookie = notify.login("token-a");
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        ("no credentials", vec![]),
        ("a wrong token", vec![("Authorization", "Bearer token-x")]),
        ("a token's prefix", vec![("Authorization", "Bearer token")]),
        ("Basic", vec![("Authorization", "Basic dG9rZW4tYQ==")]),
        ("a token as the cookie", vec![("Cookie", "session=token-a")]),
        ("an unknown session", vec![("Cookie", "session=00ff")]),
        ("the cookie under another name", vec![("Cookie", "sid=x")]),
    ];
    for (name, headers) in &cases {
        let reply = notify.get_events(headers);
        assert_eq!(reply.status, 401, "{name}: {reply:?}");
        assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"), "{name}");
        let kind = reply.header("Content-Type").unwrap_or("");
        assert!(kind.starts_with("text/plain"), "{name}: {}", reply.head);
        // No event-stream bytes: the body is the plain-text reason only.
        let body = reply.text();
        assert!(body.contains("Bearer") && !body.contains("data:"), "{name}: {body}");
    }
    // The admin has no stream of its own.
    assert_eq!(notify.get_events(&[ADMIN]).status, 403);
    // A wrong login gets no cookie.
    let wrong = notify.request("POST", "/login", &[], b"token-x");
    assert_eq!((wrong.status, wrong.header("Set-Cookie")), (401, None), "{wrong:?}");
    // Two logins are two different sessions.
    assert_ne!(notify.login("token-a"), cookie);

    // The bearer token and the cookie (among other cookies) both work.
    let mut by_token = notify.events("/events", &[ALICE]);
    let others = format!("theme=dark; {cookie}; lang=en");
    let mut by_cookie = notify.events("/events", &[("Cookie", &others)]);
    notify.wait_subscribers(2);
    notify.send("alice", "for alice\nline two");
    assert_eq!(datas(&mut by_token, 1), ["for alice\nline two"]);
    assert_eq!(datas(&mut by_cookie, 1), ["for alice\nline two"]);
}

#[test]
fn a_user_gets_their_own_last_ten_and_resumes_exactly_however_busy_others_are() {
    let notify = Notify::start();
    // Query parameters reach no one else's notifications.
    let mut alice = notify.events("/events?user=bob&topic=bob&room=bob", &[ALICE]);
    let mut bob = notify.events("/events", &[BOB]);
    notify.wait_subscribers(2);
    // Bob is busy: 150 notifications for him around each of Alice's, more
    // than a user's history holds.
    let mut ids = Vec::new();
    for n in 1..=12 {
        for b in 0..150 {
            notify.send("bob", &format!("bob {n}.{b}"));
        }
        notify.send("alice", &format!("a{n}"));
        let event = alice.next_event();
        assert_eq!(event.data, format!("a{n}"), "only Alice's, in order");
        ids.push(event.id);
    }
    assert_eq!(datas(&mut bob, 1), ["bob 1.0"]);
    drop(bob);

    // A fresh connect: the last 10, then live ones, nothing in between.
    let mut fresh = notify.events("/events", &[ALICE]);
    let expected: Vec<String> = (3..=12).map(|n| format!("a{n}")).collect();
    assert_eq!(datas(&mut fresh, 10), expected);
    notify.wait_subscribers(2);
    notify.send("alice", "a13");
    assert_eq!(datas(&mut fresh, 1), ["a13"]);
    assert_eq!(datas(&mut alice, 1), ["a13"]);

    // A resume after a2 (before the last 10): exactly a3..a13, then live.
    let mut resumed = notify.events("/events", &[ALICE, ("Last-Event-ID", &ids[1])]);
    let expected: Vec<String> = (3..=13).map(|n| format!("a{n}")).collect();
    assert_eq!(datas(&mut resumed, 11), expected);
    notify.wait_subscribers(3);
    notify.send("alice", "a14");
    assert_eq!(datas(&mut resumed, 1), ["a14"]);
}

#[test]
fn only_the_admin_notifies_and_only_known_users() {
    let notify = Notify::start();
    let cookie = notify.login("token-a");
    let largest = "x".repeat(64 * 1024);
    let too_large = "x".repeat(64 * 1024 + 1);
    let cases: [(&str, &str, Headers, &str, u16); 10] = [
        ("no credentials", "alice", vec![], "hi", 401),
        ("a wrong token", "alice", vec![("Authorization", "Bearer admin")], "hi", 401),
        ("a user's token", "alice", vec![ALICE], "hi", 403),
        ("a user's session", "bob", vec![("Cookie", &cookie)], "hi", 403),
        ("an unknown user", "carol", vec![ADMIN], "hi", 404),
        ("no user", "", vec![ADMIN], "hi", 404),
        ("an empty text", "alice", vec![ADMIN], "", 400),
        ("a text over 64 KiB", "alice", vec![ADMIN], &too_large, 413),
        ("a text of 64 KiB", "alice", vec![ADMIN], &largest, 204),
        ("the admin", "alice", vec![ADMIN], "ok", 204),
    ];
    let mut alice = notify.events("/events", &[ALICE]);
    notify.wait_subscribers(1);
    for (name, user, headers, body, status) in &cases {
        let target = format!("/notify?user={user}");
        let reply = notify.request("POST", &target, headers, body.as_bytes());
        assert_eq!(reply.status, *status, "{name}: {reply:?}");
        if *status == 401 {
            assert_eq!(reply.header("WWW-Authenticate"), Some("Bearer"), "{name}");
        }
    }
    // Only the accepted ones arrived.
    assert_eq!(datas(&mut alice, 2), [largest.as_str(), "ok"]);
}

#[test]
fn cors_with_credentials_for_the_allowed_origin_only() {
    let notify = Notify::start();
    let origin = ("Origin", ALLOWED);
    let cors_headers = |r: &Resp| -> Vec<String> {
        let named = r.headers.iter().filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            n.starts_with("access-control-") || n == "vary"
        });
        named.map(|(n, v)| format!("{n}: {v}")).collect()
    };
    let allowed = [
        format!("Access-Control-Allow-Origin: {ALLOWED}"),
        "Access-Control-Allow-Credentials: true".to_string(),
        "Vary: Origin".to_string(),
    ];

    let stream = notify.events("/events", &[ALICE, origin]);
    assert_eq!(cors_headers(&stream.head), allowed);
    let login = notify.request("POST", "/login", &[origin], b"token-a");
    assert_eq!((login.status, cors_headers(&login)), (204, allowed.to_vec()));
    let refused = notify.get_events(&[origin]);
    assert_eq!((refused.status, cors_headers(&refused)), (401, allowed.to_vec()));

    // Other origins (another port is another origin) get no CORS header.
    for other in ["http://127.0.0.1:8", "http://evil.example", "null"] {
        let stream = notify.events("/events", &[ALICE, ("Origin", other)]);
        assert_eq!(cors_headers(&stream.head), ["Vary: Origin"], "{other}");
        let login = notify.request("POST", "/login", &[("Origin", other)], b"token-a");
        assert_eq!(cors_headers(&login), ["Vary: Origin"], "{other}");
    }

    // A preflight may ask for Authorization and Last-Event-ID.
    let preflight = |from: &str| {
        let headers = [
            ("Origin", from),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization,last-event-id"),
        ];
        notify.request("OPTIONS", "/events", &headers, b"")
    };
    let yes = preflight(ALLOWED);
    assert_eq!(yes.status, 204, "{yes:?}");
    assert_eq!(yes.header("Access-Control-Allow-Origin"), Some(ALLOWED));
    assert_eq!(yes.header("Access-Control-Allow-Credentials"), Some("true"));
    let allow = yes.header("Access-Control-Allow-Headers").unwrap_or("");
    let allow = allow.to_ascii_lowercase();
    assert!(allow.contains("authorization") && allow.contains("last-event-id"), "{allow}");
    let no = preflight("http://evil.example");
    assert_eq!((no.status, cors_headers(&no)), (403, vec!["Vary: Origin".to_string()]));
}

#[test]
fn metrics_show_the_server_and_the_hub() {
    let notify = Notify::start();
    let _alice = notify.events("/events", &[ALICE]);
    notify.wait_subscribers(1);
    notify.send("alice", "one");
    // `POST /notify` answers once the hub accepted the event; the hub's
    // coordinator counts it a moment later.
    let published = || notify.metric("stdsse_hub_published_total");
    wait_for(LONG_WAIT, "1 published", published, |&n| n == 1);
    let metrics = notify.request("GET", "/metrics", &[], b"");
    assert_eq!(
        (metrics.status, metrics.header("Content-Type")),
        (200, Some("text/plain; version=0.0.4; charset=utf-8"))
    );
    let text = metrics.text();
    for name in [
        "# TYPE stdsse_server_streams_open gauge\nstdsse_server_streams_open 1\n",
        "# TYPE stdsse_hub_subscribers gauge\nstdsse_hub_subscribers 1\n",
        "# TYPE stdsse_hub_published_total counter\nstdsse_hub_published_total 1\n",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
}

#[cfg(unix)]
#[test]
fn sigint_ends_the_streams_and_exits_0() {
    let mut notify = Notify::start();
    let mut alice = notify.events("/events", &[ALICE]);
    notify.wait_subscribers(1);
    notify.0.interrupt();
    alice.until_eof();
    let status = notify.0.wait_exit();
    assert!(status.success(), "{status}");
}
