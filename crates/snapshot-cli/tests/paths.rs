//! Attacks on the paths a session acts on (README "Security"), each beside its positive
//! control: an unprivileged user (uid 65534) who owns the directory holding TARGET swaps TARGET
//! for a symlink while the writers are frozen; a user who owns a backed-up directory swaps it
//! for a symlink to a root-only directory before the snapshot instant, with the protocol and
//! with `snapshot run --in-place`. The swap is done by the user, from a writer hook (run as
//! root, it drops to the user with `setpriv`), so it lands exactly in the frozen window.

mod common;

use common::*;
use snapshot_testkit::set_mode;
use std::path::Path;

const USER: u32 = 65534;

fn chown_user(p: &Path) {
    std::os::unix::fs::chown(p, Some(USER), Some(USER)).unwrap();
}

/// A writer directory holding one hook that, on `freeze`, runs `swap` as the user.
fn hook_as_user(dir: &Path, swap: &str) {
    std::fs::create_dir(dir).unwrap();
    set_mode(dir, 0o755);
    script(
        &dir.join("10-swap"),
        &format!(
            "[ \"$1\" = freeze ] || exit 0\n\
             exec setpriv --reuid={USER} --regid={USER} --clear-groups sh -c '{swap}'"
        ),
    );
}

/// A scratch directory the user can reach (the attacker needs to traverse it).
fn reachable_scratch(name: &str) -> Scratch {
    let scratch = Scratch::new(name).unwrap();
    set_mode(scratch.path(), 0o755);
    scratch
}

/// A root-only directory holding a secret.
fn secret_dir(scratch: &Scratch) -> std::path::PathBuf {
    let secret = scratch.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("shadow"), "root's secret\n").unwrap();
    set_mode(&secret, 0o700);
    secret
}

fn assert_untouched(secret: &Path, before: u64) {
    assert_eq!(
        snapshot_core::sys::mount_id(secret).unwrap(),
        before,
        "something was mounted on {secret:?}"
    );
    assert_eq!(
        std::fs::read_to_string(secret.join("shadow")).unwrap(),
        "root's secret\n"
    );
}

/// TARGET lies in a directory the user owns; during the frozen window the user renames it away
/// and puts a symlink to a root-only directory in its place. The session must mount nothing on
/// the symlink's target, nothing on the renamed directory, name the target, exit 73 and leave
/// no mount anywhere. Positive control: the same hook renaming something else.
#[test]
fn target_swapped_for_a_symlink_while_frozen() {
    if !require_privileges("target_swapped_for_a_symlink_while_frozen") {
        return;
    }
    for attack in [false, true] {
        let scratch = reachable_scratch("swap-target");
        let m = scratch.join("m");
        let fs = LoopFs::new("swap-target", FsKind::Btrfs, 128, &m).unwrap();
        fs.write("f", "v1\n").unwrap();
        let secret = secret_dir(&scratch);
        let secret_mount = snapshot_core::sys::mount_id(&secret).unwrap();
        let home = scratch.join("home");
        std::fs::create_dir(&home).unwrap();
        chown_user(&home);
        let target = home.join("T");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(home.join("other")).unwrap();
        let swap = if attack {
            format!(
                "mv {t} {t}.moved && ln -s {s} {t}",
                t = s(&target),
                s = s(&secret)
            )
        } else {
            format!("mv {h}/other {h}/other.moved", h = s(&home))
        };
        hook_as_user(&scratch.join("hooks"), &swap);
        let rt = scratch.join("run");
        let hooks = scratch.join("hooks");
        let mut run = Running::start(&["--writers-dir", s(&hooks), "-t", s(&target), s(&m)], &rt);
        let ready = run.ready();
        if !attack {
            assert_eq!(ready, "done\n", "positive control");
            assert_eq!(
                std::fs::read_to_string(in_view(&target, &m).join("f")).unwrap(),
                "v1\n"
            );
            let (status, stderr) = run.finish();
            assert_eq!(status.code(), Some(0), "{stderr}");
            assert_clean(&target);
            continue;
        }
        assert_eq!(ready, "", "the session must not get ready");
        let (status, stderr) = run.finish();
        assert_eq!(status.code(), Some(73), "{stderr}");
        assert!(
            stderr.contains("changed during the session") && stderr.contains(s(&target)),
            "{stderr}"
        );
        assert_untouched(&secret, secret_mount);
        let moved = home.join("T.moved");
        assert_eq!(mounts_under(scratch.path()), vec![m.clone()], "mounts left");
        assert!(std::fs::read_dir(&moved).unwrap().next().is_none());
        assert_no_journal(&rt);
    }
}

