//! Property tests of the statmount(2) reply decoder [`StatMount::parse`] (issue 12): the
//! kernel's buffer holds user-chosen names (mount points, sources) behind offsets that are
//! only as good as the kernel that wrote them.
//!
//! - Any buffer, and any valid reply with its size and offsets corrupted, decodes or fails
//!   without a panic.
//! - A reply laid out as the kernel lays it out (fixed part, then the NUL-terminated string
//!   table, then whatever the caller's buffer held after it) decodes to the values it holds.

use super::*;
use proptest::prelude::*;

use snapshot_testkit::prop::config;

/// The string fields: their mask bit and the offset of their `__u32` in the fixed part.
const STRINGS: [(u64, usize); 6] = [
    (mask::FS_TYPE, OFF_FS_TYPE),
    (mask::MNT_ROOT, OFF_MNT_ROOT),
    (mask::MNT_POINT, OFF_MNT_POINT),
    (mask::MNT_OPTS, OFF_MNT_OPTS),
    (mask::FS_SUBTYPE, OFF_FS_SUBTYPE),
    (mask::SB_SOURCE, OFF_SB_SOURCE),
];

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The reply the kernel would write for `sm` (whose strings are present exactly when their
/// bit is in `sm.mask`), the fixed part's unused bytes set to `filler`, followed by `tail`
/// (the rest of the caller's buffer, which the kernel leaves alone).
fn layout(sm: &StatMount, filler: u8, tail: &[u8]) -> Vec<u8> {
    let mut buf = vec![filler; STATMOUNT_SIZE];
    let mut table = Vec::new();
    let strings = [
        &sm.fs_type,
        &sm.mnt_root,
        &sm.mnt_point,
        &sm.mnt_opts,
        &sm.fs_subtype,
        &sm.sb_source,
    ];
    // An absent string's offset is whatever the buffer held.
    for ((_, field), s) in STRINGS.iter().zip(strings) {
        if let Some(s) = s {
            put_u32(&mut buf, *field, table.len() as u32);
            table.extend_from_slice(s);
            table.push(0);
        }
    }
    put_u64(&mut buf, OFF_MASK, sm.mask);
    put_u32(&mut buf, OFF_SB_DEV_MAJOR, sm.sb_dev_major);
    put_u32(&mut buf, OFF_SB_DEV_MINOR, sm.sb_dev_minor);
    put_u64(&mut buf, OFF_SB_MAGIC, sm.sb_magic);
    put_u32(&mut buf, OFF_SB_FLAGS, sm.sb_flags);
    put_u64(&mut buf, OFF_MNT_ID, sm.mnt_id);
    put_u64(&mut buf, OFF_MNT_PARENT_ID, sm.mnt_parent_id);
    put_u32(&mut buf, OFF_MNT_ID_OLD, sm.mnt_id_old);
    put_u32(&mut buf, OFF_MNT_PARENT_ID_OLD, sm.mnt_parent_id_old);
    put_u64(&mut buf, OFF_MNT_ATTR, sm.mnt_attr);
    put_u64(&mut buf, OFF_MNT_PROPAGATION, sm.mnt_propagation);
    put_u64(&mut buf, OFF_MNT_PEER_GROUP, sm.mnt_peer_group);
    put_u64(&mut buf, OFF_MNT_MASTER, sm.mnt_master);
    put_u64(&mut buf, OFF_PROPAGATE_FROM, sm.propagate_from);
    if let Some(s) = sm.supported_mask {
        put_u64(&mut buf, OFF_SUPPORTED_MASK, s);
    }
    put_u32(&mut buf, OFF_SIZE, (STATMOUNT_SIZE + table.len()) as u32);
    buf.extend_from_slice(&table);
    buf.extend_from_slice(tail);
    buf
}

/// A reply's content: any numbers, any mask, strings of any bytes but NUL exactly for the
/// string bits in the mask.
fn reply() -> impl Strategy<Value = StatMount> {
    let string = prop::collection::vec(1u8..=255, 0..24);
    (
        any::<u64>(),
        any::<u64>(),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        prop::array::uniform6(string),
    )
        .prop_map(
            |(
                mask,
                supported,
                (major, minor, magic, sb_flags),
                (id, parent, id_old, parent_old),
                (attr, propagation, peer, master, from),
                strings,
            )| {
                let [fs_type, mnt_root, mnt_point, mnt_opts, fs_subtype, sb_source] =
                    strings.map(Some);
                let take = |bit: u64, s: Option<Vec<u8>>| s.filter(|_| mask & bit != 0);
                StatMount {
                    mask,
                    supported_mask: (mask & mask::SUPPORTED_MASK != 0).then_some(supported),
                    sb_dev_major: major,
                    sb_dev_minor: minor,
                    sb_magic: magic,
                    sb_flags,
                    mnt_id: id,
                    mnt_parent_id: parent,
                    mnt_id_old: id_old,
                    mnt_parent_id_old: parent_old,
                    mnt_attr: attr,
                    mnt_propagation: propagation,
                    mnt_peer_group: peer,
                    mnt_master: master,
                    propagate_from: from,
                    fs_type: take(mask::FS_TYPE, fs_type),
                    mnt_root: take(mask::MNT_ROOT, mnt_root),
                    mnt_point: take(mask::MNT_POINT, mnt_point),
                    mnt_opts: take(mask::MNT_OPTS, mnt_opts),
                    fs_subtype: take(mask::FS_SUBTYPE, fs_subtype),
                    sb_source: take(mask::SB_SOURCE, sb_source),
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, of any length around the fixed part's: a reply or an error, never a
    /// panic.
    #[test]
    fn arbitrary_buffers_never_panic(buf in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = StatMount::parse(&buf);
    }

    /// Any buffer whose size field is plausible (so that decoding goes past the first
    /// check) and whose string offsets point anywhere, near the table or far from it.
    #[test]
    fn arbitrary_offsets_never_panic(
        mut buf in prop::collection::vec(any::<u8>(), STATMOUNT_SIZE..STATMOUNT_SIZE + 96),
        size_delta in -4i64..100,
        mask in any::<u64>(),
        offsets in prop::array::uniform6(prop_oneof![0u32..128, any::<u32>()]),
    ) {
        let size = (STATMOUNT_SIZE as i64 + size_delta) as u32;
        put_u32(&mut buf, OFF_SIZE, size);
        put_u64(&mut buf, OFF_MASK, mask);
        for ((_, field), off) in STRINGS.iter().zip(offsets) {
            put_u32(&mut buf, *field, off);
        }
        if let Ok(sm) = StatMount::parse(&buf) {
            // Whatever it decoded lies inside the reply's own size.
            let table = size as usize - STATMOUNT_SIZE;
            for s in [&sm.fs_type, &sm.mnt_root, &sm.mnt_point, &sm.mnt_opts, &sm.fs_subtype, &sm.sb_source]
                .into_iter()
                .flatten()
            {
                prop_assert!(s.len() < table);
                prop_assert!(!s.contains(&0));
            }
            prop_assert_eq!(sm.mask, mask);
        }
    }

    /// A reply laid out as the kernel lays it out decodes to exactly what it holds, whatever
    /// follows it in the buffer and whatever the fixed part's spare bytes hold.
    #[test]
    fn kernel_layout_round_trips(
        sm in reply(),
        filler in any::<u8>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let buf = layout(&sm, filler, &tail);
        let back = StatMount::parse(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, sm);
    }

    /// A valid reply with its size cut short, or a string offset moved, is decoded without
    /// a panic; a size past the buffer or inside the fixed part is refused.
    #[test]
    fn corrupted_replies_never_panic(
        sm in reply(),
        tail in prop::collection::vec(any::<u8>(), 0..16),
        cut in any::<prop::sample::Index>(),
        field in 0..STRINGS.len(),
        offset in any::<u32>(),
    ) {
        let buf = layout(&sm, 0, &tail);
        // The size field set anywhere from 0 to past the buffer.
        let mut b = buf.clone();
        let size = cut.index(buf.len() + 8);
        put_u32(&mut b, OFF_SIZE, size as u32);
        let r = StatMount::parse(&b);
        if size < STATMOUNT_SIZE || size > buf.len() {
            prop_assert!(r.is_err());
        }
        // One string offset set anywhere.
        let mut b = buf;
        put_u32(&mut b, STRINGS[field].1, offset);
        let _ = StatMount::parse(&b);
    }
}
