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
//!
//! At start-up recovery has read and checked the whole file already; the host restores the
//! dictionary from those same bytes ([`SnapshotData::loaded`]) and then lets them go
//! ([`SnapshotData::leave_in_file`]), so the file is read once, not twice.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::{Deref, Range};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// A snapshot's bytes; cloning shares them (and their place).
#[derive(Clone)]
pub struct SnapshotData {
    len: u64,
    at: Arc<Mutex<Place>>,
}

enum Place {
    /// `len` bytes from `start` of `buf`; `stored` is where the same bytes already are on
    /// disk, if they are (`loaded`).
    Memory {
        buf: Arc<Vec<u8>>,
        start: usize,
        stored: Option<(File, u64)>,
    },
    /// `len` bytes from `offset` of this open file (it stays readable after its name is
    /// deleted, so a snapshot being sent outlives its replacement on disk).
    File { file: File, offset: u64 },
}

impl SnapshotData {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes read from `file` into `buf` (a whole file, checked), the data being `len` bytes from
    /// `start`, which is also their offset in the file: they are served from memory until
    /// `leave_in_file`, then read from the file.
    pub fn loaded(buf: Vec<u8>, start: usize, len: u64, file: File) -> SnapshotData {
        assert!(
            start as u64 + len <= buf.len() as u64,
            "loaded data {start}+{len} outside its {} B buffer",
            buf.len()
        );
        SnapshotData {
            len,
            at: Arc::new(Mutex::new(Place::Memory {
                buf: Arc::new(buf),
                start,
                stored: Some((file, start as u64)),
            })),
        }
    }

    /// Bytes `loaded` from their file go back to being read from it (the memory is freed once
    /// no reader holds it). Bytes that are only in memory stay there.
    pub fn leave_in_file(&self) {
        let mut place = self.place();
        if let Place::Memory { stored, .. } = &mut *place {
            if let Some((file, offset)) = stored.take() {
                *place = Place::File { file, offset };
            }
        }
    }

    /// Whether the bytes are served from memory (not yet spilled to a file, or `loaded` and not
    /// yet left in it).
    pub fn in_memory(&self) -> bool {
        matches!(*self.place(), Place::Memory { .. })
    }

    /// The bytes of `range` (within `0..len`).
    pub fn read(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "snapshot read {range:?} outside 0..{}",
            self.len
        );
        match &*self.place() {
            Place::Memory { buf, start, .. } => {
                Ok(buf[start + range.start as usize..start + range.end as usize].to_vec())
            }
            Place::File { file, offset } => {
                let mut buf = vec![0; (range.end - range.start) as usize];
                file.read_exact_at(&mut buf, offset + range.start)?;
                Ok(buf)
            }
        }
    }

    /// All the bytes: shared when in memory, read from the file otherwise.
    pub fn bytes(&self) -> io::Result<SnapBytes> {
        let file = match &*self.place() {
            Place::Memory { buf, start, .. } => {
                return Ok(SnapBytes {
                    buf: buf.clone(),
                    start: *start,
                    len: self.len as usize,
                })
            }
            Place::File { file, offset } => (file.try_clone()?, *offset),
        };
        let mut buf = vec![0; self.len as usize];
        file.0.read_exact_at(&mut buf, file.1)?;
        Ok(SnapBytes {
            len: buf.len(),
            buf: Arc::new(buf),
            start: 0,
        })
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

/// A snapshot's bytes as `SnapshotData::bytes` hands them out: shared with the snapshot while
/// it is in memory.
pub struct SnapBytes {
    buf: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Deref for SnapBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(v: Vec<u8>) -> SnapshotData {
        SnapshotData {
            len: v.len() as u64,
            at: Arc::new(Mutex::new(Place::Memory {
                buf: Arc::new(v),
                start: 0,
                stored: None,
            })),
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
            (Ok(a), Ok(b)) => *a == *b,
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
        assert_eq!(*kept.bytes().unwrap(), bytes[..]);
        assert_eq!(kept, SnapshotData::from(bytes));
    }

    #[test]
    fn loaded_bytes_are_served_from_memory_until_left_in_their_file() {
        // Goal: a snapshot recovery read whole is served from that buffer (the data part only,
        // at its offset) until `leave_in_file`, then from the file at the same offset in every
        // clone; bytes only in memory stay there. Method: a file whose data differs from the
        // buffer's, so each read tells where it came from.
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let mut buf = b"head".to_vec();
        buf.extend_from_slice(&data);
        buf.extend_from_slice(b"tail");
        let dir = std::env::temp_dir().join(format!("zatt-snapdata-l-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let on_disk: Vec<u8> = data.iter().map(|b| b ^ 0xff).collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(b"HEAD").unwrap();
        f.write_all(&on_disk).unwrap();
        drop(f);
        let loaded = SnapshotData::loaded(buf, 4, data.len() as u64, File::open(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        let kept = loaded.clone();
        assert!(kept.in_memory());
        assert_eq!(kept.len(), data.len() as u64);
        assert_eq!(&kept.bytes().unwrap()[..], &data[..]);
        assert_eq!(kept.read(10..20).unwrap(), data[10..20]);
        loaded.leave_in_file();
        assert!(!kept.in_memory());
        assert_eq!(&kept.bytes().unwrap()[..], &on_disk[..]);
        assert_eq!(kept.read(10..20).unwrap(), on_disk[10..20]);

        let only = SnapshotData::from(data.clone());
        only.leave_in_file();
        assert!(only.in_memory(), "nothing to leave it in");
        assert_eq!(&only.bytes().unwrap()[..], &data[..]);
    }
}
