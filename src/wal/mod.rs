//! Durable bytes: the write-ahead log's segment files, the hard state, snapshots on disk, CRC
//! framing and recovery. Implements `storage::LogStorage` under the rules written there; the
//! `Syncer` (syncer.rs) runs it on its own thread with group commit. Must not know Raft roles
//! or the network: it stores what the core hands it and gives it back, checked, at start.
//! docs/ARCHITECTURE.md, "The persistence contract", says what the rest of the server relies on.
//!
//! # Data directory
//!
//! | file | what |
//! |---|---|
//! | `LOCK` | locked (`flock`, exclusive) for as long as a `Wal` is open: a second process is refused |
//! | `hardstate.0`, `hardstate.1` | the hard state, two alternating copies (below) |
//! | `{seq:016x}.wal` | log segments, `seq` counting up from 1 with no gap |
//! | `snap-{index:016x}-{term:016x}.snap` | the snapshot the log's latest snapshot record refers to |
//! | `identity` | this directory's incarnation and the incarnations pinned for peers (`identity.rs`) |
//! | `cluster-id` | the cluster id, as decimal text (written by the server at its first start) |
//! | `*.tmp` | a file being created, or a compacted segment kept for reuse; deleted at open |
//!
//! All integers are little-endian. CRC is CRC32 (IEEE, `crc32fast`).
//!
//! # Segment file
//! A 32-byte header: magic `ZATTWAL1` (8), sequence number (8, equals the name), the
//! `segment_bytes` it was created with (8), zero (4), CRC of the 28 bytes before (4). Then
//! records back to back. A segment is created under `.tmp`, preallocated to `segment_bytes` and
//! written with zeros (appends into written space sync faster: see `prepare_segment`), header
//! written, synced, renamed, and the directory synced, so a segment that exists always has a
//! good header, and the zeros after its last record read as its end (T1 below), exactly as
//! never-written preallocated space would. The next segment is prepared on a helper thread
//! once the last is half full, from a compacted segment when compaction kept one (renamed to
//! `recycled-segment.tmp`), whose blocks are already allocated (see `prepare_segment`).
//! Appends go to the last segment only. A new segment is started
//! when the next write would carry the current one past `segment_bytes` (a group is never split,
//! so a segment may exceed it by one group); the previous one is already synced by then, so
//! only the last segment can have a torn tail.
//!
//! # Record
//! | field | bytes | meaning |
//! |---|---|---|
//! | crc | 4 | CRC of every byte of the record after this field |
//! | len | 4 | payload bytes; checked against `max_record_bytes` before anything is read |
//! | type | 1 | 1 entry, 2 hard state, 3 truncate, 4 snapshot |
//! | kind | 1 | entry: `EntryKind` (0 noop, 1 normal, 2 config); snapshot: 1 if the entries after its index stay (the stored entry at its index had its term), 0 if every entry goes; others 0 |
//! | reserved | 2 | zero |
//! | term | 8 | entry: its term; hard state: current term; snapshot: its term; truncate: 0 |
//! | index | 8 | entry: its index; hard state: commit; truncate: first index discarded; snapshot: its index |
//! | payload | len | entry: its data; hard state: vote (8, 0 = none); truncate, snapshot: empty |
//!
//! Checked in this order: header present, all-zero header (= preallocated end), reserved zero,
//! type and kind known, len (type-specific, and ≤ `max_record_bytes`), record within the file,
//! CRC; then the record's meaning (table L below).
//!
//! A batch is encoded into one buffer: snapshot record (after its file is durable), a
//! truncate record if the first entry does not follow the last stored one, the entries, then
//! the hard-state record (last, so that a crash keeping a prefix never keeps a commit index
//! beyond the entries it keeps; a term or vote change is already durable in the hard-state
//! files by then, see below). The buffer goes out in one write that is durable when it returns
//! (group commit): on a zero-filled segment, a direct `O_DSYNC` write of the blocks it touches
//! (`direct`: no page cache, the write and its sync in one call); otherwise (no
//! preallocation, or a file system that refuses direct I/O) one `write` and one `fdatasync`.
//!
//! # Hard state
//! Kept twice, in `hardstate.0` and `hardstate.1`, each 56 bytes: magic `ZHS2` (4), sequence
//! number (8), term (8), vote (8, 0 = none), commit (8), lost-entries bound term (8) and index
//! (8, 0 = no bound; see below), CRC of the 52 bytes before (4). The first layout, `ZHS1` (40
//! bytes, no bound), is still read. A write overwrites the copy with the *older* sequence
//! number with the next one and syncs it, so a torn write can only damage the copy being
//! replaced; the newest valid copy wins. The files are rewritten only when the term, the vote
//! or the bound changes (rare); before that the log written so far is synced, so hard state
//! never becomes durable ahead of earlier batches, and the commit index the file holds is
//! capped at the log durable at that moment.
//! Every hard state is also a record in the log (commit changes every batch, and costs no extra
//! sync there); the record carries term, vote and commit, not the bound, which only the files
//! hold. Recovery joins the file and the records: the highest term wins, a vote within a term is
//! kept, commit is the maximum (none of them ever goes backwards), and at least the snapshot's
//! index (a snapshot holds only committed entries; compaction may have deleted the latest
//! commit record below it).
//!
//! # Lost entries
//! A torn tail (row T2) cannot be told apart from a damaged record that had been synced, and
//! so acknowledged: cutting it may lose entries this node promised to hold. Before the tail is
//! cut, `open` makes durable, in the hard-state files, a bound on what it may have held
//! (`HardState::lost`): every lost entry has a term at most the recovered term (a term is in the
//! files before any entry of it is written) and an index at most the last kept index plus the
//! number of records the damaged bytes could hold (from the cut to the last non-zero byte, at
//! least one), or the index of a snapshot file the damaged records may have referred to. The
//! raft core then withholds its vote accordingly, may lower the bound's term, and clears the
//! bound (through an ordinary hard state) once it is safe (`raft/election.rs`); a bound already
//! in the files is joined with a new one.
//!
//! # Snapshot file
//! Magic `ZATTSNP1` (8), index (8), term (8), membership length (4) and `Membership::encode`
//! bytes, data length (8) and data, CRC of everything before (4). Written as `.tmp`, synced,
//! renamed, directory synced; only then is a snapshot record appended to the log. Once that
//! record is synced, older snapshot files (lower index) are deleted, and so are segments (other than the
//! last) that hold no entry above the snapshot's index (compaction), oldest first.
//!
//! # Recovery: table of cases
//! | row | finding | action |
//! |---|---|---|
//! | H1 | no segment, and no (or no valid) hard-state file | new directory, or a crash while initialising: initialise |
//! | H2 | one hard-state copy bad or missing, the other good | use the good one; rewrite the bad one at open |
//! | H3 | both copies bad | refuse (corrupt) |
//! | H4 | no hard-state file but segments exist | refuse |
//! | H5 | no segment, but a snapshot file, or a hard state other than the initial one (sequence above 1, or any term, vote, commit or bound) | refuse: the log is missing |
//! | T1 | zeros after the last record (preallocated space) | normal end of the segment |
//! | T2 | last segment: incomplete header/record, bad CRC or garbage, and no valid record after it | torn tail: warn, cut it off (zeroed and synced before any new write) |
//! | T3 | any segment: a bad record, or zeros, followed by a valid record | refuse, naming file and offset |
//! | T4 | not the last segment: anything but zeros after the last record | refuse |
//! | L1 | segment header bad or sequence differs from its name | refuse |
//! | L2 | an entry's term below the entry before it | refuse |
//! | L3 | an entry index that skips ahead (gap) or goes back without a truncate record | refuse |
//! | L4 | truncate record: drops entries from its index on; past the end or into the snapshot | refuse |
//! | L5 | snapshot record: drops the entries it covers, or all of them (kind byte); its index going back, or a kept entry at its index with another term | refuse |
//! | L6 | a segment sequence number missing in the middle | refuse |
//! | L7 | the entries do not start right after the latest snapshot (or at 1 without one) | refuse |
//! | S1 | the latest snapshot record's file is missing, too large, or fails its checks | refuse |
//! | S2 | `.tmp` files; snapshot files older than the one the log refers to | deleted |
//! | S3 | other snapshot files the log does not refer to (newer, or no snapshot referred to) | kept, with a warning |
//!
//! T3 is strict on purpose: damage with good records after it is treated as
//! corruption even in the last segment. A power loss that persists a later page of the last,
//! unsynced write before an earlier one would also land here, and so would a torn last record
//! whose payload (an application value: any bytes) happens to hold a CRC-valid record image;
//! the operator then decides. The bad record's own length is never trusted to skip bytes: a
//! damaged length would hide good records, and refusing is safer than silently losing them.
//! Compaction may delete segments up to a later snapshot than one whose record replay meets
//! first, so the kept entries can start after that earlier snapshot: contiguity with the
//! snapshot is checked once, after replay (L7).
//!
//! A truncation is crash-safe because it is a record in the same stream as the entries that
//! replace the suffix: a crash keeps a prefix of the stream, so either the truncate record is
//! durable (and replay discards the old suffix wherever it lies) or it is not (and neither are
//! the new entries after it, which were never acknowledged).

