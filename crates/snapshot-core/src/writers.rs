//! Writer hooks (DESIGN.md §2.2): executables that flush and pause applications on `freeze`
//! and let them go on `thaw`, compatible with the QEMU guest agent's fsfreeze hooks.
//!
//! STUB: signatures are fixed; the implementation is being written.

use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Writer directories in the order they are searched.
pub const DEFAULT_DIRS: [&str; 2] = ["/usr/lib/snapshot/writers.d", "/etc/qemu/fsfreeze-hook.d"];

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dirs: Vec<PathBuf>,
    /// Per-invocation timeout; the writer's process group is killed when it runs out.
    pub timeout: Duration,
    /// A writer that fails `freeze` is an error (otherwise a warning).
    pub strict: bool,
}

/// What writers get in their environment besides `SNAPSHOT_PHASE`.
#[derive(Debug, Clone)]
pub struct WriterEnv {
    pub session: String,
    pub target: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    /// Path as found in its directory.
    pub path: PathBuf,
    /// File name, for logs and ordering.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("writer directory {dir:?}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writer {writer:?}: cannot run it for {phase}: {source}")]
    Spawn {
        writer: PathBuf,
        phase: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("writer {writer:?} {phase} failed ({status})")]
    Failed {
        writer: PathBuf,
        phase: &'static str,
        status: String,
    },
    #[error("writer {writer:?} {phase} did not finish within {timeout:?}; its process group was killed")]
    TimedOut {
        writer: PathBuf,
        phase: &'static str,
        timeout: Duration,
    },
}

/// Result of sending `freeze` to the writers.
#[derive(Debug, Default)]
pub struct FreezeOutcome {
    /// Every writer that was sent `freeze` (also those that failed it), in the order sent:
    /// each must get `thaw`.
    pub sent: Vec<Writer>,
    /// Failures tolerated (not `strict`).
    pub warnings: Vec<WriterError>,
    /// With `strict`, the failure that stopped the freezing.
    pub error: Option<WriterError>,
}

#[derive(Debug)]
pub struct Writers {
    pub config: WriterConfig,
    pub env: WriterEnv,
    pub writers: Vec<Writer>,
}

impl Writers {
    /// Finds the writers in `config.dirs`; a missing directory holds none.
    pub fn discover(config: WriterConfig, env: WriterEnv) -> Result<Self, WriterError> {
        Ok(Self {
            config,
            env,
            writers: Vec::new(),
        })
    }

    /// Sends `freeze DIR...` to each writer in order.
    pub fn freeze(&self, _dirs: &[PathBuf]) -> FreezeOutcome {
        FreezeOutcome::default()
    }

    /// Sends `thaw DIR...` to `sent` in reverse order, every one of them; returns the failures.
    pub fn thaw(&self, _sent: &[Writer], _dirs: &[PathBuf]) -> Vec<WriterError> {
        Vec::new()
    }
}
