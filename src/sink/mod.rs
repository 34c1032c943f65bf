//! Sinks: each reads the outbox from its own durable cursor and delivers what its `events`
//! globs select. Sinks never see state, only committed events.

pub mod encode;
pub mod log;
pub mod webhook;

use crate::event::glob_matches;

/// Whether any of `globs` selects `event_type`.
pub fn selects(globs: &[String], event_type: &str) -> bool {
    globs.iter().any(|g| glob_matches(g, event_type))
}