pub mod backup;
mod direct;
pub mod format;
pub mod identity;
pub mod recovery;
pub mod syncer;
mod zero_fill;

pub use syncer::Syncer;

use crate::raft::Boot;
use crate::storage::{LogStorage, WriteBatch};
use crate::types::{HardState, LogIndex, Snapshot};
use format::*;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Exit code of a process that stopped because a write or sync failed (fail-stop).
pub const EXIT_DISK_FAILURE: i32 = 74;
/// The write buffer keeps at most this much capacity between groups.
const BUF_KEEP_BYTES: usize = 16 << 20;

/// Exit code of a process that refused to start on a corrupt data directory.
pub const EXIT_CORRUPT: i32 = 65;

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of a log segment; segments are preallocated to it.
    pub segment_bytes: u64,
    /// Largest record payload accepted on write and on read.
    pub max_record_bytes: u64,
    /// Largest snapshot data accepted on write and on read.
    pub max_snapshot_bytes: u64,
    /// Allocate each segment's blocks when it is created (fallocate) and write them with
    /// zeros; the next segment is then prepared ahead, on a helper thread.
    pub preallocate: bool,
    /// For tests of the fail-stop path only: make the disk fail on purpose.
    pub inject_fault: Option<InjectFault>,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            preallocate: true,
            inject_fault: None,
        }
    }
}

/// A disk failure to simulate (tests of the fail-stop path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectFault {
    /// The `n`-th log `fdatasync` (counting from 1) and every later one fail with EIO.
    SyncEio { nth_sync: u64 },
    /// A log or snapshot write that would carry the total bytes written past `bytes` fails
    /// with ENOSPC.
    WriteEnospc { bytes: u64 },
}

/// A failure while writing a snapshot file: the fail-stop message names the snapshot rather
/// than the log (an operator looks for different things in each case).
#[derive(Debug)]
pub struct SnapshotWriteError {
    pub index: u64,
    pub source: io::Error,
}

impl fmt::Display for SnapshotWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapshot at index {}: {}", self.index, self.source)
    }
}

impl std::error::Error for SnapshotWriteError {}

impl SnapshotWriteError {
    /// Whether `e` came from writing a snapshot file.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|r| r.is::<SnapshotWriteError>())
    }
}

/// Bytes available to this process on the file system holding `dir`, if it can tell.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct it is given; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

#[derive(Debug)]
pub enum WalError {
    /// Another `Wal` (this process or another) holds the directory.
    Locked {
        dir: PathBuf,
    },
    /// The directory holds damage that is not a torn tail: refuse to start.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    Io {
        context: String,
        source: io::Error,
    },
    /// Options that cannot work (e.g. a segment smaller than its header).
    BadOptions(String),
}

impl WalError {
    pub fn exit_code(&self) -> i32 {
        match self {
            WalError::Corrupt { .. } => EXIT_CORRUPT,
            _ => 1,
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Locked { dir } => write!(
                f,
                "data directory {} is in use by another process (LOCK is held)",
                dir.display()
            ),
            WalError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data directory: {} at byte offset {}: {}; refusing to start",
                file.display(),
                offset,
                reason
            ),
            WalError::Io { context, source } => write!(f, "{context}: {source}"),
            WalError::BadOptions(why) => write!(f, "bad WAL options: {why}"),
        }
    }
}

impl std::error::Error for WalError {}

