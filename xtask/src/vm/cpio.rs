//! A minimal writer of the `newc` cpio format, which the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Deterministic: fixed inode
//! numbers, owner root, mtime 0.

#[derive(Debug, Default)]
pub struct Archive {
    out: Vec<u8>,
    ino: u32,
}

impl Archive {
    pub fn dir(&mut self, path: &str) {
        self.entry(path, 0o040755, 2, b"");
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, 0o100000 | (mode & 0o7777), 1, data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120777, 1, target.as_bytes());
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, b"");
        self.out
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) {
        self.ino += 1;
        let name = path.trim_start_matches('/');
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).expect("initramfs entries are far below 4 GiB"),
            0,
            0,
            0,
            0,
            u32::try_from(namesize).expect("short names"),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() & 3 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_ends_with_trailer() {
        let mut a = Archive::default();
        a.dir("/bin");
        a.file("/init", 0o755, b"#!/bin/sh\n");
        a.symlink("/bin/sh", "busybox");
        let bytes = a.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // First entry: name "bin" (namesize 4) right after the 110-byte header.
        assert_eq!(&bytes[110..114], b"bin\0");
        let trailer = bytes
            .windows(10)
            .position(|w| w == b"TRAILER!!!")
            .expect("trailer");
        assert!(trailer > 110 * 3);
        // The file's mode field: regular file 0755.
        let second = bytes
            .windows(6)
            .skip(1)
            .position(|w| w == b"070701")
            .unwrap()
            + 1;
        assert_eq!(&bytes[second + 14..second + 22], b"000081ed");
    }
}
