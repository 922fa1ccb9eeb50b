//! Event-stream parser (being written).