impl From<WalError> for io::Error {
    fn from(e: WalError) -> io::Error {
        let kind = match &e {
            WalError::Io { source, .. } => source.kind(),
            WalError::Corrupt { .. } => io::ErrorKind::InvalidData,
            WalError::Locked { .. } => io::ErrorKind::WouldBlock,
            WalError::BadOptions(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Refuses, as `Wal::open` would, a directory whose `LOCK` another process holds, without
/// creating or writing anything: the server asks before it binds its ports, so that a second
/// server on the same directory is told so rather than that its port is in use.
pub fn refuse_if_locked(dir: &Path) -> Result<(), WalError> {
    let lock_path = dir.join("LOCK");
    let Ok(lock) = File::open(&lock_path) else {
        // Absent (nothing holds it) or unreadable: `open` decides.
        return Ok(());
    };
    #[allow(clippy::incompatible_msrv)]
    match lock.try_lock() {
        Err(fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        // Held by none, or not lockable here: released at once, and `open` decides.
        _ => Ok(()),
    }
}

pub fn hard_state_file_name(slot: usize) -> String {
    format!("hardstate.{slot}")
}

pub fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("snap-{index:016x}-{term:016x}.snap")
}

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (i, t) = rest.split_once('-')?;
    Some((
        u64::from_str_radix(i, 16).ok()?,
        u64::from_str_radix(t, 16).ok()?,
    ))
}

/// An `io::Error` that names the file and the operation, for the fail-stop message.
fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn werr(what: &str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    let context = format!("{what} {}", path.display());
    move |source| WalError::Io { context, source }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx(e, "sync directory", dir))
}

fn preallocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: fallocate on a valid, open file descriptor with in-range arguments.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(e);
        }
    }
    file.set_len(len)
}

/// The (index, term) of each snapshot file `list_dir` found.
fn snapshot_ids(snaps: &[(u64, u64, PathBuf)]) -> Vec<(u64, u64)> {
    snaps.iter().map(|(i, t, _)| (*i, *t)).collect()
}

/// The lost-entries bound after `replay` (see `recovery::lost_bound`), given every snapshot
/// file in the directory.
fn lost_after_replay(
    rep: &recovery::Replayed,
    snaps: &[(u64, u64, PathBuf)],
) -> Option<crate::types::LostEntries> {
    let referenced = rep
        .boot
        .snapshot
        .as_ref()
        .map(|s| (s.meta.index.0, s.meta.term.0));
    let stray: Vec<(u64, u64)> = snaps
        .iter()
        .map(|(i, t, _)| (*i, *t))
        .filter(|s| Some(*s) != referenced)
        .collect();
    recovery::lost_bound(rep, &stray)
}

/// One segment as the writer knows it.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written into it (truncate records count): compaction deletes
    /// a segment only when this is at or below the snapshot index.
    max_entry_index: Option<u64>,
    /// Bytes of header and records in it (not the preallocated rest).
    bytes: u64,
}

/// The stored log's shape, kept so that `write` can decide when a truncate record is needed
/// and a snapshot knows which entries it replaces, without reading the disk.
#[derive(Clone, Debug, Default)]
struct LogView {
    /// The last stored index (the snapshot index when nothing follows it).
    last: u64,
    /// The first stored entry's index (last + 1 when there is none).
    first: u64,
    /// (first index, term) of each run of equal terms among the stored entries.
    runs: Vec<(u64, u64)>,
    /// (index, term) of the stored snapshot, (0, 0) when there is none.
    snap: (u64, u64),
}

impl LogView {
    /// The term of the stored entry at `i`, or of the snapshot when `i` is its index.
    fn term_at(&self, i: u64) -> Option<u64> {
        if i == self.snap.0 && i > 0 {
            return Some(self.snap.1);
        }
        if i < self.first || i > self.last {
            return None;
        }
        let k = self.runs.partition_point(|r| r.0 <= i);
        self.runs.get(k.checked_sub(1)?).map(|r| r.1)
    }
    fn truncate_from(&mut self, i: u64) {
        let k = self.runs.partition_point(|r| r.0 < i);
        self.runs.truncate(k);
        self.last = i - 1;
        if self.first > i {
            self.first = i;
        }
    }
    fn push(&mut self, i: u64, term: u64) {
        if self.runs.last().map_or(true, |r| r.1 != term) {
            self.runs.push((i, term));
        }
        if self.first > self.last {
            self.first = i;
        }
        self.last = i;
    }
    fn apply_snapshot(&mut self, i: u64, term: u64) {
        if self.term_at(i) == Some(term) {
            let k = self.runs.partition_point(|r| r.0 <= i);
            // Keep the run holding i + 1 (it starts at or before i when k > 0).
            if k > 0 {
                self.runs.drain(..k - 1);
                self.runs[0].0 = i + 1;
                if self.runs.len() > 1 && self.runs[1].0 == i + 1 {
                    self.runs.remove(0);
                }
            }
            if self.last == i {
                self.runs.clear();
            }
            self.first = i + 1;
        } else {
            self.runs.clear();
            self.first = i + 1;
            self.last = i;
        }
        self.snap = (i, term);
    }
}

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Held for the lifetime of the Wal: the directory lock.
    _lock: File,
    segments: Vec<Segment>,
    /// The last segment, open for appends.
    file: File,
    /// The last segment opened for direct appends (`direct`), when its file system allows.
    direct: Option<direct::DirectAppender>,
    /// The file system refused direct I/O once: appends go through the page cache from then on.
    direct_refused: bool,
    /// Where the next bytes go in the last segment.
    write_offset: u64,
    /// Records encoded but not yet written.
    buf: Vec<u8>,
    /// Highest entry index in `buf`, for the segment it lands in.
    buf_max_entry_index: Option<u64>,
    /// Bytes written to the last segment but not yet synced.
    unsynced: bool,
    view: LogView,
    synced_last_index: u64,
    snapshot: Option<(u64, u64)>,
    snapshot_bytes: u64,
    /// A snapshot record waiting in `buf`: compact once it is synced.
    pending_compaction: Option<u64>,
    /// The hard state as the files hold it, its sequence number and the slot holding it.
    hs_file: HardState,
    hs_seq: u64,
    hs_slot: usize,
    hs_files: [File; 2],
    /// Bytes in segments (records and headers), for status.
    log_bytes: u64,
    syncs: u64,
    bytes_written: u64,
    last_fdatasync_us: u64,
    defer_compaction: bool,
    /// The next segment being prepared by a helper thread (its sequence number).
    spare: Option<(u64, SpareJob)>,
    /// A compacted segment kept, under a `.tmp` name, to become the next spare (`compact`).
    recycled: Option<PathBuf>,
}

