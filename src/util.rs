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

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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

/// A random number from the standard library's randomly keyed hasher
/// (mixed with the clock), for jitter and the hub's epoch.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one(now.as_nanos())
}

/// `base` plus a random part of up to `jitter`.
pub(crate) fn jittered((base, jitter): (Duration, Duration)) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    base + jitter.mul_f64(unit)
}

/// Appends one metric in the Prometheus text format 0.0.4: `# HELP`, `#
/// TYPE`, then `name value` (`help` holds no backslash or line break).
pub(crate) fn push_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    use std::fmt::Write as _;
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
}
