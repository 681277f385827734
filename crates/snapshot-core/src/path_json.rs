//! Paths in a record without loss: a string when UTF-8 (nearly always), else the array of
//! its bytes. A TARGET, a DIR or a writer may be named with any bytes, which serde's own
//! `PathBuf` refuses to write. Either form is read.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr<'a> {
    Text(std::borrow::Cow<'a, str>),
    Bytes(std::borrow::Cow<'a, [u8]>),
}

fn repr(p: &Path) -> Repr<'_> {
    match p.to_str() {
        Some(s) => Repr::Text(s.into()),
        None => Repr::Bytes(p.as_os_str().as_bytes().into()),
    }
}

fn path(r: Repr<'_>) -> PathBuf {
    match r {
        Repr::Text(s) => PathBuf::from(s.into_owned()),
        Repr::Bytes(b) => PathBuf::from(OsString::from_vec(b.into_owned())),
    }
}

pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    repr(p).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Repr::deserialize(d).map(path)
}

/// The same for a list of paths.
pub mod many {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|p| repr(p)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Vec::<Repr<'_>>::deserialize(d).map(|v| v.into_iter().map(path).collect())
    }
}

/// The same for an optional path (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(repr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Repr<'_>>::deserialize(d).map(|p| p.map(path))
    }
}
