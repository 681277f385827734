//! Property tests of the mountinfo parser (issue 12): mount points are names any user can
//! choose, and this tool reads them as root.
//!
//! - Any bytes, and any mutation of a valid table, parse or fail without a panic; a failure
//!   names a real line of the input.
//! - Mounts with arbitrary byte names, written as the kernel writes them (`mangle()`: space,
//!   tab, newline and backslash as `\ooo`), parse back to the same mounts.
//! - Option values escaped as `seq_show_option()` does come back byte for byte from
//!   [`Mount::super_option_unescaped`].
//! - A statmount reply turned into a [`Mount`] is what its mountinfo line parses to.

use super::*;
use crate::sys::statmount::StatMount;
use proptest::prelude::*;
use std::os::unix::ffi::OsStrExt;

use snapshot_testkit::prop::config;

/// The kernel's escaping: each byte of `set` as a backslash and three octal digits.
fn escape(bytes: &[u8], set: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if set.contains(&b) {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// A byte of a user-chosen name: anything but NUL, with the escaped bytes and lookalikes
/// of the line's syntax (`-`, `:`, digits, a literal `\040`'s pieces) made frequent.
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => 1u8..=255,
        1 => prop::sample::select(&b" \t\n\\-:0471\r/"[..]),
    ]
}

/// A path as the kernel may show it: non-empty, NUL-free, otherwise any bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(name_byte(), 1..24)
}

/// A field that the kernel never escapes and that holds no space: per-mount options,
/// optional fields.
fn word() -> impl Strategy<Value = String> {
    "[!-~]{1,16}"
}

/// A mount, and the bytes of its `fstype` and `source` (which the parser keeps as lossy
/// text, so only their lossy form can round-trip).
fn mount() -> impl Strategy<Value = (Mount, Vec<u8>, Vec<u8>)> {
    (
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        (name(), name()),
        (
            word(),
            prop::collection::vec(word().prop_filter("not the separator", |w| w != "-"), 0..4),
        ),
        // fstype: never empty; source: may be (`mount -t tmpfs "" /x`).
        (name(), prop::collection::vec(name_byte(), 0..16)),
        // The super options: as the filesystem printed them, never a newline (the rest of
        // the line is taken whole, spaces included).
        "[^\n]{0,32}",
    )
        .prop_map(
            |(
                (id, parent_id, major, minor),
                (root, mp),
                (options, optional),
                (fstype, source),
                super_options,
            )| {
                let m = Mount {
                    id,
                    parent_id,
                    major,
                    minor,
                    root: PathBuf::from(OsString::from_vec(root)),
                    mount_point: PathBuf::from(OsString::from_vec(mp)),
                    options,
                    optional,
                    fstype: String::from_utf8_lossy(&fstype).into_owned(),
                    source: String::from_utf8_lossy(&source).into_owned(),
                    super_options,
                };
                (m, fstype, source)
            },
        )
}

/// The mountinfo line of `m` as `show_mountinfo()` writes it, with the raw bytes of its
/// fstype and source.
fn render(m: &Mount, fstype: &[u8], source: &[u8]) -> Vec<u8> {
    let mut line = format!("{} {} {}:{} ", m.id, m.parent_id, m.major, m.minor).into_bytes();
    line.extend(escape(m.root.as_os_str().as_bytes(), PATH_ESCAPES));
    line.push(b' ');
    line.extend(escape(m.mount_point.as_os_str().as_bytes(), PATH_ESCAPES));
    line.push(b' ');
    line.extend_from_slice(m.options.as_bytes());
    for o in &m.optional {
        line.push(b' ');
        line.extend_from_slice(o.as_bytes());
    }
    line.extend_from_slice(b" - ");
    line.extend(escape(fstype, PATH_ESCAPES));
    line.push(b' ');
    line.extend(escape(source, PATH_ESCAPES));
    line.push(b' ');
    line.extend_from_slice(m.super_options.as_bytes());
    line
}

/// A whole table: its mounts and its text (with or without a final newline).
fn table() -> impl Strategy<Value = (Vec<Mount>, Vec<u8>)> {
    (prop::collection::vec(mount(), 0..6), any::<bool>()).prop_map(|(mounts, final_newline)| {
        let mut text = Vec::new();
        for (i, (m, fstype, source)) in mounts.iter().enumerate() {
            if i > 0 {
                text.push(b'\n');
            }
            text.extend(render(m, fstype, source));
        }
        if final_newline && !mounts.is_empty() {
            text.push(b'\n');
        }
        (mounts.into_iter().map(|(m, ..)| m).collect(), text)
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Remove(usize),
    Replace(usize, u8),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(&b" \n\\-:0"[..])];
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        ],
        1..8,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match *e {
            Edit::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Remove(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            _ => {}
        }
    }
    bytes
}

