//! The freeze watchdog (docs/DESIGN.md §3.3), in two halves: [`client`], what the session and
//! the providers use (the messages, the pipe, the freeze guard), and [`process`], the watchdog
//! process that thaws what a dead session left frozen.

pub mod client;
pub mod process;

pub use client::{FreezeGuard, Message, Watchdog};
pub use process::run;
