//! Routing (exact paths, then the longest prefix) and CORS.

use std::time::Duration;

use super::{Accept, App};
use crate::http::{Request, Response};
use crate::util::sorted_set;

/// A handler; a plain one answers `Err(response)`.
pub(super) type Boxed = Box<dyn Fn(&Request) -> Result<Accept, Response> + Send + Sync>;

pub(super) struct Route {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) prefix: bool,
    pub(super) handler: Boxed,
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

    setters! {
        /// The request headers a page may send, as one comma-separated list
        /// (default `Last-Event-ID, Content-Type, Cache-Control`).
        allow_headers(headers: &str) { allow_headers: headers.into() }
        /// How long a browser may cache a preflight answer (default 10 min).
        max_age(max_age: Duration) { max_age: max_age }
        /// Lets pages send credentials (`withCredentials`): answers carry
        /// `Access-Control-Allow-Credentials: true`; ignored with [`Cors::any`],
        /// so that no page on any site can read a user's authenticated stream.
        credentials() { credentials: true }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.as_ref().is_none_or(|list| list.iter().any(|o| o == origin))
    }
}

/// The route for `method` and `path` (exact routes first, then the longest
/// prefix); `Err`: the path's methods; `None`: no route has the path.
pub(super) fn find<'a>(
    routes: &'a [Route],
    method: &str,
    path: &str,
) -> Option<Result<&'a Route, Vec<&'a str>>> {
    let matches = |r: &&Route| if r.prefix { path.starts_with(&r.path) } else { path == r.path };
    let key = |r: &Route| (r.prefix, std::cmp::Reverse(r.path.len()));
    let best = routes.iter().filter(matches).map(key).min()?;
    let candidates: Vec<_> = routes.iter().filter(matches).filter(|r| key(r) == best).collect();
    let wanted = |m: &str| candidates.iter().find(|r| r.method == m).copied();
    if let Some(route) = wanted(method).or_else(|| wanted("GET").filter(|_| method == "HEAD")) {
        return Some(Ok(route));
    }
    let head = candidates.iter().any(|r| r.method == "GET").then_some("HEAD");
    Some(Err(sorted_set(
        candidates.iter().map(|r| r.method.as_str()).chain(head).chain(["OPTIONS"]),
    )))
}

impl App {
    /// The route for a request, or the answer without one: `OPTIONS`
    /// (plain or a preflight), `405` or `404`.
    pub(super) fn route_for(&self, req: &Request) -> Result<&Route, Response> {
        let options = req.method() == "OPTIONS";
        let allowed = match find(&self.routes, req.method(), req.path()) {
            Some(Ok(route)) => return Ok(route),
            _ if options && req.target() == "*" => {
                sorted_set(self.routes.iter().map(|r| r.method.as_str()).chain(["HEAD", "OPTIONS"]))
            }
            Some(Err(allowed)) => allowed,
            None => return Err(Response::error(404, "Not Found")),
        };
        let allow = allowed.join(", ");
        if !options {
            return Err(Response::error(405, "Method Not Allowed").header("Allow", &allow));
        }
        let response = Response::new(204).header("Allow", &allow);
        // The origin is added by `with_cors` only: browsers reject it doubled.
        match (&self.config.cors, req.header("Origin")) {
            (Some(cors), Some(origin)) if req.header("Access-Control-Request-Method").is_some() => {
                if !cors.allows(origin) {
                    return Err(Response::error(403, "origin not allowed"));
                }
                Err(response
                    .header("Access-Control-Allow-Methods", &allow)
                    .header("Access-Control-Allow-Headers", &cors.allow_headers)
                    .header("Access-Control-Max-Age", &cors.max_age.as_secs().to_string()))
            }
            _ => Err(response),
        }
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_prefers_exact_then_longest_prefix_and_lists_methods() {
        #[rustfmt::skip]
        let table = [("GET", "/a", false), ("POST", "/a", false), ("GET", "/", true), ("PUT", "/a/", true), ("DELETE", "/a/b", true)];
        let routes = table.map(|(method, path, prefix)| {
            let handler: Boxed = Box::new(|_| Err(Response::new(200)));
            Route { method: method.into(), path: path.into(), prefix, handler }
        });
        #[rustfmt::skip]
        let cases = [
            ("GET", "/a", "route GET /a"),
            ("POST", "/a", "route POST /a"),
            ("HEAD", "/a", "route GET /a"),
            ("PUT", "/a", "allow GET, HEAD, OPTIONS, POST"),
            ("GET", "/x", "route GET /"),
            ("GET", "/a/x", "allow OPTIONS, PUT"),
            ("DELETE", "/a/bc", "route DELETE /a/b"),
            ("GET", "", "none"),
        ];
        for (method, path, want) in cases {
            let found = match find(&routes, method, path) {
                Some(Ok(r)) => format!("route {} {}", r.method, r.path),
                Some(Err(allowed)) => format!("allow {}", allowed.join(", ")),
                None => "none".into(),
            };
            assert_eq!(found, want, "{method} {path}");
        }
    }
}