/// A helper thread preparing a segment file under its temporary name.
type SpareJob = std::thread::JoinHandle<io::Result<(PathBuf, File)>>;

impl Drop for Wal {
    fn drop(&mut self) {
        // Not left writing into a directory its owner may be about to remove or reopen.
        if let Some((_, job)) = self.spare.take() {
            let _ = job.join();
        }
    }
}

impl Wal {
    /// Opens (creating if needed) the data directory, locks it, recovers it and cuts off a
    /// torn tail. Returns the durable state for `Raft::new`. Its snapshot, if any, is held in
    /// memory as read and checked (`SnapshotData::loaded`) until `leave_in_file` is called on
    /// it, as `Host::new` does once it has restored from it: a caller that keeps the state
    /// without building a host keeps the whole snapshot in memory.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Boot), WalError> {
        if opts.segment_bytes < (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64 {
            return Err(WalError::BadOptions(format!(
                "segment_bytes {} is too small",
                opts.segment_bytes
            )));
        }
        fs::create_dir_all(dir).map_err(werr("create directory", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(werr("open", &lock_path))?;
        #[allow(clippy::incompatible_msrv)]
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(WalError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(werr("lock", &lock_path)(e)),
        }

        let (segs, snaps) = list_dir(dir, true)?;
        let rep = recovery::replay(dir, &segs, &snapshot_ids(&snaps), &opts)?;
        let lost = lost_after_replay(&rep, &snaps);
        let mut boot = rep.boot;

        // The hard-state files: create both on a new directory (H1), or rewrite a bad copy (H2).
        let mut hs_files = Vec::with_capacity(2);
        let mut created = false;
        for slot in 0..2 {
            let path = dir.join(hard_state_file_name(slot));
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(werr("open", &path))?;
            if !rep.hard_state_valid[slot] {
                let (seq, hs) = match rep.hard_state_newest {
                    Some((s, _)) => (s.saturating_sub(1), rep.file_hard_state),
                    None => (slot as u64, HardState::default()),
                };
                f.set_len(HARD_STATE_BYTES as u64)
                    .map_err(werr("resize", &path))?;
                f.write_all_at(&encode_hard_state(seq, &hs), 0)
                    .map_err(werr("write", &path))?;
                f.sync_all().map_err(werr("sync", &path))?;
                created = true;
            }
            hs_files.push(f);
        }
        let (mut hs_seq, mut hs_slot) = rep.hard_state_newest.unwrap_or((1, 1));
        if created {
            sync_dir(dir).map_err(|e| WalError::Io {
                context: "initialise".into(),
                source: e,
            })?;
        }
        let hs_files: [File; 2] = match hs_files.try_into() {
            Ok(a) => a,
            Err(_) => unreachable!("two hard-state files were opened"),
        };
        // A new lost-entries bound is durable before the tail it stands for is cut, so a crash
        // in between cannot forget both (see "Lost entries" above).
        let mut hs_file = rep.file_hard_state;
        if lost != boot.hard_state.lost {
            let kept_last = boot
                .entries
                .last()
                .map(|e| e.index)
                .or(boot.snapshot.as_ref().map(|s| s.meta.index))
                .unwrap_or_default();
            let hs = HardState {
                commit: boot.hard_state.commit.min(kept_last),
                lost,
                ..boot.hard_state
            };
            let slot = 1 - hs_slot;
            let path = dir.join(hard_state_file_name(slot));
            hs_files[slot]
                .write_all_at(&encode_hard_state(hs_seq + 1, &hs), 0)
                .and_then(|_| hs_files[slot].sync_data())
                .map_err(werr("write", &path))?;
            hs_seq += 1;
            hs_slot = slot;
            hs_file = hs;
            boot.hard_state.lost = lost;
            if let Some(b) = lost {
                log::warn!(
                    "{}: recovery discards records that may have been acknowledged; votes \
                     are withheld from candidates behind index {} in term {} until that is safe",
                    dir.display(),
                    b.index.0,
                    b.term.0
                );
            }
        }

        // The log view.
        let mut view = LogView::default();
        let snap = boot
            .snapshot
            .as_ref()
            .map(|s| (s.meta.index.0, s.meta.term.0));
        view.last = snap.map_or(0, |s| s.0);
        view.snap = snap.unwrap_or((0, 0));
        view.first = view.last + 1;
        for e in &boot.entries {
            view.push(e.index.0, e.term.0);
        }

        // Segments: cut a torn tail (T2), or start the first segment.
        let mut segments: Vec<Segment> = rep
            .segments
            .iter()
            .map(|s| Segment {
                seq: s.seq,
                path: s.path.clone(),
                max_entry_index: s.max_entry_index,
                bytes: s.valid_end,
            })
            .collect();
        let mut log_bytes: u64 = rep.segments.iter().map(|s| s.valid_end).sum();
        let (file, write_offset) = match rep.segments.last() {
            Some(last) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(werr("open", &last.path))?;
                if let Some((off, why)) = &last.torn {
                    let len = f.metadata().map_err(werr("stat", &last.path))?.len();
                    log::warn!(
                        "torn tail in {}: {} at byte offset {}; discarding {} bytes after it",
                        last.path.display(),
                        why,
                        off,
                        len - off
                    );
                    f.set_len(*off).map_err(werr("truncate", &last.path))?;
                    if opts.preallocate && len > *off {
                        preallocate(&f, len.max(opts.segment_bytes))
                            .map_err(werr("preallocate", &last.path))?;
                    }
                    f.sync_all().map_err(werr("sync", &last.path))?;
                }
                (f, last.valid_end)
            }
            None => {
                let (seg, f) = create_segment(dir, 1, &opts).map_err(|e| WalError::Io {
                    context: "create the first segment".into(),
                    source: e,
                })?;
                segments.push(seg);
                log_bytes += SEGMENT_HEADER_BYTES as u64;
                (f, SEGMENT_HEADER_BYTES as u64)
            }
        };

        // S2/S3: snapshot files the log does not refer to. Only those older than the snapshot
        // it refers to are deleted: a newer one (or one when the log refers to none) is left
        // by a crash between its rename and its record's sync, or is the only copy of data a
        // damaged record referred to; it is kept for the operator, never silently deleted.
        let mut snapshot_bytes = 0;
        for (i, t, path) in snaps {
            if Some((i, t)) == snap {
                snapshot_bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            } else if snap.is_some_and(|(si, _)| i < si) {
                fs::remove_file(&path).map_err(werr("remove", &path))?;
            } else {
                log::warn!(
                    "{}: the log does not refer to this snapshot file, and it is not older \
                     than the snapshot the log refers to; kept (remove it by hand once it is \
                     known not to be needed)",
                    path.display()
                );
            }
        }

        let synced_last_index = view.last;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            segments,
            file,
            direct: None,
            direct_refused: false,
            write_offset,
            buf: Vec::with_capacity(1 << 20),
            buf_max_entry_index: None,
            unsynced: false,
            view,
            synced_last_index,
            snapshot: snap,
            snapshot_bytes,
            pending_compaction: None,
            hs_file,
            hs_seq,
            hs_slot,
            hs_files,
            log_bytes,
            syncs: 0,
            bytes_written: 0,
            last_fdatasync_us: 0,
            defer_compaction: false,
            spare: None,
            recycled: None,
        };
        wal.open_direct();
        Ok((wal, boot))
    }

