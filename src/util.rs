//! Helpers the server, the stream and the hub share.

/// A public enum of unit variants, each standing for one string: `$method`
/// returns it and `Display` writes it.
macro_rules! str_enum {
    (
        $(#[$doc:meta])* pub enum $name:ident { $($variant:ident = $s:literal),* }
        $(#[$method_doc:meta])* fn $method:ident;
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $s, "`")] $variant,)*
        }

        impl $name {
            $(#[$method_doc])*
            #[must_use]
            pub fn $method(self) -> &'static str {
                match self {
                    $($name::$variant => $s,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.$method())
            }
        }
    };
}

/// Builder methods that set fields from their arguments.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) { $($field:ident: $value:expr),* })*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, $($arg: $ty),*) -> Self {
            $(self.$field = $value;)*
            self
        }
    )*};
}

/// A builder's struct, each field declared with its default (`Default`).
macro_rules! builder {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$doc:meta])* $field:ident: $ty:ty = $default:expr,)* }) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$doc])* $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> $name {
                $name { $($field: $default,)* }
            }
        }
    };
}

/// `Display` (`$body`, with `self` matched by `$this`, writing to `$f`) and
/// `Error` for each error type.
macro_rules! error_display {
    ($($name:ident($this:pat, $f:ident) => $body:expr);* $(;)?) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, $f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let $this = self;
                $body
            }
        }

        impl std::error::Error for $name {}
    )*};
}

/// A public snapshot of counters: each field (documented by its help, then
/// `$doc`) renders as JSON and as a metric in the Prometheus text format
/// 0.0.4 (`# HELP`, `# TYPE`, `name value`; no help holds `\` or a line break).
macro_rules! stats {
    (
        $(#[$doc:meta])* pub struct $name:ident($prefix:literal) {
            $($(#[$fdoc:meta])* $field:ident: $ty:ty, $metric:literal, $kind:literal, $help:literal;)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            $(#[doc = $help] $(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// The counters as a JSON object.
            #[must_use]
            pub fn to_json(&self) -> String {
                let fields = [$(format!("\"{}\":{}", stringify!($field), self.$field)),*];
                format!("{{{}}}", fields.join(","))
            }

            #[doc = concat!("The counters in the Prometheus text format 0.0.4, named `", $prefix, "...`.")]
            #[must_use]
            pub fn to_prometheus(&self) -> String {
                let mut out = String::new();
                $(out += &format!(
                    "# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n",
                    concat!($prefix, $metric), $help, $kind, self.$field,
                );)*
                out
            }
        }
    };
}

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Locks a mutex, ignoring poisoning: every critical section here leaves
/// its data consistent, and a panicking handler must not take the server
/// or the hub down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One wait on `cv`, until notified or `deadline` (`None`: no deadline);
/// `Err` gives the guard back when the deadline has passed already.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    let Some(deadline) = deadline else {
        return Ok(cv.wait(guard).unwrap_or_else(PoisonError::into_inner));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(guard);
    }
    Ok(cv.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0)
}

/// `after` from now; one past any clock (`Duration::MAX`) is a century.
pub(crate) fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Sorted and without repeats (a few: inserted in place, without a sort's code).
pub(crate) fn sorted_set<T: Ord>(all: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut sorted = Vec::new();
    for item in all {
        if let Err(at) = sorted.binary_search(&item) {
            sorted.insert(at, item);
        }
    }
    sorted
}

/// Starts a named thread (`stack`: its size, else std's), boxed: one copy
/// of std's spawn code serves every thread of the crate.
pub(crate) fn spawn(
    name: String,
    stack: Option<usize>,
    body: impl FnOnce() + Send + 'static,
) -> Spawned {
    fn boxed(name: String, stack: Option<usize>, body: Box<dyn FnOnce() + Send>) -> Spawned {
        let builder = thread::Builder::new().name(name);
        stack.into_iter().fold(builder, thread::Builder::stack_size).spawn(body)
    }
    boxed(name, stack, Box::new(body))
}

type Spawned = io::Result<JoinHandle<()>>;

/// A random number from the standard library's randomly keyed hasher
/// (mixed with the clock), for jitter and the hub's epoch.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one(now.as_nanos())
}

/// `base` plus a random part of up to `jitter`.
pub(crate) fn jittered((base, jitter): (Duration, Duration)) -> Duration {
    base.saturating_add(jitter.mul_f64((random_u64() >> 11) as f64 / (1u64 << 53) as f64))
}
