//! A snapshot's bytes, wherever they are: in memory while a snapshot is taken, received or
//! written, and in its file once storage has it. Owns only where the bytes live; must not know
//! their meaning (the dictionary's layout is `kv`'s) nor decide when a snapshot is taken.
//!
//! Why: a node keeps its latest snapshot for as long as a follower may need it, and the
//! dictionary's bytes are as large as the dictionary itself (about 125 B a key of 16 B with a
//! 100 B value). Held in memory they would double the server's memory. So every clone of one
//! `SnapshotData` shares one place: when storage has written the snapshot's file it calls
//! [`SnapshotData::spill`], and from then on every holder (the Raft core sending chunks to a
//! follower) reads the file instead; the memory goes when the last in-memory user (the writer
//! itself) lets go. The simulator's disk never spills: its snapshots stay in memory.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// A snapshot's bytes; cloning shares them (and their place).
#[derive(Clone)]
pub struct SnapshotData {
    len: u64,
    at: Arc<Mutex<Place>>,
}

enum Place {
    Memory(Arc<Vec<u8>>),
    /// `len` bytes from `offset` of this open file (it stays readable after its name is
    /// deleted, so a snapshot being sent outlives its replacement on disk).
    File {
        file: File,
        offset: u64,
    },
}

impl SnapshotData {
    /// Bytes already in a file: `len` bytes from `offset`.
    pub fn in_file(file: File, offset: u64, len: u64) -> SnapshotData {
        SnapshotData {
            len,
            at: Arc::new(Mutex::new(Place::File { file, offset })),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes are still in memory (not yet spilled to a file).
    pub fn in_memory(&self) -> bool {
        matches!(*self.place(), Place::Memory(_))
    }

    /// The bytes of `range` (within `0..len`).
    pub fn read(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "snapshot read {range:?} outside 0..{}",
            self.len
        );
        match &*self.place() {
            Place::Memory(b) => Ok(b[range.start as usize..range.end as usize].to_vec()),
            Place::File { file, offset } => {
                let mut buf = vec![0; (range.end - range.start) as usize];
                file.read_exact_at(&mut buf, offset + range.start)?;
                Ok(buf)
            }
        }
    }

    /// All the bytes: shared when in memory, read from the file otherwise.
    pub fn bytes(&self) -> io::Result<Arc<Vec<u8>>> {
        let file = match &*self.place() {
            Place::Memory(b) => return Ok(b.clone()),
            Place::File { file, offset } => (file.try_clone()?, *offset),
        };
        let mut buf = vec![0; self.len as usize];
        file.0.read_exact_at(&mut buf, file.1)?;
        Ok(Arc::new(buf))
    }

    /// Storage wrote these bytes to `file` at `offset` and made them durable: every clone reads
    /// them from there from now on, and the memory is freed once no reader holds it.
    pub fn spill(&self, file: File, offset: u64) {
        *self.place() = Place::File { file, offset };
    }

    fn place(&self) -> std::sync::MutexGuard<'_, Place> {
        // Nothing panics while holding the lock, but a poisoned one holds a valid place anyway.
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(v: Vec<u8>) -> SnapshotData {
        SnapshotData {
            len: v.len() as u64,
            at: Arc::new(Mutex::new(Place::Memory(Arc::new(v)))),
        }
    }
}

impl From<&[u8]> for SnapshotData {
    fn from(v: &[u8]) -> SnapshotData {
        SnapshotData::from(v.to_vec())
    }
}

impl From<std::sync::Arc<[u8]>> for SnapshotData {
    fn from(v: std::sync::Arc<[u8]>) -> SnapshotData {
        SnapshotData::from(v.to_vec())
    }
}

/// Equal bytes (read from wherever they are; a read that fails compares unequal).
impl PartialEq for SnapshotData {
    fn eq(&self, other: &SnapshotData) -> bool {
        if self.len != other.len {
            return false;
        }
        if Arc::ptr_eq(&self.at, &other.at) {
            return true;
        }
        match (self.bytes(), other.bytes()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for SnapshotData {}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.in_memory() { "memory" } else { "file" };
        write!(f, "SnapshotData({} B in {place})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_spilled_snapshot_reads_the_same_bytes_from_its_file_in_every_clone() {
        // Goal: after `spill`, every clone (the core's copy included) reads from the file, and
        // reads what was in memory. Method: spill to a temporary file with a header before the
        // bytes, then read ranges through another clone.
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let data = SnapshotData::from(bytes.clone());
        let kept = data.clone();
        assert!(kept.in_memory());
        let dir = std::env::temp_dir().join(format!("zatt-snapdata-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"header").unwrap();
        f.write_all(&bytes).unwrap();
        drop(f);
        data.spill(File::open(&path).unwrap(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!kept.in_memory());
        assert_eq!(kept.read(100..1100).unwrap(), bytes[100..1100]);
        assert_eq!(*kept.bytes().unwrap(), bytes);
        assert_eq!(kept, SnapshotData::from(bytes));
    }
}
