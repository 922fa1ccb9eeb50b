//! A per-user notification service: authenticated streams, each user's
//! own notifications only.
//!
//! ```text
//! cargo run --example notify -- --addr 127.0.0.1:8080 \
//!     --user alice:TOKEN_A --user bob:TOKEN_B --admin ADMIN_TOKEN \
//!     --allow-origin http://127.0.0.1:3000
//! ```
//!
//! * `POST /login`, a user's token as the body: `204` and a session cookie
//!   (`Set-Cookie: session=ID; HttpOnly; SameSite=Lax; Path=/`, a random
//!   id, not the token); a wrong token: `401`.
//! * `GET /events`, with `Authorization: Bearer TOKEN` or the session
//!   cookie: the user's notifications, each `data:` the text and `id:` the
//!   hub's id. A fresh connect first gets the user's last 10; a reconnect
//!   with `Last-Event-ID` resumes exactly (every user keeps their own
//!   history, which no other user's traffic can push out). No credentials:
//!   `401` with `WWW-Authenticate: Bearer`, before any event-stream byte.
//! * `POST /notify?user=U`, `Authorization: Bearer ADMIN_TOKEN`, the text as
//!   the body (non-empty UTF-8, at most 64 KiB): `204`, and U's streams get
//!   it; no credentials `401`, a user's `403`, an unknown user `404`.
//! * CORS with credentials for the `--allow-origin` origins only (pages there
//!   may `fetch(..., {credentials: "include"})` and open
//!   `new EventSource(url, {withCredentials: true})`).
//! * `GET /metrics`: the server's and the hub's counters for Prometheus.
//! * Ctrl+C or SIGTERM: graceful shutdown, exit status 0.
//!
//! The first line on stderr is `listening on http://HOST:PORT`.

#[path = "common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stdsse::hub::{Hub, Subscription};
use stdsse::server::Cors;
use stdsse::{Event, Request, Response, Server};

const USAGE: &str = "notify [--addr 127.0.0.1:8080] --user NAME:TOKEN... --admin TOKEN \
                     [--allow-origin ORIGIN...]";

/// How many of their last notifications a user gets on a fresh connect.
const RECENT: usize = 10;

/// Each user's history, in events and bytes: what a reconnect can resume
/// from. The hub's total is the sum over the users, so one busy user never
/// pushes out another's notifications.
const USER_HISTORY: (usize, usize) = (100, 1024 * 1024);

/// The most sessions kept; a new login past it forgets the oldest. It
/// bounds the memory a flood of logins can take.
const MAX_SESSIONS: usize = 10_000;

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq)]
enum User {
    Admin,
    Named(String),
}

struct App {
    /// `(name, token)` per user.
    users: Vec<(String, String)>,
    admin_token: String,
    /// `(session id, user name)`, oldest first.
    sessions: Mutex<VecDeque<(String, String)>>,
}

impl App {
    /// The user a bearer token or the session cookie names; else `401`.
    /// Every route asks this one function.
    fn authenticate(&self, req: &Request) -> Result<User, Response> {
        let bearer = req.header("Authorization").and_then(|v| v.strip_prefix("Bearer "));
        let user = match bearer {
            Some(token) if same(token, &self.admin_token) => Some(User::Admin),
            Some(token) => self.user_with_token(token),
            None => session_cookie(req).and_then(|id| self.session_user(id)),
        };
        user.ok_or_else(|| {
            Response::text(401, "log in, or send Authorization: Bearer TOKEN\n")
                .header("WWW-Authenticate", "Bearer")
        })
    }

    fn user_with_token(&self, token: &str) -> Option<User> {
        let (name, _) = self.users.iter().find(|(_, t)| same(token, t))?;
        Some(User::Named(name.clone()))
    }