    /// Recovers the directory read-only: no lock, no repair, nothing created or deleted
    /// (offline inspection, tests). The answer is what `open` would return, its snapshot in
    /// memory likewise.
    pub fn inspect(dir: &Path, opts: &WalOptions) -> Result<Boot, WalError> {
        let (segs, snaps) = list_dir(dir, false)?;
        let rep = recovery::replay(dir, &segs, &snapshot_ids(&snaps), opts)?;
        let lost = lost_after_replay(&rep, &snaps);
        let mut boot = rep.boot;
        boot.hard_state.lost = lost;
        Ok(boot)
    }

    /// Bytes on disk that hold state: log records, segment headers and the snapshot.
    pub fn size_bytes(&self) -> u64 {
        self.log_bytes + self.snapshot_bytes
    }

    /// How long the latest log `fdatasync` took, in microseconds.
    pub fn last_fdatasync_us(&self) -> u64 {
        self.last_fdatasync_us
    }

    /// Log `fdatasync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of log segments (for tests of compaction and for status).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The file the next append goes to, for error messages.
    pub fn current_segment_path(&self) -> &Path {
        match self.segments.last() {
            Some(s) => &s.path,
            None => &self.dir,
        }
    }

    fn write_snapshot_file(&mut self, snap: &Snapshot) -> io::Result<()> {
        let index = snap.meta.index.0;
        self.write_snapshot_file_inner(snap)
            .map_err(|source| io::Error::new(source.kind(), SnapshotWriteError { index, source }))
    }

