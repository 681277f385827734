//! Man pages (one per binary, one per `snapshot` subcommand) and shell completions (bash, zsh,
//! fish), rendered from the clap definitions the binaries parse with (`snapshot_cli::cli`;
//! `snapshot_certify::Cli` for snapshot-certify's page, which goes to its package's
//! `certify/man/`), so they cannot drift.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use snapshot_cli::cli::{Cli, StartCli, StopCli};
use std::path::{Path, PathBuf};

/// The three binaries' commands, as the binaries see them.
fn commands() -> Vec<clap::Command> {
    vec![Cli::command(), StartCli::command(), StopCli::command()]
}

/// Writes every man page and completion script under `out`; returns their paths.
pub fn write_all(out: &Path) -> Result<Vec<PathBuf>> {
    let man = out.join("man");
    let comp = out.join("completions");
    let certify_man = out.join("certify/man");
    for d in [&man, &comp, &certify_man] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut written = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_owned();
        written.push(man_page(&man, &name, cmd.clone())?);
        // `snapshot run` and friends get pages of their own: snapshot-run(1).
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("{name}-{}", sub.get_name());
            let sub = sub
                .clone()
                .display_name(page.clone())
                .bin_name(format!("{name} {}", sub.get_name()));
            written.push(man_page(&man, &page, sub)?);
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = comp.join(shell.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &dir)
                .with_context(|| format!("writing the {shell} completion of {name}"))?;
            written.push(file);
        }
    }
    let certify = snapshot_certify::Cli::command();
    written.push(man_page(&certify_man, "snapshot-certify", certify)?);
    Ok(written)
}

fn man_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(name.to_uppercase())
        .render(&mut buf)
        .with_context(|| format!("rendering the man page of {name}"))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_and_completions_cover_every_binary_and_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path()).unwrap();
        let man = |n: &str| std::fs::read_to_string(dir.path().join("man").join(n)).unwrap();
        for page in [
            "snapshot.1",
            "start-snapshot.1",
            "stop-snapshot.1",
            "snapshot-run.1",
            "snapshot-plan.1",
            "snapshot-cleanup.1",
            "snapshot-status.1",
            "snapshot-go.1",
            "snapshot-freeze.1",
            "snapshot-thaw.1",
        ] {
            assert!(!man(page).is_empty(), "{page}");
        }
        // The exit statuses are part of the contract: every binary's page lists them.
        for page in ["snapshot.1", "start-snapshot.1", "stop-snapshot.1"] {
            let text = man(page);
            for code in ["64", "75", "77", "80", "81"] {
                assert!(text.contains(code), "{page} lacks exit status {code}");
            }
        }
        assert!(man("snapshot-run.1").contains("in\\-place"));
        let bash =
            std::fs::read_to_string(dir.path().join("completions/bash/snapshot.bash")).unwrap();
        assert!(bash.contains("--require-snapshot") && bash.contains("cleanup"));
        let certify =
            std::fs::read_to_string(dir.path().join("certify/man/snapshot-certify.1")).unwrap();
        for option in ["\\-\\-junit", "\\-\\-tap", "\\-\\-duration", "Exit status"] {
            assert!(
                certify.contains(option),
                "snapshot-certify.1 lacks {option}"
            );
        }
        assert!(!dir.path().join("man/snapshot-certify.1").exists());
        let subcommands = Cli::command()
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .count();
        assert_eq!(written.len(), 3 + subcommands + 3 * 3 + 1);
    }
}