/// A DIR inside a btrfs filesystem is a plain directory its user owns (as is its parent);
/// during the frozen window, before the snapshot instant, the user replaces it with a symlink
/// to a root-only directory. The snapshot then holds the symlink: following it would show the
/// live secret, outside the snapshot. The session refuses (73), naming the DIR, and leaves
/// nothing; with `run --in-place` the command never runs. Positive control: no swap.
#[test]
fn dir_swapped_for_a_symlink_before_the_snapshot() {
    if !require_privileges("dir_swapped_for_a_symlink_before_the_snapshot") {
        return;
    }
    for (attack, in_place) in [(false, false), (true, false), (false, true), (true, true)] {
        let scratch = reachable_scratch("swap-dir");
        let m = scratch.join("m");
        let _fs = LoopFs::new("swap-dir", FsKind::Btrfs, 128, &m).unwrap();
        set_mode(&m, 0o755);
        let secret = secret_dir(&scratch);
        let secret_mount = snapshot_core::sys::mount_id(&secret).unwrap();
        let users = m.join("users");
        let dir = users.join("alice");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes"), "alice's notes\n").unwrap();
        chown_user(&users);
        chown_user(&dir);
        let swap = if attack {
            format!(
                "mv {d} {d}.old && ln -s {s} {d}",
                d = s(&dir),
                s = s(&secret)
            )
        } else {
            "true".to_owned()
        };
        let hooks = scratch.join("hooks");
        hook_as_user(&hooks, &swap);
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let rt = scratch.join("run");
        let shown = scratch.join("shown");
        let common = ["--writers-dir", s(&hooks), "-t", s(&target)];
        let (status, stderr) = if in_place {
            let cmd = format!(
                "cat {d}/notes {d}/shadow > {out} 2>&1; true",
                d = s(&dir),
                out = s(&shown)
            );
            let out = std::process::Command::new(bin("snapshot"))
                .arg("run")
                .arg("--in-place")
                .args(common)
                .args(["--runtime-dir", s(&rt), "--state-dir", s(&rt.join("state"))])
                .args([s(&dir), "--", "sh", "-c", &cmd])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        } else {
            let mut run = Running::start(&[&common[..], &[s(&dir)]].concat(), &rt);
            let ready = run.ready();
            if ready == "done\n" {
                let view = in_view(&target, &dir);
                let seen = std::fs::read_to_string(view.join("notes")).unwrap_or_default()
                    + &std::fs::read_to_string(view.join("shadow")).unwrap_or_default();
                std::fs::write(&shown, seen).unwrap();
            }
            run.finish()
        };
        let seen = std::fs::read_to_string(&shown).unwrap_or_default();
        if !attack {
            assert_eq!(status.code(), Some(0), "positive control: {stderr}");
            assert!(seen.contains("alice's notes"), "{seen}");
        } else {
            assert_eq!(status.code(), Some(73), "{stderr}");
            assert!(
                stderr.contains(&format!("DIR {:?} changed during the session", dir)),
                "{stderr}"
            );
            assert!(seen.is_empty(), "the view showed {seen:?}");
        }
        assert!(!seen.contains("root's secret"), "the secret leaked: {seen}");
        assert_untouched(&secret, secret_mount);
        assert_clean(&target);
        assert_eq!(mounts_under(scratch.path()), vec![m.clone()], "mounts left");
        assert_no_journal(&rt);
    }
}

/// A DIR that is a bind mount of a directory deep inside a btrfs filesystem (its mount root is
/// `/users/alice/sub/x`): the view clones that directory out of the snapshot, looked up beneath
/// the snapshot's root. During the frozen window the user who owns `sub`'s parent replaces
/// `sub` with a symlink to a root-only directory holding an `x` of its own; the snapshot then
/// holds the symlink, and following it would mount the live secret in the view. The session
/// refuses (73) saying the path changed, and leaves nothing. Positive control: no swap.
#[test]
fn bind_mount_root_swapped_for_a_symlink_inside_the_snapshot() {
    if !require_privileges("bind_mount_root_swapped_for_a_symlink_inside_the_snapshot") {
        return;
    }
    for attack in [false, true] {
        let scratch = reachable_scratch("swap-root");
        let m = scratch.join("m");
        let _fs = LoopFs::new("swap-root", FsKind::Btrfs, 128, &m).unwrap();
        set_mode(&m, 0o755);
        let alice = m.join("users/alice");
        let x = alice.join("sub/x");
        std::fs::create_dir_all(&x).unwrap();
        std::fs::write(x.join("notes"), "alice's notes\n").unwrap();
        chown_user(&alice);
        chown_user(&alice.join("sub"));
        let secret_parent = scratch.join("secret-parent");
        std::fs::create_dir_all(secret_parent.join("x")).unwrap();
        std::fs::write(secret_parent.join("x/notes"), "root's secret\n").unwrap();
        set_mode(&secret_parent, 0o700);
        let srv = scratch.join("srv");
        std::fs::create_dir(&srv).unwrap();
        let _bind = snapshot_testkit::TestMount::new(&["--bind", s(&x)], &srv).unwrap();
        let swap = if attack {
            format!(
                "mv {a}/sub {a}/sub.old && ln -s {p} {a}/sub",
                a = s(&alice),
                p = s(&secret_parent)
            )
        } else {
            "true".to_owned()
        };
        let hooks = scratch.join("hooks");
        hook_as_user(&hooks, &swap);
        let target = scratch.join("T");
        std::fs::create_dir(&target).unwrap();
        let rt = scratch.join("run");
        let mut run = Running::start(
            &["--writers-dir", s(&hooks), "-t", s(&target), s(&srv)],
            &rt,
        );
        let ready = run.ready();
        let seen = if ready == "done\n" {
            std::fs::read_to_string(in_view(&target, &srv).join("notes")).unwrap_or_default()
        } else {
            String::new()
        };
        let (status, stderr) = run.finish();
        if attack {
            assert_eq!(status.code(), Some(73), "{stderr}");
            assert!(
                stderr.contains("changed during the session: a symlink is on its path"),
                "{stderr}"
            );
            assert!(seen.is_empty(), "the view showed {seen:?}");
        } else {
            assert_eq!(status.code(), Some(0), "positive control: {stderr}");
            assert_eq!(seen, "alice's notes\n");
        }
        assert!(!seen.contains("root's secret"), "the secret leaked: {seen}");
        assert_clean(&target);
        assert_no_journal(&rt);
    }
}