    fn write_snapshot_file_inner(&mut self, snap: &Snapshot) -> io::Result<()> {
        if snap.data.len() > self.opts.max_snapshot_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "snapshot of {} bytes is over max_snapshot_bytes {}",
                    snap.data.len(),
                    self.opts.max_snapshot_bytes
                ),
            ));
        }
        let (i, t) = (snap.meta.index.0, snap.meta.term.0);
        if self.snapshot.is_some_and(|s| i < s.0) {
            // Replay would refuse a snapshot record going backwards (row L5).
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot at {i} is older than the stored one"),
            ));
        }
        let name = snapshot_file_name(i, t);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let data = snap.data.bytes().map_err(|e| ctx(e, "read", &tmp))?;
        let head = encode_snapshot_head(&snap.meta, data.len() as u64);
        let crc = snapshot_crc(&head, &data);
        let total = (head.len() + data.len() + crc.len()) as u64;
        if let Some(InjectFault::WriteEnospc { bytes: limit }) = self.opts.inject_fault {
            if self.bytes_written + total > limit {
                return Err(ctx(
                    io::Error::from_raw_os_error(libc::ENOSPC),
                    "write",
                    &tmp,
                ));
            }
        }
        // Opened for reading too: once durable, the snapshot's holders read its data from here.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| ctx(e, "create", &tmp))?;
        let data_at = head.len() as u64;
        let direct = zero_fill::write_parts(&tmp, &[&head, &data, &crc], SNAPSHOT_CHUNK_BYTES)
            .map_err(|e| ctx(e, "write", &tmp))?;
        if direct {
            // The last block's padding goes.
            f.set_len(total).map_err(|e| ctx(e, "truncate", &tmp))?;
        } else {
            f.write_all_at(&head, 0)
                .and_then(|()| f.write_all_at(&data, data_at))
                .and_then(|()| f.write_all_at(&crc, data_at + data.len() as u64))
                .map_err(|e| ctx(e, "write", &tmp))?;
        }
        f.sync_all().map_err(|e| ctx(e, "sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(|e| ctx(e, "rename", &tmp))?;
        sync_dir(&self.dir)?;
        drop(data);
        snap.data.spill(f, data_at);
        self.snapshot_bytes = total;
        let kind = if self.view.term_at(i) == Some(t) {
            SNAPSHOT_KEEPS_SUFFIX
        } else {
            SNAPSHOT_DISCARDS_LOG
        };
        encode_record(&mut self.buf, REC_SNAPSHOT, kind, t, i, &[]);
        self.view.apply_snapshot(i, t);
        self.snapshot = Some((i, t));
        self.pending_compaction = Some(i);
        Ok(())
    }

    fn write_hard_state_file(&mut self, hs: &HardState) -> io::Result<()> {
        let slot = 1 - self.hs_slot;
        let seq = self.hs_seq + 1;
        let path = self.dir.join(hard_state_file_name(slot));
        self.hs_files[slot]
            .write_all_at(&encode_hard_state(seq, hs), 0)
            .map_err(|e| ctx(e, "write", &path))?;
        self.hs_files[slot]
            .sync_data()
            .map_err(|e| ctx(e, "fdatasync", &path))?;
        self.hs_slot = slot;
        self.hs_seq = seq;
        self.hs_file = *hs;
        Ok(())
    }

    /// Writes what is buffered, syncs it, and then runs a compaction the buffer allowed.
    fn flush_sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let len = self.buf.len() as u64;
            if self.write_offset > SEGMENT_HEADER_BYTES as u64
                && self.write_offset + len > self.opts.segment_bytes
            {
                self.roll()?;
            }
            let path = self.current_segment_path().to_path_buf();
            if let Some(InjectFault::WriteEnospc { bytes }) = self.opts.inject_fault {
                if self.bytes_written + len > bytes {
                    return Err(ctx(
                        io::Error::from_raw_os_error(libc::ENOSPC),
                        "write",
                        &path,
                    ));
                }
            }
            let t0 = std::time::Instant::now();
            if self.append_direct(&path)? {
                self.syncs += 1;
                self.last_fdatasync_us = t0.elapsed().as_micros().min(u64::MAX as u128) as u64;
            } else {
                self.file
                    .write_all_at(&self.buf, self.write_offset)
                    .map_err(|e| ctx(e, "write", &path))?;
                self.unsynced = true;
            }
            self.write_offset += len;
            self.log_bytes += len;
            self.bytes_written += len;
            self.maybe_prepare_spare();
            if let Some(seg) = self.segments.last_mut() {
                seg.max_entry_index = seg.max_entry_index.max(self.buf_max_entry_index);
                seg.bytes += len;
            }
            self.buf_max_entry_index = None;
            self.buf.clear();
            if self.buf.capacity() > BUF_KEEP_BYTES {
                // A burst grew the buffer; do not hold on to it for the life of the process.
                self.buf.shrink_to(BUF_KEEP_BYTES);
            }
        }
        if self.unsynced {
            self.syncs += 1;
            if let Some(InjectFault::SyncEio { nth_sync }) = self.opts.inject_fault {
                if self.syncs >= nth_sync {
                    let path = self.current_segment_path().to_path_buf();
                    return Err(ctx(
                        io::Error::from_raw_os_error(libc::EIO),
                        "fdatasync",
                        &path,
                    ));
                }
            }
            let path = self.current_segment_path();
            let t0 = std::time::Instant::now();
            self.file
                .sync_data()
                .map_err(|e| ctx(e, "fdatasync", path))?;
            self.last_fdatasync_us = t0.elapsed().as_micros().min(u64::MAX as u128) as u64;
            self.unsynced = false;
        }
        self.synced_last_index = self.view.last;
        if !self.defer_compaction {
            self.run_deferred_compaction()?;
        }
        Ok(())
    }

    /// Opens the last segment for direct appends, when segments are zero-filled ahead (the
    /// zeros past the last record are what `direct` pads each write with) and the file system
    /// has not refused direct I/O before.
    fn open_direct(&mut self) {
        self.direct = None;
        if !self.prepares_ahead() || self.direct_refused {
            return;
        }
        let path = self.current_segment_path().to_path_buf();
        match direct::DirectAppender::open(&path) {
            Ok(d) => self.direct = Some(d),
            Err(e) if zero_fill::refuses(&e) => self.refuse_direct(&path, &e),
            // Out of descriptors, say: this segment is written through the page cache, and the
            // next one tries again.
            Err(e) => log::warn!(
                "{}: cannot open for direct I/O ({e}); this segment is written through the \
                 page cache",
                path.display()
            ),
        }
    }

    fn refuse_direct(&mut self, path: &Path, e: &io::Error) {
        log::info!(
            "{}: direct I/O refused ({e}); the log is written through the page cache and \
             synced with fdatasync",
            path.display()
        );
        self.direct = None;
        self.direct_refused = true;
    }

    /// Writes `buf` with direct I/O, durable on return: true. False when this segment is not
    /// written that way, or the file system refused the write as direct I/O (`EINVAL`: an
    /// alignment it needs beyond `zero_fill::ALIGN`, or `EOPNOTSUPP`); the caller then writes it through the
    /// page cache, the same bytes at the same offset, and syncs.
    fn append_direct(&mut self, path: &Path) -> io::Result<bool> {
        let Some(d) = self.direct.as_mut() else {
            return Ok(false);
        };
        match d.append(&self.file, self.write_offset, &self.buf) {
            Ok(()) => Ok(true),
            Err(e) if zero_fill::refuses(&e) => {
                self.refuse_direct(path, &e);
                Ok(false)
            }
            Err(e) => Err(ctx(e, "write", path)),
        }
    }

    /// Runs a compaction that a synced snapshot record allowed, if any. The syncer calls it
    /// after reporting the group durable: deleting segments can be slow (a TRIM per file on a
    /// `discard` mount) and nothing waits on it.
    pub fn run_deferred_compaction(&mut self) -> io::Result<()> {
        match self.pending_compaction {
            Some(i) if !self.unsynced && self.buf.is_empty() => {
                self.pending_compaction = None;
                self.compact(i)
            }
            _ => Ok(()),
        }
    }

    /// Once the last segment is half full, prepares the next one (zero-filled, see
    /// `prepare_segment`) on a helper thread, so that starting it costs the syncer a rename
    /// instead of tens of milliseconds of writing zeros, a pause every member would take at
    /// about the same index. Without `preallocate` (tests) or with a fault injected, segments
    /// are made when needed.
    fn maybe_prepare_spare(&mut self) {
        if self.spare.is_some()
            || !self.prepares_ahead()
            || self.write_offset < self.opts.segment_bytes / 2
        {
            return;
        }
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let (dir, opts, reuse) = (self.dir.clone(), self.opts.clone(), self.recycled.take());
        let kept = reuse.clone();
        match std::thread::Builder::new()
            .name("zatt-wal-spare".into())
            .spawn(move || prepare_segment(&dir, seq, &opts, reuse))
        {
            Ok(job) => self.spare = Some((seq, job)),
            // No thread: the segment is made when needed, as without preallocation.
            Err(e) => {
                self.recycled = kept;
                log::warn!("cannot start the segment preparation thread: {e}")
            }
        }
    }

    /// Segments are zero-filled ahead of need, so a compacted one can be recycled.
    fn prepares_ahead(&self) -> bool {
        self.opts.preallocate && self.opts.inject_fault.is_none()
    }

    /// Leave compaction to `run_deferred_compaction` instead of doing it inside `sync`.
    pub fn set_defer_compaction(&mut self, defer: bool) {
        self.defer_compaction = defer;
    }

    fn roll(&mut self) -> io::Result<()> {
        debug_assert!(!self.unsynced, "a segment is sealed only once synced");
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let spare = match self.spare.take() {
            Some((s, job)) => {
                let done = job
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("segment preparation panicked")));
                match done {
                    Ok(p) if s == seq => Some(p),
                    Ok(_) => None,
                    // Made again below: only a failure now, when the segment is needed,
                    // stops the server (a full disk then names this write).
                    Err(e) => {
                        log::warn!("preparing segment {s} ahead failed ({e}); making it now");
                        None
                    }
                }
            }
            None => None,
        };
        let prepared = match spare {
            Some(p) => p,
            None => prepare_segment(&self.dir, seq, &self.opts, self.recycled.take())?,
        };
        let (seg, f) = install_segment(&self.dir, seq, &self.opts, &prepared.0, prepared.1)?;
        self.segments.push(seg);
        self.file = f;
        self.open_direct();
        self.write_offset = SEGMENT_HEADER_BYTES as u64;
        self.log_bytes += SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// Deletes snapshot files older than the current one and the segments wholly at or
    /// below `index`, oldest first (so a crash part-way leaves a contiguous suffix). One
    /// such segment is instead renamed to a `.tmp` name and kept for `prepare_segment` to
    /// reuse, which a crash leaves as any other `.tmp` file: deleted at open.
    fn compact(&mut self, index: u64) -> io::Result<()> {
        for ent in fs::read_dir(&self.dir).map_err(|e| ctx(e, "list", &self.dir))? {
            let ent = ent.map_err(|e| ctx(e, "list", &self.dir))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only files older than the snapshot now referenced (see S2 in `open`).
            let older = parse_snapshot_name(name)
                .is_some_and(|(i, _)| self.snapshot.is_some_and(|(si, _)| i < si));
            if older {
                fs::remove_file(ent.path()).map_err(|e| ctx(e, "remove", &ent.path()))?;
            }
        }
        let mut removed = 0;
        while self.segments.len() > 1
            && self.segments[0]
                .max_entry_index
                .map_or(true, |m| m <= index)
        {
            let seg = self.segments.remove(0);
            if !self.recycle(&seg.path) {
                fs::remove_file(&seg.path).map_err(|e| ctx(e, "remove", &seg.path))?;
            }
            self.log_bytes = self.log_bytes.saturating_sub(seg.bytes);

            removed += 1;
        }
        sync_dir(&self.dir)?;
        if removed > 0 {
            log::info!("compacted the log up to index {index}: removed {removed} segments");
        }
        Ok(())
    }

    /// Keeps a compacted segment for reuse when none is kept yet, it has exactly the size a
    /// new one would have, and the disk has room to spare (`RECYCLE_MIN_FREE_SEGMENTS`): on a
    /// filling disk the space goes back at once, as before. False when the caller should
    /// delete it.
    fn recycle(&mut self, path: &Path) -> bool {
        let segment = self.opts.segment_bytes;
        if self.recycled.is_some()
            || !self.prepares_ahead()
            || fs::metadata(path).map_or(true, |m| m.len() != segment)
            || free_bytes(&self.dir).map_or(true, |f| {
                f < RECYCLE_MIN_FREE_SEGMENTS.saturating_mul(segment)
            })
        {
            return false;
        }
        let to = self.dir.join(RECYCLED_SEGMENT);
        match fs::rename(path, &to) {
            Ok(()) => {
                self.recycled = Some(to);
                true
            }
            Err(_) => false,
        }
    }

    fn encode_entries(&mut self, batch: &WriteBatch) -> io::Result<()> {
        let Some(first) = batch.entries.first() else {
            return Ok(());
        };
        let first = first.index.0;
        if first <= self.snapshot.map_or(0, |s| s.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("entry {first} is at or below the snapshot index"),
            ));
        }
        if first <= self.view.last {
            encode_record(&mut self.buf, REC_TRUNCATE, 0, 0, first, &[]);
            self.view.truncate_from(first);
            self.buf_max_entry_index = self.buf_max_entry_index.max(Some(first));
        } else if first != self.view.last + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("entry {first} would leave a gap after {}", self.view.last),
            ));
        }
        for e in &batch.entries {
            if e.index.0 != self.view.last + 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("entries in a batch are not contiguous at {}", e.index),
                ));
            }
            if e.data.len() as u64 > self.opts.max_record_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "entry {} of {} bytes is over max_record_bytes",
                        e.index,
                        e.data.len()
                    ),
                ));
            }
            encode_record(
                &mut self.buf,
                REC_ENTRY,
                e.kind as u8,
                e.term.0,
                e.index.0,
                &e.data,
            );
            self.view.push(e.index.0, e.term.0);
        }
        self.buf_max_entry_index = self.buf_max_entry_index.max(Some(self.view.last));
        Ok(())
    }
}

