//! Property tests of what the btrfs provider reads (issue 12): a mount's `subvolid=` and
//! `subvol=` superblock options (the subvolume's name is any user's choice), and the
//! journal's record of a snapshot.
//!
//! - `probe` of any mount (any fstype, any options, any paths) accepts or declines, never
//!   panics; what it accepts serialises and reads back as the same plan.
//! - A btrfs mount of a subvolume with any byte name, as the kernel shows it in mountinfo,
//!   is planned as exactly that subvolume (id, path, the mount's subdirectory of it).
//! - The provider's own escaping of `subvol=` (for nested subvolumes) is undone exactly by
//!   [`Mount::super_option_unescaped`].
//! - A record with paths of any bytes reads back equal.

use super::*;
use proptest::prelude::*;
use snapshot_core::MountTable;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use snapshot_testkit::prop::config;

/// Bytes of a subvolume or directory name: any but NUL and `/`, often the escaped ones;
/// never `.` or `..` (the kernel shows paths without them).
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => (1u8..=255).prop_filter("not a separator", |b| *b != b'/'),
            1 => prop::sample::select(&b" \t\n\\,=.@\x80\xe9"[..]),
        ],
        1..10,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

/// An absolute path of 0 to 3 such components (`/` for none).
fn abs_path() -> impl Strategy<Value = PathBuf> {
    prop::collection::vec(name_bytes(), 0..3).prop_map(|parts| {
        let mut p = b"/".to_vec();
        p.extend(parts.join(&b'/'));
        PathBuf::from(OsString::from_vec(p))
    })
}

