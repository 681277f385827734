//! Paths in a record without loss: a string when UTF-8 (nearly always), else the array of
//! its bytes. A TARGET, a DIR or a writer may be named with any bytes, which serde's own
//! `PathBuf` refuses to write. Either form is read.
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Serialize)]
#[serde(untagged)]
enum Repr<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

fn repr(p: &Path) -> Repr<'_> {
    match p.to_str() {
        Some(s) => Repr::Text(s),
        None => Repr::Bytes(p.as_os_str().as_bytes()),
    }
}

/// A path read in either form; a value of neither is refused with an error that says what a
/// path looks like.
struct Read(PathBuf);

impl<'de> Deserialize<'de> for Read {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PathVisitor).map(Read)
    }
}

struct PathVisitor;

impl<'de> Visitor<'de> for PathVisitor {
    type Value = PathBuf;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a path (a string, or the array of its bytes)")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PathBuf, E> {
        Ok(PathBuf::from(s))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<PathBuf, E> {
        Ok(PathBuf::from(s))
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<PathBuf, E> {
        Ok(PathBuf::from(OsString::from_vec(b.to_vec())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathBuf, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(PathBuf::from(OsString::from_vec(bytes)))
    }
}

pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    repr(p).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Read::deserialize(d).map(|r| r.0)
}

/// The same for a list of paths.
pub mod many {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|p| repr(p)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Vec::<Read>::deserialize(d).map(|v| v.into_iter().map(|r| r.0).collect())
    }
}

/// The same for an optional path (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(repr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Read>::deserialize(d).map(|p| p.map(|r| r.0))
    }
}