/// Segments (sorted by sequence number) and snapshot files of a data directory; `.tmp`
/// files are deleted when `remove_tmp` (row S2).
#[allow(clippy::type_complexity)]
fn list_dir(
    dir: &Path,
    remove_tmp: bool,
) -> Result<(Vec<(u64, PathBuf)>, Vec<(u64, u64, PathBuf)>), WalError> {
    let mut segs = Vec::new();
    let mut snaps = Vec::new();
    for ent in fs::read_dir(dir).map_err(werr("list", dir))? {
        let ent = ent.map_err(werr("list", dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = ent.path();
        if name.ends_with(".tmp") {
            if remove_tmp {
                fs::remove_file(&path).map_err(werr("remove", &path))?;
            }
        } else if let Some(seq) = parse_segment_name(name) {
            segs.push((seq, path));
        } else if let Some((i, t)) = parse_snapshot_name(name) {
            snaps.push((i, t, path));
        }
    }
    segs.sort();
    Ok((segs, snaps))
}

/// Creates segment `seq`: header, preallocation and sync under a temporary name, then the
/// rename and the directory sync.
fn create_segment(dir: &Path, seq: u64, opts: &WalOptions) -> io::Result<(Segment, File)> {
    let (tmp, f) = prepare_segment(dir, seq, opts, None)?;
    install_segment(dir, seq, opts, &tmp, f)
}

/// Bytes of a snapshot file written at a time (directly: `zero_fill::write_parts`).
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Bytes of zeros written (and, through the page cache, written back) at a time when a
/// segment is zero-filled: a sync of the live log waits behind at most this much of them.
const ZERO_CHUNK_BYTES: usize = 256 << 10;

/// The name a compacted segment is kept under until it is reused (a `.tmp` name: see S2).
const RECYCLED_SEGMENT: &str = "recycled-segment.tmp";

/// A compacted segment is kept for reuse only while the disk has this many segments' worth
/// free (256 MiB at the default size, the default `--min-free-disk`).
const RECYCLE_MIN_FREE_SEGMENTS: u64 = 4;

/// A new segment's file under its temporary name: space reserved (`fallocate`, so a full disk
/// is found here and not in the middle of a write), then written with zeros (directly where
/// the file system allows: `zero_fill`) and synced (here, on the helper thread, so that
/// `install_segment`'s sync on the syncer's path has only the header left to write). The
/// zeros matter for speed: `fallocate` leaves *unwritten* extents, and the first write into
/// one changes file-system metadata, so every `fdatasync` of appends into it commits the
/// file system's journal; appends into written zeros are data only. Measured on this
/// project's machine (ext4, 4 KiB appends, each followed by `fdatasync`): 166–493 µs and
/// 45 µs of CPU per sync into fallocated space, 92–109 µs and 27–31 µs into zeros.
///
/// `reuse` is a compacted segment of the same size to zero-fill instead of a new file: its
/// blocks are already allocated and written. (Before segments were written directly, its
/// pages were also still cached, and zeros over them cost 4–6 ms of CPU per 64 MiB against
/// 6–150 ms into a new file's pages; written directly, neither takes a page.)
fn prepare_segment(
    dir: &Path,
    seq: u64,
    opts: &WalOptions,
    reuse: Option<PathBuf>,
) -> io::Result<(PathBuf, File)> {
    let name = segment_file_name(seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let reused = reuse.and_then(|old| {
        let f = fs::rename(&old, &tmp)
            .and_then(|()| OpenOptions::new().read(true).write(true).open(&tmp));
        if f.is_err() {
            let _ = fs::remove_file(&old);
        }
        f.ok()
    });
    let f = match reused {
        Some(f) => f,
        None => OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| ctx(e, "create", &tmp))?,
    };
    if opts.preallocate {
        if let Err(e) = preallocate(&f, opts.segment_bytes) {
            drop(f);
            let _ = fs::remove_file(&tmp);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                let free = free_bytes(dir)
                    .map(|b| format!("{b} bytes are free"))
                    .unwrap_or_else(|| "free space unknown".into());
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "not enough disk space in {} for a write-ahead log segment: it needs \
                         {} bytes (--wal-segment-size) and {free}; free space or lower \
                         --wal-segment-size",
                        dir.display(),
                        opts.segment_bytes
                    ),
                ));
            }
            return Err(ctx(e, "preallocate", &tmp));
        }
        let len = opts.segment_bytes;
        let direct = zero_fill::direct(&tmp, len, ZERO_CHUNK_BYTES)
            .map_err(|e| ctx(e, "write zeros to", &tmp))?;
        zero_fill::buffered(&f, direct, len, ZERO_CHUNK_BYTES)
            .map_err(|e| ctx(e, "write zeros to", &tmp))?;
        f.sync_all().map_err(|e| ctx(e, "sync", &tmp))?;
    }
    Ok((tmp, f))
}

