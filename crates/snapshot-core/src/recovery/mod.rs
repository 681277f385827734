//! Crash safety (docs/DESIGN.md §3.3): what lets a session die at any instant — SIGKILL, a
//! panic, a power cut — without leaving a filesystem frozen or a snapshot behind.
//!
//! - [`journal`]: every object recorded before it is made, every write atomic;
//! - [`liveness`]: whether the session (or its watchdog) that wrote a journal still lives;
//! - [`watchdog`]: a process of its own that thaws what a dead session left frozen;
//! - [`cleanup`]: replays a dead session's journal backwards (`snapshot cleanup`, and every
//!   session start that finds one).

pub mod cleanup;
pub mod journal;
pub mod liveness;
pub mod watchdog;
