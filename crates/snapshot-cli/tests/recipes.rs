//! The README's backup recipes, run verbatim (loop tier: root): each code block marked
//! `<!-- recipe: NAME -->` in README.md runs with bash (`-euo pipefail`) in a mount namespace of
//! the test's own, where `/srv` is a btrfs filesystem and `/home` an XFS one (the freeze
//! provider: its backing file lies on btrfs), and `/var/backups`, `/mnt` and `/tmp` are
//! scratch tmpfs, so nothing the recipe writes reaches the machine; `HOME` is a directory in
//! that `/tmp` (caches, borgmatic's configuration). The real clients from Debian's packages
//! (restic, borgbackup, borgmatic, rsync, tar) do the copying. After a recipe, the test checks
//! what it restored (or what its archive holds) against the files it backed up.

mod common;

use common::*;
use rstest::rstest;
use std::path::Path;
use std::process::Command;

/// The code block after `<!-- recipe: NAME -->` in the README.
fn recipe(name: &str) -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("README.md: no ```sh block after {marker}"))
        .0;
    block.to_owned()
}

/// What the test checks after each recipe, in the recipe's namespace (not README text).
fn check(name: &str) -> &'static str {
    match name {
        "restic" => "test \"$(cat /tmp/restore/srv/www/index.html)\" = 'www v1'",
        "borg" => "test \"$(cat /tmp/restore/srv/www/index.html)\" = 'www v1'",
        "borgmatic" => {
            "borg list --short \"/var/backups/borgmatic::$(borgmatic list --json | \
             python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"archives\"][-1][\"name\"])')\" \
             | grep -qx 'mnt/view/home/alice/notes.txt'"
        }
        "rsync" => {
            "test \"$(cat /var/backups/rsync/srv/www/index.html)\" = 'www v1' && \
             test \"$(cat /var/backups/rsync/home/alice/notes.txt)\" = 'notes v1'"
        }
        "tar" => "test \"$(cat /tmp/restore/srv/www/index.html)\" = 'www v1'",
        _ => unreachable!("no check for {name}"),
    }
}

/// A run of the borgmatic recipe that crashed between its hooks: `start-snapshot` ran, the
/// backup and `stop-snapshot` never did — its view is still held when the next run starts.
const CRASHED_RUN: &str = "mkdir -p /mnt/view && start-snapshot -t /mnt/view /srv /home >/dev/null";

/// `after_crash`: first the [`CRASHED_RUN`]; the recipe must clean it up and leave nothing
/// held (`stop-snapshot` then finds nothing: 69).
#[rstest]
#[case::restic("restic", false)]
#[case::borg("borg", false)]
#[case::borgmatic("borgmatic", false)]
#[case::borgmatic_after_a_crashed_run("borgmatic", true)]
#[case::rsync("rsync", false)]
#[case::tar("tar", false)]
fn readme_recipe(#[case] name: &str, #[case] after_crash: bool) {
    if !require_privileges(&format!("readme_recipe {name}")) {
        return;
    }
    // The borgmatic recipe uses the TARGET /mnt/view, and start-snapshot's state is kept by
    // TARGET's path in the machine's runtime directory: two of them at once, even in two
    // mount namespaces, would see each other's holder.
    static MNT_VIEW: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time =
        (name == "borgmatic").then(|| MNT_VIEW.lock().unwrap_or_else(|e| e.into_inner()));
    let scratch = Scratch::new(&format!("recipe-{name}")).unwrap();
    let (crashed, held_after) = if after_crash {
        (
            CRASHED_RUN,
            "st=0; stop-snapshot -t /mnt/view >/dev/null 2>&1 || st=$?; test \"$st\" = 69",
        )
    } else {
        ("true", "true")
    };
    let base = scratch.join("base");
    let _base = LoopFs::new("recipe-base", FsKind::Btrfs, 512, &base).unwrap();
    let srv = scratch.join("srv");
    let fsrv = LoopFs::new("recipe-srv", FsKind::Btrfs, 128, &srv).unwrap();
    let home = scratch.join("home");
    let fhome = LoopFs::new_in(&base, "recipe-home", FsKind::Xfs, 0, &home).unwrap();
    fsrv.write("www/index.html", "www v1").unwrap();
    fhome.write("alice/notes.txt", "notes v1").unwrap();
    let script = scratch.join("recipe.sh");
    // The namespace: the fixtures over /srv and /home, scratch tmpfs over /var/backups, /mnt
    // and /tmp, and over the tool's runtime and state directories (the recipes use the
    // defaults: their locks and journals stay out of the machine's); then the recipe,
    // verbatim, then the test's check.
    std::fs::write(
        &script,
        format!(
            "set -euo pipefail\n\
             mount --make-rprivate /\n\
             mount --bind {srv} /srv\n\
             mount --bind {home} /home\n\
             for d in /var/backups /mnt /tmp; do mount -t tmpfs snaptest-recipe \"$d\"; done\n\
             mkdir -p -m 0700 /run/snapshot /var/lib/snapshot\n\
             for d in /run/snapshot /var/lib/snapshot; do\n\
               mount -t tmpfs -o mode=0700 snaptest-recipe \"$d\"\n\
             done\n\
             export HOME=/tmp/snaptest-home\n\
             mkdir -p \"$HOME\" && cd \"$HOME\"\n\
             {crashed}\n\
             ( set -euo pipefail\n{recipe}\n)\n\
             {check}\n\
             {held_after}\n",
            srv = s(&srv),
            home = s(&home),
            recipe = recipe(name),
            check = check(name),
        ),
    )
    .unwrap();
    let snapshot_dir = bin("snapshot").parent().unwrap().to_owned();
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        snapshot_dir.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(&script)
        .env("PATH", path)
        .env("RESTIC_REPOSITORY", "/var/backups/restic")
        .env("RESTIC_PASSWORD", "snaptest-password")
        .env("BORG_REPO", "/var/backups/borg")
        .env("BORG_PASSPHRASE", "snaptest-password")
        .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
        .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "recipe {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Nothing of the sessions is left on the fixtures: no snapshot subvolume on /srv.
    let subvolumes = snapshot_testkit::run("btrfs", &["subvolume", "list", "-a", s(&srv)]).unwrap();
    assert!(!subvolumes.contains("snapshot-"), "{subvolumes}");
    drop((fhome, fsrv));
}