/// Puts a prepared segment in place: header, sync, rename, directory sync.
fn install_segment(
    dir: &Path,
    seq: u64,
    opts: &WalOptions,
    tmp: &Path,
    f: File,
) -> io::Result<(Segment, File)> {
    let path = dir.join(segment_file_name(seq));
    f.write_all_at(&encode_segment_header(seq, opts.segment_bytes), 0)
        .map_err(|e| ctx(e, "write", tmp))?;
    f.sync_all().map_err(|e| ctx(e, "sync", tmp))?;
    fs::rename(tmp, &path).map_err(|e| ctx(e, "rename", tmp))?;
    sync_dir(dir)?;
    Ok((
        Segment {
            seq,
            path,
            max_entry_index: None,
            bytes: SEGMENT_HEADER_BYTES as u64,
        },
        f,
    ))
}

impl LogStorage for Wal {
    fn write(&mut self, batch: &WriteBatch) -> io::Result<()> {
        if let Some(s) = &batch.snapshot {
            self.write_snapshot_file(s)?;
        }
        if let Some(hs) = &batch.hard_state {
            if hs.term != self.hs_file.term
                || hs.vote != self.hs_file.vote
                || hs.lost != self.hs_file.lost
            {
                // Earlier batches first, so the hard state is never durable ahead of them.
                self.flush_sync()?;
                // A follower's commit may point into this batch's entries, not yet durable:
                // the file keeps only what is durable now (the log record below has the rest).
                let file_hs = HardState {
                    commit: hs.commit.min(LogIndex(self.synced_last_index)),
                    ..*hs
                };
                self.write_hard_state_file(&file_hs)?;
            }
        }
        self.encode_entries(batch)?;
        if let Some(hs) = &batch.hard_state {
            // After the entries, so that a crash keeping a prefix never keeps a commit index
            // beyond the entries kept (term and vote are already in the file if they changed).
            let vote = hs.vote.map_or(0, |v| v.0);
            encode_record(
                &mut self.buf,
                REC_HARD_STATE,
                0,
                hs.term.0,
                hs.commit.0,
                &vote.to_le_bytes(),
            );
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.flush_sync()
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        let (i, t) = (snapshot.meta.index.0, snapshot.meta.term.0);
        if self.view.term_at(i) != Some(t) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("local snapshot at {i} term {t} does not match the stored log"),
            ));
        }
        self.write_snapshot_file(snapshot)?;
        self.flush_sync()
    }

    fn recover(&mut self) -> io::Result<Boot> {
        let mut segs = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            segs.push((s.seq, s.path.clone()));
        }
        let rep = recovery::replay(&self.dir, &segs, &[], &self.opts)?;
        Ok(rep.boot)
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.synced_last_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_view_follows_appends_truncation_and_snapshots() {
        // Goal: the writer's view agrees with the storage rules. Method: a short scripted
        // history checked through term_at and last.
        let mut v = LogView {
            first: 1,
            ..LogView::default()
        };
        for i in 1..=10 {
            v.push(i, if i <= 5 { 1 } else { 2 });
        }
        assert_eq!(
            (v.term_at(5), v.term_at(6), v.term_at(11)),
            (Some(1), Some(2), None)
        );
        v.truncate_from(8);
        assert_eq!((v.last, v.term_at(8)), (7, None));
        v.push(8, 3);
        assert_eq!(v.term_at(8), Some(3));
        v.apply_snapshot(6, 2);
        assert_eq!(
            (v.first, v.last, v.term_at(6), v.term_at(7), v.term_at(5)),
            (7, 8, Some(2), Some(2), None)
        );
        v.apply_snapshot(6, 2);
        assert_eq!(
            (v.first, v.last),
            (7, 8),
            "the same snapshot again keeps the log"
        );
        v.apply_snapshot(8, 4);
        assert_eq!(
            (v.first, v.last, v.term_at(8)),
            (9, 8, Some(4)),
            "another term drops all"
        );
        v.push(9, 4);
        assert_eq!((v.first, v.last, v.term_at(9)), (9, 9, Some(4)));
    }
}