/// The kernel's octal escape of the bytes of `set`.
fn escape(bytes: &[u8], set: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if set.contains(&b) {
            out.extend(format!("\\{b:03o}").into_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// The mountinfo line of a btrfs mount of subvolume `subvol` (id `id`) showing its
/// subdirectory `subdir`, as the kernel writes it; parsed by the tool's parser.
fn btrfs_mount(
    (major, minor): (u32, u32),
    id: u64,
    subvol: &Path,
    subdir: &Path,
    device: &str,
) -> Mount {
    let root = if subdir.as_os_str().is_empty() {
        subvol.to_path_buf()
    } else {
        subvol.join(subdir)
    };
    let mut line = format!("40 21 {major}:{minor} ").into_bytes();
    line.extend(escape(root.as_os_str().as_bytes(), b" \t\n\\"));
    line.extend(b" /srv/x rw,relatime shared:1 - btrfs ");
    line.extend(escape(device.as_bytes(), b" \t\n\\"));
    line.extend(format!(" rw,ssd,space_cache=v2,subvolid={id},subvol=").into_bytes());
    line.extend(escape(subvol.as_os_str().as_bytes(), b" \t\n\\,="));
    MountTable::parse_bytes(&line)
        .expect("a kernel line parses")
        .mounts
        .remove(0)
}

/// Any mount: mostly btrfs, with options near the ones `plan_unit` reads, or anything.
fn any_mount() -> impl Strategy<Value = Mount> {
    let opt = prop_oneof![
        "subvolid=[0-9]{1,21}",
        "subvolid=.{0,4}",
        "subvol=[^,]{0,12}",
        "(ro|rw|ssd|subvolid|subvol)",
        "[a-z]{1,6}=[^,]{0,6}",
    ];
    (
        (any::<u32>(), any::<u32>()),
        (
            abs_path(),
            prop_oneof![abs_path(), ".{0,8}".prop_map(PathBuf::from)],
        ),
        prop_oneof![4 => Just("btrfs".to_owned()), 1 => "[a-z0-9.]{0,8}"],
        prop_oneof!["/dev/[a-z0-9]{1,8}", ".{0,10}"],
        prop::collection::vec(opt, 0..6).prop_map(|o| o.join(",")),
    )
        .prop_map(
            |((major, minor), (root, mount_point), fstype, source, super_options)| Mount {
                id: 40,
                parent_id: 21,
                major,
                minor,
                root,
                mount_point,
                options: "rw".into(),
                optional: Vec::new(),
                fstype,
                source,
                super_options,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Probe of any mount: accept or decline, never a panic; an accepted plan is data that
    /// reads back as the plan (what `create` and `expected` later read).
    #[test]
    fn probe_of_any_mount(m in any_mount()) {
        match BtrfsProvider.probe(&Filesystem { mount: m.clone() }) {
            Probe::Accept { unit, data, consistent } => {
                prop_assert!(consistent);
                let (key, plan) = plan_unit(&m).map_err(TestCaseError::fail)?;
                prop_assert_eq!(unit, key);
                let back: UnitPlan = serde_json::from_value(data)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, plan);
            }
            Probe::Decline(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    /// A subvolume (any byte name) mounted whole or through a subdirectory is planned as that
    /// subvolume: unit `MAJ:MIN:ID`, its path, its id, the mount's source; and the mount's
    /// root relative to it is the subdirectory.
    #[test]
    fn subvolume_mounts_are_planned_exactly(
        dev in (any::<u32>(), any::<u32>()),
        id in any::<u64>(),
        subvol in abs_path(),
        subdir in prop::collection::vec(name_bytes(), 0..2),
        device in "/dev/[a-z0-9/]{1,12}",
    ) {
        let subdir = PathBuf::from(OsString::from_vec(subdir.join(&b'/')));
        let m = btrfs_mount(dev, id, &subvol, &subdir, &device);
        let (unit, plan) = plan_unit(&m).map_err(TestCaseError::fail)?;
        prop_assert_eq!(unit, format!("{}:{}:{id}", dev.0, dev.1));
        prop_assert_eq!(&plan.subvol, &subvol);
        prop_assert_eq!(plan.subvol_id, id);
        prop_assert_eq!(&plan.device, Path::new(&device));
        prop_assert_eq!(subdir_of(&m.root, &plan.subvol).map_err(TestCaseError::fail)?, subdir);
        // And through probe, as the session gets it.
        match BtrfsProvider.probe(&Filesystem { mount: m }) {
            Probe::Accept { data, .. } => {
                let back: UnitPlan = serde_json::from_value(data)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, plan);
            }
            Probe::Decline(r) => prop_assert!(false, "declined: {}", r),
        }
    }

    /// `escape_option` (the `subvol=` of the synthetic mounts of nested subvolumes) is undone
    /// exactly by `super_option_unescaped`, and never breaks the option list apart.
    #[test]
    fn escape_option_is_undone_by_the_parser(p in abs_path(), id in any::<u64>()) {
        let escaped = escape_option(&p);
        prop_assert!(!escaped.contains([',', ' ', '\t', '\n']));
        let m = Mount {
            id: 1,
            parent_id: 1,
            major: 0,
            minor: 31,
            root: p.clone(),
            mount_point: "/x".into(),
            options: "rw".into(),
            optional: Vec::new(),
            fstype: "btrfs".into(),
            source: "/dev/sda".into(),
            super_options: format!("rw,subvolid={id},subvol={escaped},ssd"),
        };
        prop_assert_eq!(m.super_option_unescaped("subvol"), Some(p.clone().into_os_string()));
        let id = id.to_string();
        prop_assert_eq!(m.super_option("subvolid"), Some(id.as_str()));
        let (_, plan) = plan_unit(&Mount { source: "/dev/sda".into(), ..m })
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(plan.subvol, p);
    }

    /// A record with any paths (a subvolume of any name) reads back equal, and a record whose
    /// snapshot is not the entry's own name is refused.
    #[test]
    fn records_round_trip(
        origin_subvol in abs_path(),
        staging in abs_path(),
        device in abs_path(),
        fsid in prop::option::of("[0-9a-f-]{36}"),
        ids in (prop::option::of(any::<u64>()), any::<u64>()),
        name in "snapshot-[0-9a-f]{8}-[0-9]{1,2}",
        other in ".{0,20}",
    ) {
        let d = SnapshotData {
            fsid,
            device,
            staging,
            snapshot: format!(".{name}"),
            snapshot_id: ids.0,
            origin_subvol,
            origin_subvol_id: ids.1,
        };
        let data = serde_json::to_value(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let c = Created { provider: "btrfs".into(), unit: "u".into(), name, consistent: true, data };
        let text = serde_json::to_string(&c).unwrap();
        let back: Created = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(SnapshotData::from_created(&back).map_err(|e| TestCaseError::fail(e.to_string()))?, d);
        let renamed = Created { name: other.clone(), ..back };
        let accepted = SnapshotData::from_created(&renamed).is_ok();
        prop_assert_eq!(accepted, other == c.name);
    }
}

/// Found by `subvolume_mounts_are_planned_exactly` (with the mountinfo parser now keeping
/// non-UTF-8 option bytes): a subvolume named with byte 0x80 made `probe` panic ("a plain
/// struct serialises"); by `escape_option_is_undone_by_the_parser`: `escape_option` turned
/// that byte into U+FFFD; by `records_round_trip`: such a record could not be written.
#[test]
fn non_utf8_subvolume_regression() {
    let m = btrfs_mount(
        (0, 31),
        256,
        Path::new("/\u{e9}"),
        Path::new(""),
        "/dev/sda",
    );
    let m = Mount {
        root: PathBuf::from(OsString::from_vec(b"/\x80".to_vec())),
        super_options: "rw,subvolid=256,subvol=/\\200".into(),
        ..m
    };
    match BtrfsProvider.probe(&Filesystem { mount: m }) {
        Probe::Accept { data, .. } => {
            let plan: UnitPlan = serde_json::from_value(data).unwrap();
            assert_eq!(plan.subvol.as_os_str().as_bytes(), b"/\x80");
        }
        Probe::Decline(r) => panic!("declined: {r}"),
    }
    assert_eq!(
        escape_option(Path::new(OsStr::from_bytes(b"/a b,\x80\xc3\xa9"))),
        "/a\\040b\\054\\200\u{e9}"
    );
}
