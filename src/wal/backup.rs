//! The backup file `zatt snapshot save` writes and `zattd --restore` reads: one snapshot of the
//! dictionary with what a restore needs to know about it. Written as a stream (the snapshot
//! arrives in chunks and is never held whole by the writer) into a temporary file of its own
//! next to FILE (`FILE.tmp.PID.N`, so that saves to the same FILE at once do not share it),
//! synced, then renamed, so that a file with the final name is always complete; read whole and checked
//! before anything is done with it. Must not trust a length it has not checked against the
//! bytes present and a bound.
//!
//! # Layout (integers little-endian)
//! ```text
//! magic       8   "ZATTBAK1"
//! cluster_id  u64 the cluster the snapshot was taken from
//! index       u64 the log index the snapshot stands for (the newest write's revision)
//! term        u64 the term of the entry at `index`
//! membership  u32 length, then `Membership::encode` bytes (the membership at `index`)
//! data        u64 length, then the dictionary's snapshot bytes (`kv`'s layout, ending with
//!             its own CRC-32)
//! crc32       u32 CRC-32 (IEEE) of every byte before it
//! ```

use crate::files::ReadError;
use crate::types::{Membership, MAX_MEMBERS};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const BACKUP_MAGIC: &[u8; 8] = b"ZATTBAK1";
/// Bytes around the membership and the data: magic, three u64, two lengths, the CRC.
const OVERHEAD_BYTES: u64 = 8 + 8 * 3 + 4 + 8 + 4;
/// Largest encoded membership accepted (each member: id, role, an address of at most 255 bytes).
const MAX_MEMBERSHIP_BYTES: u64 = (MAX_MEMBERS as u64) * (8 + 1 + 2 + 255) + 16;

/// What a backup says about its snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    pub cluster_id: u64,
    pub index: u64,
    pub term: u64,
    pub membership: Membership,
    /// Bytes of snapshot data.
    pub size: u64,
}

/// Temporary names handed out by this process (with its pid, unique on the machine).
static TEMP_NAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates a file next to `path` that did not exist: `path.tmp.PID.N`, skipping names taken
/// (a file left by a save that crashed under a pid since reused). Bounded: gives up after 100.
fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..100 {
        let n = TEMP_NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp = path.with_file_name(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(tmp),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("create {}: {e}", tmp.display()),
                ))
            }
        }
    }
    let last = last.unwrap_or_default();
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "create {}: 100 temporary names in a row exist",
            last.display()
        ),
    ))
}

/// Writes a backup file as its data arrives: `create`, `data` as often as needed, `finish`.
pub struct BackupWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    crc: crc32fast::Hasher,
    expected: u64,
    written: u64,
}

impl BackupWriter {
    /// Creates a new temporary file next to `path` (`path.tmp.PID.N`, never one that exists:
    /// another save's) and writes the header; the data must follow, `meta.size` bytes.
    pub fn create(path: &Path, meta: &BackupMeta) -> io::Result<BackupWriter> {
        let (file, tmp) = create_temp(path)?;
        let mut m = Vec::new();
        meta.membership.encode(&mut m);
        let mut head = Vec::with_capacity(64 + m.len());
        head.extend_from_slice(BACKUP_MAGIC);
        head.extend_from_slice(&meta.cluster_id.to_le_bytes());
        head.extend_from_slice(&meta.index.to_le_bytes());
        head.extend_from_slice(&meta.term.to_le_bytes());
        head.extend_from_slice(&(m.len() as u32).to_le_bytes());
        head.extend_from_slice(&m);
        head.extend_from_slice(&meta.size.to_le_bytes());
        let mut w = BackupWriter {
            file,
            tmp,
            path: path.to_path_buf(),
            crc: crc32fast::Hasher::new(),
            expected: meta.size,
            written: 0,
        };
        if let Err(e) = w.put(&head) {
            let _ = fs::remove_file(&w.tmp);
            return Err(e);
        }
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.file
            .write_all(b)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", self.tmp.display())))
    }