/// Parses `bytes`; on an error, checks that it names the line it came from.
fn parse_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    match MountTable::parse_bytes(bytes) {
        Ok(_) => {}
        Err(MountInfoError::Parse { line, text, .. }) => {
            let real = bytes.split(|&b| b == b'\n').nth(line - 1);
            prop_assert!(real.is_some(), "line {line} is past the input");
            prop_assert_eq!(text, String::from_utf8_lossy(real.unwrap()).into_owned());
        }
        Err(e) => prop_assert!(false, "not a parse error: {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at all: a table or a parse error naming its line, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_checked(&bytes)?;
    }

    /// Lines that look nearly right (a valid table with a few bytes inserted, removed or
    /// replaced) reach every branch of the field parser; none may panic.
    #[test]
    fn mutated_tables_never_panic((_, text) in table(), edits in edits()) {
        parse_checked(&apply(text, &edits))?;
    }

    /// Mounts with arbitrary byte names, written as the kernel writes them, parse back to
    /// exactly the same mounts (fstype and source as their lossy text).
    #[test]
    fn kernel_written_tables_round_trip((mounts, text) in table()) {
        let parsed = MountTable::parse_bytes(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.mounts, mounts);
    }

    /// A mount point's bytes come back exactly, and lookups by it find the mount.
    #[test]
    fn mount_point_bytes_are_kept((m, fstype, source) in mount()) {
        let t = MountTable::parse_bytes(&render(&m, &fstype, &source))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.mounts.len(), 1);
        prop_assert_eq!(t.mounted_at(&m.mount_point), Some(&m));
        prop_assert_eq!(t.by_id(m.id), Some(&m));
    }

    /// Unescaping the kernel's escapes gives back the original bytes, whatever they are
    /// (including text that itself looks like an escape, such as a literal `\040`).
    #[test]
    fn unescape_inverts_the_kernels_escape(bytes in prop::collection::vec(name_byte(), 0..32)) {
        prop_assert_eq!(unescape_bytes(&escape(&bytes, PATH_ESCAPES), PATH_ESCAPES), bytes.clone());
        prop_assert_eq!(unescape_bytes(&escape(&bytes, OPTION_ESCAPES), OPTION_ESCAPES), bytes);
    }

    /// `unescape_bytes` never panics, and never makes anything longer.
    #[test]
    fn unescape_of_anything(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert!(unescape_bytes(&bytes, OPTION_ESCAPES).len() <= bytes.len());
    }

    /// A per-superblock option value written as `seq_show_option()` writes it (`,`, `=`,
    /// space, tab, newline and backslash escaped; anything else raw) comes back from
    /// `super_option_unescaped` byte for byte: a btrfs `subvol=` is a path and may be any
    /// bytes. Values are UTF-8 here; `non_utf8_option_values_round_trip` below has the rest.
    #[test]
    fn escaped_option_values_round_trip(
        key in "k[a-z_]{0,8}",
        value in "[^\u{0}]{0,24}",
        (m, fstype, source) in mount(),
    ) {
        let escaped = String::from_utf8(escape(value.as_bytes(), OPTION_ESCAPES)).unwrap();
        let m = Mount { super_options: format!("rw,subvolid=5,{key}={escaped},ssd"), ..m };
        let t = MountTable::parse_bytes(&render(&m, &fstype, &source))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = t.mounts[0].super_option_unescaped(&key);
        prop_assert_eq!(back.as_deref().map(|v| v.as_bytes()), Some(value.as_bytes()));
        prop_assert_eq!(t.mounts[0].super_option("subvolid"), Some("5"));
        prop_assert_eq!(t.mounts[0].super_option("ssd"), Some(""));
    }

    /// As above, with values of any bytes (a btrfs subvolume may have a non-UTF-8 name).
    #[test]
    fn non_utf8_option_values_round_trip(
        value in prop::collection::vec(name_byte(), 0..24),
        (m, fstype, source) in mount(),
    ) {
        let mut line = render(&Mount { super_options: String::new(), ..m }, &fstype, &source);
        line.extend_from_slice(b"rw,subvolid=5,subvol=");
        line.extend(escape(&value, OPTION_ESCAPES));
        let t = MountTable::parse_bytes(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = t.mounts[0].super_option_unescaped("subvol");
        prop_assert_eq!(back.as_deref().map(|v| v.as_bytes()), Some(&value[..]));
    }

    /// The statmount path and the mountinfo path agree: for any reply `from_statmount`
    /// accepts, the mountinfo line of its mount parses back to the same mount. And no
    /// reply makes `from_statmount` panic.
    #[test]
    fn statmount_mounts_are_their_mountinfo_lines(sm in statmount_reply(), mandlock in any::<bool>()) {
        let Ok(m) = Mount::from_statmount(&sm, mandlock) else {
            return Ok(());
        };
        // The strings the kernel would escape are raw in the reply; `render` escapes them.
        let line = render(&m, m.fstype.as_bytes(), m.source.as_bytes());
        let t = MountTable::parse_bytes(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&t.mounts[0], &m);
        prop_assert_eq!(m.is_read_only(), sm.mnt_attr & attr::RDONLY != 0);
    }
}

