//! stdsse: Server-Sent Events on the Rust standard library alone.
//!
//! (Crate documentation is written in full once the modules land.)

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod event;
pub mod http;
pub mod parser;
pub mod writer;

pub use event::{Event, EventError, Field, Frame};
pub use writer::EventWriter;