    /// Appends snapshot data.
    pub fn data(&mut self, b: &[u8]) -> io::Result<()> {
        if self.written + b.len() as u64 > self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more snapshot data than the {} bytes announced",
                    self.expected
                ),
            ));
        }
        self.written += b.len() as u64;
        self.put(b)
    }

    /// Writes the CRC, syncs, and renames the file to its final name. On any failure the
    /// partial file is removed: nothing is left that could be mistaken for a backup.
    pub fn finish(self) -> io::Result<()> {
        let tmp = self.tmp.clone();
        let done = self.complete();
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done
    }

    fn complete(mut self) -> io::Result<()> {
        if self.written != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "snapshot data ended at {} of {} bytes",
                    self.written, self.expected
                ),
            ));
        }
        let crc = self.crc.clone().finalize();
        self.file.write_all(&crc.to_le_bytes())?;
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.path).map_err(|e| {
            io::Error::new(e.kind(), format!("rename to {}: {e}", self.path.display()))
        })?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Removes the partial file (after a failed save).
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Reads and checks a whole backup file: its size against `max_data_bytes`, its CRC, its
/// layout. Returns what it says and the snapshot data. Every refusal names the file and why.
pub fn read_backup(path: &Path, max_data_bytes: u64) -> Result<(BackupMeta, Vec<u8>), String> {
    let bad = |why: &str| format!("backup {} is unusable: {why}", path.display());
    let limit = OVERHEAD_BYTES + MAX_MEMBERSHIP_BYTES + max_data_bytes;
    // A pipe or device has no size to check before reading: refused, as anything larger than
    // a backup of at most `max_data_bytes` can be, and never more read than that.
    let b = crate::files::read_bounded(path, limit).map_err(|e| match e {
        ReadError::Io(e) => format!("cannot read {}: {e}", path.display()),
        ReadError::NotRegular => bad("it is not a regular file"),
        ReadError::TooLarge {
            size: Some(len), ..
        } => bad(&format!(
            "it is {len} bytes, more than a backup of at most {max_data_bytes} bytes of data can be"
        )),
        ReadError::TooLarge { size: None, .. } => bad("it changed while being read"),
    })?;
    let len = b.len() as u64;
    let n = b.len().min(8);
    if b[..n] != BACKUP_MAGIC[..n] {
        return Err(bad("it is not a Zatt backup (bad magic)"));
    }
    if len < OVERHEAD_BYTES {
        return Err(bad("it is truncated (shorter than a backup's header)"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let mut r = Cursor { b: body, at: 8 };
    let cluster_id = r.u64().ok_or_else(|| bad("truncated header"))?;
    let index = r.u64().ok_or_else(|| bad("truncated header"))?;
    let term = r.u64().ok_or_else(|| bad("truncated header"))?;
    let mlen = r.u32().ok_or_else(|| bad("truncated header"))? as u64;
    if mlen > MAX_MEMBERSHIP_BYTES {
        return Err(bad("its membership is longer than any membership can be"));
    }
    let m = r
        .take(mlen as usize)
        .ok_or_else(|| bad("it is truncated (in the membership)"))?;
    let size = r
        .u64()
        .ok_or_else(|| bad("it is truncated (before the data)"))?;
    if size > max_data_bytes {
        return Err(bad(&format!(
            "its snapshot is {size} bytes, more than the {max_data_bytes} a server accepts"
        )));
    }
    let data_left = (body.len() - r.at) as u64;
    if size != data_left {
        return Err(bad(&format!(
            "it is truncated or has trailing bytes: {size} bytes of data announced, {data_left} present"
        )));
    }
    if crc32fast::hash(body) != want {
        return Err(bad("it fails its checksum (damaged or truncated)"));
    }
    let (membership, used) =
        Membership::decode(m).map_err(|e| bad(&format!("its membership does not decode: {e}")))?;
    if used != m.len() {
        return Err(bad("its membership has trailing bytes"));
    }
    let data = body[r.at..].to_vec();
    Ok((
        BackupMeta {
            cluster_id,
            index,
            term,
            membership,
            size,
        },
        data,
    ))
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, MemberRole, NodeId};

    fn meta(size: u64) -> BackupMeta {
        let mut m = Membership::default();
        m.members.insert(
            NodeId(1),
            Member {
                role: MemberRole::Voter,
                addr: "127.0.0.1:5254".into(),
            },
        );
        BackupMeta {
            cluster_id: 77,
            index: 12,
            term: 3,
            membership: m,
            size,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zatt-backup-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_backup_written_in_chunks_reads_back_and_every_damage_is_refused() {
        // Goal: the streamed writer and the reader agree; every truncation and every flipped
        // byte is refused with a reason; nothing is at the final name before `finish`.
        let d = dir("rt");
        let path = d.join("b.zatt");
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut w = BackupWriter::create(&path, &meta(data.len() as u64)).unwrap();
        for c in data.chunks(999) {
            w.data(c).unwrap();
        }
        assert!(!path.exists(), "the final name appears only once complete");
        w.finish().unwrap();
        let (m, got) = read_backup(&path, 1 << 20).unwrap();
        assert_eq!((m, got.as_slice()), (meta(5000), data.as_slice()));
        let whole = fs::read(&path).unwrap();
        for cut in [0, 7, 8, 40, 60, whole.len() / 2, whole.len() - 1] {
            fs::write(&path, &whole[..cut]).unwrap();
            let e = read_backup(&path, 1 << 20).unwrap_err();
            assert!(e.contains("unusable"), "cut {cut}: {e}");
        }
        for at in [9, 30, 45, whole.len() / 2, whole.len() - 2] {
            let mut b = whole.clone();
            b[at] ^= 0x40;
            fs::write(&path, &b).unwrap();
            let e = read_backup(&path, 1 << 20).unwrap_err();
            assert!(e.contains("unusable"), "flip {at}: {e}");
        }
        fs::write(&path, &whole).unwrap();
        let e = read_backup(&path, 100).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // A pipe has no size to check first: refused, not read without a bound.
        let e = read_backup(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        // Nor a FIFO, which an ordinary open would wait on for a writer.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_backup(&fifo, 1 << 20).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_short_or_long_stream_is_not_finished() {
        let d = dir("short");
        let path = d.join("b.zatt");
        let mut w = BackupWriter::create(&path, &meta(10)).unwrap();
        w.data(b"12345").unwrap();
        assert!(w.finish().is_err());
        assert!(!path.exists());
        let names = || fs::read_dir(&d).unwrap().count();
        assert_eq!(names(), 0, "a failed finish left its partial file");
        let mut w = BackupWriter::create(&path, &meta(4)).unwrap();
        assert!(w.data(b"12345").is_err());
        w.abandon();
        assert_eq!(names(), 0, "abandon left its partial file");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn saves_to_the_same_file_at_once_each_write_their_own_temporary_file() {
        // Goal: two `zatt snapshot save FILE` at once both succeed (they shared FILE.tmp: the
        // second truncated the first's, and the first rename took it from under the second),
        // and a file that happens to have a temporary-looking name is neither used nor removed.
        let d = dir("concurrent");
        let path = d.join("b.zatt");
        let bystander = d.join("b.zatt.tmp");
        fs::write(&bystander, b"not ours").unwrap();
        let a_data = vec![1u8; 3000];
        let b_data = vec![2u8; 5000];
        let mut a = BackupWriter::create(&path, &meta(a_data.len() as u64)).unwrap();
        let mut b = BackupWriter::create(&path, &meta(b_data.len() as u64)).unwrap();
        assert_ne!(a.tmp, b.tmp);
        a.data(&a_data).unwrap();
        b.data(&b_data).unwrap();
        a.finish().unwrap();
        assert_eq!(read_backup(&path, 1 << 20).unwrap().1, a_data);
        b.finish().unwrap();
        assert_eq!(read_backup(&path, 1 << 20).unwrap().1, b_data);
        assert_eq!(fs::read(&bystander).unwrap(), b"not ours");
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            2,
            "a temporary file was left"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