    fn session_user(&self, id: &str) -> Option<User> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (_, name) = sessions.iter().find(|(s, _)| same(id, s))?;
        Some(User::Named(name.clone()))
    }

    /// `POST /login`: the body is a user's token.
    fn login(&self, req: &Request) -> Response {
        let token = std::str::from_utf8(req.body()).unwrap_or("").trim();
        let Some(User::Named(name)) = self.user_with_token(token) else {
            return Response::text(401, "unknown token\n").header("WWW-Authenticate", "Bearer");
        };
        let id = session_id();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back((id.clone(), name));
        let cookie = format!("session={id}; HttpOnly; SameSite=Lax; Path=/");
        Response::new(204).header("Set-Cookie", &cookie).header("Cache-Control", "no-store")
    }

    /// `GET /events`: a user's own notifications, nobody else's.
    fn subscription(&self, req: &Request) -> Result<Subscription, Response> {
        match self.authenticate(req)? {
            User::Named(name) => Ok(Subscription::new().topic(name).topics_only().recent(RECENT)),
            User::Admin => Err(Response::text(403, "the admin has no notifications\n")),
        }
    }

    /// `POST /notify?user=U`: the admin sends U a notification.
    fn notify(&self, hub: &Hub, req: &Request) -> Response {
        match self.authenticate(req) {
            Ok(User::Admin) => {}
            Ok(User::Named(_)) => return Response::text(403, "only the admin may notify\n"),
            Err(refusal) => return refusal,
        }
        let user = req.query_param("user").unwrap_or_default();
        if !self.users.iter().any(|(name, _)| *name == user) {
            return Response::text(404, "no such user\n");
        }
        match common::message_text(req) {
            Ok(text) => match hub.publish_to(&[user], Event::new().data(text)) {
                Ok(()) => Response::new(204),
                Err(_) => Response::text(503, "the server is shutting down\n"),
            },
            Err(refusal) => refusal,
        }
    }
}

/// Whether two secrets are equal, in a time that depends on their lengths
/// only, not on where they differ.
fn same(a: &str, b: &str) -> bool {
    let differ = a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && differ == 0
}

/// The value of the `session` cookie (`Cookie: a=1; session=ID`).
fn session_cookie(req: &Request) -> Option<&str> {
    let mut cookies = req.header_all("Cookie").flat_map(|h| h.split(';'));
    cookies.find_map(|c| c.trim().strip_prefix("session="))
}

/// A new session id: 128 random bits as hex, from the standard library's
/// hasher, whose keys come from the operating system's random source
/// (SipHash with a secret key; no dependency needed).
fn session_id() -> String {
    let random = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", random(), random())
}

/// `NAME:TOKEN` from `--user`, or exit with the usage.
fn parse_user(arg: &str) -> (String, String) {
    match arg.split_once(':') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => {
            (name.to_string(), token.to_string())
        }
        _ => {
            eprintln!("--user {arg}: expected NAME:TOKEN\nusage: {USAGE}");
            std::process::exit(2);
        }
    }
}

fn main() -> std::io::Result<()> {
    let options = common::Options::parse(&["addr", "user", "admin", "allow-origin"], USAGE);
    let users: Vec<_> = options.all("user").iter().map(|u| parse_user(u)).collect();
    let admin_token = options.get("admin", "");
    if admin_token.is_empty() {
        eprintln!("--admin TOKEN is required\nusage: {USAGE}");
        std::process::exit(2);
    }
    let (events, bytes) = USER_HISTORY;
    let hub = Hub::builder()
        .topic_history(events, bytes)
        .history(events * users.len().max(1), bytes * users.len().max(1))
        .close_retry(Duration::from_millis(500), Duration::from_millis(1500))
        .build()?;
    let app = Arc::new(App { users, admin_token, sessions: Mutex::new(VecDeque::new()) });

    let mut server = Server::bind(options.get("addr", "127.0.0.1:8080"))?;
    server
        .limits(common::message_limits())
        .initial_retry(Some(Duration::from_secs(1)))
        .log(common::log_to_stderr)
        .cors(
            Cors::origins(options.all("allow-origin"))
                .credentials()
                .allow_headers("Authorization, Last-Event-ID, Content-Type"),
        );
    let (a, b, c) = (app.clone(), app.clone(), hub.clone());
    server.post("/login", move |req| a.login(req));
    server.sse("/events", hub.handler(move |req| b.subscription(req)));
    server.post("/notify", move |req| app.notify(&c, req));
    common::metrics_route(&mut server, &hub);
    common::serve_until_ctrl_c(server, hub)
}
