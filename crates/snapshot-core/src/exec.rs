//! Running external programs: never on the caller's stdout (it is the protocol), stdin from
//! `/dev/null`, stderr captured into the error.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// Output of a successful command.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Shell-like rendering of a command for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; non-zero exit is an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let command = describe(cmd);
    log::debug!("running {command}");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(CommandError::Failed {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}