/// A statmount reply as `from_statmount` may get it: every bit set or not, the strings
/// (unescaped, as statmount gives them) present or not, any numbers.
fn statmount_reply() -> impl Strategy<Value = StatMount> {
    let string = |empty_ok: bool| {
        prop::option::weighted(
            0.9,
            prop::collection::vec(name_byte(), usize::from(!empty_ok)..16),
        )
    };
    // mnt_opts is escaped by the kernel already: no raw space or newline.
    let opts = prop::option::of("[!-~]{0,24}".prop_map(String::into_bytes));
    (
        (prop::option::of(any::<u64>()), any::<u64>()),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            string(false),
            string(false),
            string(false),
            opts,
            string(true),
            string(true),
        ),
    )
        .prop_map(
            |(
                (supported_mask, extra_mask),
                (major, minor, sb_flags, id_old, parent_old),
                (mnt_attr, propagation, peer, master, from),
                (fs_type, mnt_root, mnt_point, mnt_opts, fs_subtype, sb_source),
            )| {
                let bit = |s: &Option<Vec<u8>>, b: u64| if s.is_some() { b } else { 0 };
                let mask = mask::SB_BASIC
                    | mask::MNT_BASIC
                    | mask::PROPAGATE_FROM
                    | bit(&fs_type, mask::FS_TYPE)
                    | bit(&mnt_root, mask::MNT_ROOT)
                    | bit(&mnt_point, mask::MNT_POINT)
                    | bit(&mnt_opts, mask::MNT_OPTS)
                    | bit(&fs_subtype, mask::FS_SUBTYPE)
                    | bit(&sb_source, mask::SB_SOURCE)
                    | if supported_mask.is_some() {
                        mask::SUPPORTED_MASK
                    } else {
                        0
                    };
                StatMount {
                    // Unknown extra bits must not matter.
                    mask: mask | (extra_mask & !0x1fff),
                    supported_mask: supported_mask.map(|s| s | STATMOUNT_MASK),
                    sb_dev_major: major,
                    sb_dev_minor: minor,
                    sb_flags,
                    mnt_id_old: id_old,
                    mnt_parent_id_old: parent_old,
                    mnt_attr,
                    mnt_propagation: propagation,
                    mnt_peer_group: peer,
                    mnt_master: master,
                    propagate_from: from,
                    fs_type,
                    mnt_root,
                    mnt_point,
                    mnt_opts,
                    fs_subtype,
                    sb_source,
                    ..StatMount::default()
                }
            },
        )
}

/// Found by `non_utf8_option_values_round_trip`: a superblock option value that is not UTF-8
/// (a btrfs subvolume named with byte 0x80) came back as U+FFFD, so btrfs could not match the
/// mount's root to its subvolume.
#[test]
fn non_utf8_subvol_regression() {
    let line = b"41 21 0:31 /\x80 /srv rw - btrfs /dev/sda rw,subvolid=256,subvol=/\x80,ssd";
    let t = MountTable::parse_bytes(line).unwrap();
    let m = &t.mounts[0];
    assert_eq!(m.super_options, r"rw,subvolid=256,subvol=/\200,ssd");
    assert_eq!(
        m.super_option_unescaped("subvol").unwrap().as_bytes(),
        b"/\x80"
    );
    assert_eq!(m.root.as_os_str().as_bytes(), b"/\x80");
    // The statmount path writes the same text.
    let sm = StatMount {
        mask: STATMOUNT_MASK,
        supported_mask: Some(STATMOUNT_MASK),
        mnt_id_old: 41,
        mnt_parent_id_old: 21,
        sb_dev_minor: 31,
        mnt_attr: attr::STRICTATIME,
        fs_type: Some(b"btrfs".to_vec()),
        mnt_root: Some(b"/\x80".to_vec()),
        mnt_point: Some(b"/srv".to_vec()),
        mnt_opts: Some(b"subvolid=256,subvol=/\x80,ssd".to_vec()),
        sb_source: Some(b"/dev/sda".to_vec()),
        ..StatMount::default()
    };
    assert_eq!(Mount::from_statmount(&sm, false).as_ref(), Ok(m));
}
