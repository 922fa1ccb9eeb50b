//! Routing (exact paths, then the longest prefix) and CORS.

use std::time::Duration;

use super::{Accept, App};
use crate::http::{Request, Response};

/// A handler; a plain one answers `Err(response)`.
pub(super) type Handler = Box<dyn Fn(&Request) -> Result<Accept, Response> + Send + Sync>;

pub(super) struct Route {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) prefix: bool,
    pub(super) handler: Handler,
}

/// What routing found for a method and path.
pub(super) enum Lookup<'a> {
    Route(&'a Route),
    /// The path exists, for these other methods.
    WrongMethod(Vec<&'a str>),
    Missing,
}

/// Cross-origin resource sharing: which pages on other origins may use the
/// server. An allowed `Origin` is echoed in `Access-Control-Allow-Origin`
/// (with `Vary: Origin`) and gets preflights answered; others get no
/// `Access-Control-*` header (a preflight, `403`).
///
/// ```
/// // Pages on app.example may connect with their cookies, and send a token.
/// let cors = stdsse::server::Cors::origins(["https://app.example"])
///     .credentials()
///     .allow_headers("Authorization, Last-Event-ID");
/// ```
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Option<Vec<String>>,
    allow_headers: String,
    max_age: Duration,
    credentials: bool,
}

impl Cors {
    /// Allows every origin.
    #[must_use]
    pub fn any() -> Cors {
        Cors {
            origins: None,
            allow_headers: "Last-Event-ID, Content-Type, Cache-Control".into(),
            max_age: Duration::from_secs(600),
            credentials: false,
        }
    }

    /// Allows exactly these origins (for example `https://example.com`).
    pub fn origins<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Cors {
        Cors { origins: Some(origins.into_iter().map(Into::into).collect()), ..Cors::any() }
    }

    /// The request headers a page may send, as one comma-separated list
    /// (default `Last-Event-ID, Content-Type, Cache-Control`).
    #[must_use]
    pub fn allow_headers(mut self, headers: &str) -> Cors {
        self.allow_headers = headers.into();
        self
    }

    /// How long a browser may cache a preflight answer (default 10 min).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Cors {
        self.max_age = max_age;
        self
    }

    /// Lets pages send credentials (`withCredentials`): answers carry
    /// `Access-Control-Allow-Credentials: true`. Only for a list of
    /// [`origins`](Cors::origins) (ignored with [`Cors::any`]), so that no
    /// page on any site can read a user's authenticated stream.
    #[must_use]
    pub fn credentials(mut self) -> Cors {
        self.credentials = true;
        self
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.as_ref().is_none_or(|list| list.iter().any(|o| o == origin))
    }
}

/// Sorted and without repeats.
fn methods(mut all: Vec<&str>) -> Vec<&str> {
    all.sort_unstable();
    all.dedup();
    all
}

/// The route for `method` and `path`.
pub(super) fn find<'a>(routes: &'a [Route], method: &str, path: &str) -> Lookup<'a> {
    let matches = |r: &&Route| match r.prefix {
        true => path.starts_with(&r.path),
        false => path == r.path,
    };
    // Exact routes first, then the longest prefix.
    let key = |r: &Route| (r.prefix, std::cmp::Reverse(r.path.len()));
    let Some(best) = routes.iter().filter(matches).map(key).min() else {
        return Lookup::Missing;
    };
    let candidates: Vec<&Route> =
        routes.iter().filter(matches).filter(|r| key(r) == best).collect();
    let wanted = |m: &str| candidates.iter().find(|r| r.method == m).copied();
    if let Some(route) = wanted(method).or_else(|| wanted("GET").filter(|_| method == "HEAD")) {
        return Lookup::Route(route);
    }
    let mut allowed: Vec<&str> = candidates.iter().map(|r| r.method.as_str()).collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.push("OPTIONS");
    Lookup::WrongMethod(methods(allowed))
}

impl App {
    /// Adds the CORS headers for a request's `Origin`.
    pub(super) fn with_cors(&self, req: &Request, mut response: Response) -> Response {
        if let (Some(cors), Some(origin)) = (&self.config.cors, req.header("Origin")) {
            if cors.allows(origin) {
                response = response.header("Access-Control-Allow-Origin", origin);
                if cors.credentials && cors.origins.is_some() {
                    response = response.header("Access-Control-Allow-Credentials", "true");
                }
            }
            response = response.header("Vary", "Origin");
        }
        response
    }

    /// Answers `OPTIONS` (preflight or plain; the origin is added by
    /// `with_cors` only: browsers reject it doubled).
    pub(super) fn options(&self, req: &Request) -> Response {
        let allowed = if req.target() == "*" {
            let all = self.routes.iter().map(|r| r.method.as_str());
            methods(all.chain(["HEAD", "OPTIONS"]).collect())
        } else {
            match find(&self.routes, "OPTIONS", req.path()) {
                Lookup::WrongMethod(allowed) => allowed,
                Lookup::Route(_) => vec!["OPTIONS"],
                Lookup::Missing => return Response::text(404, "Not Found\n"),
            }
        };
        let allow = allowed.join(", ");
        let response = Response::new(204);
        match (&self.config.cors, req.header("Origin")) {
            (Some(cors), Some(origin)) if req.header("Access-Control-Request-Method").is_some() => {
                if !cors.allows(origin) {
                    return Response::text(403, "origin not allowed\n");
                }
                let max_age = cors.max_age.as_secs().to_string();
                (response.header("Access-Control-Allow-Methods", &allow))
                    .header("Access-Control-Allow-Headers", &cors.allow_headers)
                    .header("Access-Control-Max-Age", &max_age)
                    .header("Allow", &allow)
            }
            _ => response.header("Allow", &allow),
        }
    }
}
