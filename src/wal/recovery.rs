//! Recovery: reads a data directory back into the raft core's `Boot`, deciding for every
//! irregularity whether it is a torn tail (the expected debris of a crash: cut it off, warn) or
//! corruption (refuse to start, naming the file and the byte offset). The table of cases is at
//! the top of `wal/mod.rs`; each case below cites its row. Reads only: the repair of a torn
//! tail is done by `Wal::open`, which owns the files.

use super::format::*;
use super::{snapshot_file_name, WalError, WalOptions};
use crate::files::ReadError;
use crate::raft::Boot;
use crate::types::{
    Entry, EntryKind, HardState, LogIndex, LostEntries, NodeId, Snapshot, SnapshotData, Term,
};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read from a segment at a time during replay.
const READ_CHUNK_BYTES: usize = 8 << 20;
/// Bytes of CRC work the search for a valid record after a bad one may spend before it gives
/// up and calls the segment corrupt (bounds recovery time on hostile files).
const SCAN_CRC_BUDGET_BYTES: u64 = 256 << 20;

/// What replay learned about one segment.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    pub seq: u64,
    pub path: PathBuf,
    /// Offset just past the last good record: where appends resume.
    pub valid_end: u64,
    /// The highest entry index any record in this segment carries.
    pub max_entry_index: Option<u64>,
    /// A torn tail to cut off (last segment only): (offset, reason).
    pub torn: Option<(u64, String)>,
    /// With `torn`: the offset just past the last non-zero byte of the segment, so the damaged
    /// span is `torn.0..damage_end`.
    pub damage_end: u64,
}

pub struct Replayed {
    pub boot: Boot,
    pub segments: Vec<SegmentScan>,
    /// The hard state as the two files hold it (the log's records may be newer).
    pub file_hard_state: HardState,
    /// (sequence number, file slot 0/1) of the newest valid hard-state file, or None if the
    /// files are missing (a brand-new directory).
    pub hard_state_newest: Option<(u64, usize)>,
    pub hard_state_valid: [bool; 2],
}

/// Combines two hard states that were each durable at some time: terms only grow, a vote is
/// never changed within a term, commit never goes backwards; so the join is the newest. A
/// lost-entries bound is kept if either holds one (only the files carry it, and they are
/// rewritten when it is cleared, so this never resurrects a cleared bound).
pub fn merge_hard_state(a: HardState, b: HardState) -> HardState {
    let commit = a.commit.max(b.commit);
    let lost = LostEntries::join(a.lost, b.lost);
    if b.term > a.term {
        HardState { commit, lost, ..b }
    } else if b.term < a.term {
        HardState { commit, lost, ..a }
    } else {
        HardState {
            term: a.term,
            vote: a.vote.or(b.vote),
            commit,
            lost,
        }
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn io_err(context: String, source: std::io::Error) -> WalError {
    WalError::Io { context, source }
}

/// What the two hard-state files hold.
pub struct HardStateFiles {
    pub newest: HardState,
    /// (sequence number, slot) of the newest valid copy; None when neither file exists.
    pub newest_at: Option<(u64, usize)>,
    pub valid: [bool; 2],
    pub any_present: bool,
}

/// Reads the two hard-state files. Case table rows H1–H3.
pub fn read_hard_state(dir: &Path) -> Result<HardStateFiles, WalError> {
    let mut best: Option<(u64, usize, HardState)> = None;
    let mut valid = [false; 2];
    let mut any_present = false;
    let mut first_bad: Option<(PathBuf, &'static str)> = None;
    #[allow(clippy::needless_range_loop)]
    for slot in 0..2 {
        let path = dir.join(super::hard_state_file_name(slot));
        let bytes = match read_bounded(&path, HARD_STATE_BYTES as u64 + 1) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => return Err(e),
        };
        any_present = true;
        match decode_hard_state(&bytes) {
            Ok((seq, hs)) => {
                valid[slot] = true;
                let newer = match &best {
                    Some(b) => seq > b.0,
                    None => true,
                };
                if newer {
                    best = Some((seq, slot, hs));
                }
            }
            // H2: one copy torn by a crash during its rewrite: the other holds the previous value.
            Err(why) => {
                if first_bad.is_none() {
                    first_bad = Some((path, why));
                }
            }
        }
    }
    match best {
        Some((seq, slot, hs)) => Ok(HardStateFiles {
            newest: hs,
            newest_at: Some((seq, slot)),
            valid,
            any_present,
        }),
        // H3: present but no valid copy: the previous value is lost; refuse.
        None => match first_bad {
            Some((path, why)) => Err(corrupt(
                &path,
                0,
                format!("{why}, and so is the other copy"),
            )),
            // H1: none present (new directory).
            None => Ok(HardStateFiles {
                newest: HardState::default(),
                newest_at: None,
                valid,
                any_present,
            }),
        },
    }
}

/// Reads a whole file if it is at most `max_bytes` long; None if it does not exist.
fn read_bounded(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, WalError> {
    Ok(read_bounded_keep(path, max_bytes)?.map(|(v, _)| v))
}

/// `read_bounded`, also handing back the open file. Only a regular file is read (a FIFO or a
/// device in its place is corrupt), and never more than `max_bytes` and one byte of it.
fn read_bounded_keep(path: &Path, max_bytes: u64) -> Result<Option<(Vec<u8>, File)>, WalError> {
    match crate::files::read_bounded_file(path, max_bytes) {
        Ok(read) => Ok(Some(read)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(ReadError::Io(e)) => Err(io_err(format!("read {}", path.display()), e)),
        Err(ReadError::NotRegular) => Err(corrupt(path, 0, "not a regular file")),
        Err(ReadError::TooLarge {
            size: Some(len), ..
        }) => Err(corrupt(
            path,
            0,
            format!("file is {len} bytes, over the limit of {max_bytes}"),
        )),
        Err(ReadError::TooLarge { size: None, .. }) => {
            Err(corrupt(path, 0, "file grew while being read"))
        }
    }
}

/// Loads and checks the snapshot file the log refers to. Row S1/S2.
pub fn load_snapshot(
    dir: &Path,
    index: u64,
    term: u64,
    opts: &WalOptions,
) -> Result<Snapshot, WalError> {
    let path = dir.join(snapshot_file_name(index, term));
    let max = opts
        .max_snapshot_bytes
        .saturating_add((SNAPSHOT_OVERHEAD_BYTES + MAX_MEMBERSHIP_BYTES) as u64);
    let (bytes, file) = match read_bounded_keep(&path, max)? {
        Some(b) => b,
        None => {
            return Err(corrupt(
                &path,
                0,
                format!("the log refers to snapshot {index} (term {term}) but its file is missing"),
            ))
        }
    };
    let (meta, data) = decode_snapshot(&bytes).map_err(|e| corrupt(&path, 0, e.what))?;
    if meta.index.0 != index || meta.term.0 != term {
        return Err(corrupt(
            &path,
            8,
            format!(
                "snapshot file holds index {} term {}, the log refers to index {index} term {term}",
                meta.index, meta.term
            ),
        ));
    }
    // Checked whole: the host restores the dictionary from these bytes, then leaves them in
    // the file (`SnapshotData::leave_in_file`), which every later holder reads instead.
    // The data ends where the CRC (the file's last 4 bytes) begins.
    let data_at = bytes.len() - 4 - data.len();
    let len = data.len() as u64;
    Ok(Snapshot {
        meta,
        data: SnapshotData::loaded(bytes, data_at, len, file),
    })
}

/// The logical log as replay rebuilds it, record by record (rows L1–L6).
struct LogState {
    entries: Vec<Entry>,
    /// The index the next entry must carry, once known.
    expected: Option<u64>,
    snap: Option<(u64, u64)>,
    hs: Option<HardState>,
}

impl LogState {
    fn apply(&mut self, h: &RecordHeader, payload: &[u8]) -> Result<(), String> {
        match h.rtype {
            REC_ENTRY => {
                if h.index == 0 || h.index == u64::MAX {
                    return Err(format!("entry index {} is out of range", h.index));
                }
                if let Some(e) = self.expected {
                    // L3: a gap or an index going backwards without a truncation record.
                    if h.index < e {
                        return Err(format!(
                            "entry index goes backwards: expected {e}, found {}",
                            h.index
                        ));
                    }
                    if h.index > e {
                        return Err(format!(
                            "gap in the log: expected index {e}, found {}",
                            h.index
                        ));
                    }
                }
                let prev_term = self
                    .entries
                    .last()
                    .map(|e| e.term.0)
                    .or(self.snap.map(|s| s.1));
                if prev_term.is_some_and(|t| h.term < t) {
                    return Err(format!(
                        "entry {} has a term lower than the entry before it",
                        h.index
                    ));
                }
                self.entries.push(Entry {
                    term: Term(h.term),
                    index: LogIndex(h.index),
                    kind: EntryKind::from_u8(h.kind).unwrap_or(EntryKind::Normal),
                    data: Arc::from(payload),
                });
                self.expected = Some(h.index.saturating_add(1));
            }
            REC_HARD_STATE => {
                let vote = crate::bytes::le_u64(payload, 0);
                let hs = HardState {
                    term: Term(h.term),
                    vote: if vote == 0 { None } else { Some(NodeId(vote)) },
                    commit: LogIndex(h.index),
                    lost: None,
                };
                self.hs = Some(match self.hs {
                    Some(old) => merge_hard_state(old, hs),
                    None => hs,
                });
            }
            REC_TRUNCATE => {
                // L4: a truncation record discards the suffix from its index on.
                let i = h.index;
                if i == 0 {
                    return Err("truncation at index 0".into());
                }
                if self.expected.is_some_and(|e| i > e) {
                    return Err(format!("truncation at {i} is past the end of the log"));
                }
                if self.snap.is_some_and(|s| i <= s.0) {
                    return Err(format!("truncation at {i} reaches into the snapshot"));
                }
                let keep = match self.entries.first() {
                    Some(f) if i > f.index.0 => (i - f.index.0) as usize,
                    _ => 0,
                };
                self.entries.truncate(keep);
                self.expected = Some(i);
            }
            REC_SNAPSHOT => {
                // L5: the snapshot replaces every entry at or below its index, and every entry
                // if the entry at its index has another term (storage.rs rules); the writer
                // recorded which of the two happened in the kind byte.
                let (i, t) = (h.index, h.term);
                if self.snap.is_some_and(|s| i < s.0) {
                    return Err(format!("snapshot index goes backwards to {i}"));
                }
                if h.kind == SNAPSHOT_KEEPS_SUFFIX {
                    // Compaction up to a *later* snapshot may have deleted the segments that
                    // held the entries this record keeps (segments go oldest first, so what
                    // follows a record is always complete, what precedes it may not be). So:
                    // held entries are trimmed, and when none are held the next index is
                    // unknown here; the final check (L7) demands that the entries follow the
                    // latest snapshot, whose record is never preceded by a deletion it did
                    // not allow.
                    match self.entries.last().map(|e| e.index.0) {
                        Some(last) => {
                            let f = self.entries[0].index.0;
                            let drop = (i.saturating_add(1).saturating_sub(f) as usize)
                                .min(self.entries.len());
                            if let Some(e) = self.entries.get(drop.wrapping_sub(1)) {
                                if e.index.0 == i && e.term.0 != t {
                                    return Err(format!(
                                        "snapshot at {i} term {t} keeps a log whose entry {i} has term {}",
                                        e.term
                                    ));
                                }
                            }
                            self.entries.drain(..drop);
                            self.expected = Some(last.max(i).saturating_add(1));
                        }
                        None => self.expected = None,
                    }
                } else {
                    self.entries.clear();
                    self.expected = Some(i.saturating_add(1));
                }
                self.snap = Some((i, t));
            }
            _ => return Err("unknown record type".into()),
        }
        Ok(())
    }
}

/// Why the record at some offset could not be read.
enum Stop {
    /// Clean end of file exactly at a record boundary.
    Eof,
    /// Preallocated zeros.
    Zeros,
    Bad(&'static str),
}

/// Replays one segment into `state`. Rows T1–T4 and L1–L6.
fn scan_segment(
    path: &Path,
    seq: u64,
    is_last: bool,
    opts: &WalOptions,
    state: &mut LogState,
) -> Result<SegmentScan, WalError> {
    let mut f = File::open(path).map_err(|e| io_err(format!("open {}", path.display()), e))?;
    let file_len = f
        .metadata()
        .map_err(|e| io_err(format!("stat {}", path.display()), e))?
        .len();
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    if file_len < SEGMENT_HEADER_BYTES as u64 {
        // Segments are created complete under a temporary name, so a short one is damage.
        return Err(corrupt(path, 0, "segment header is incomplete"));
    }
    f.read_exact(&mut head)
        .map_err(|e| io_err(format!("read {}", path.display()), e))?;
    let hseq = decode_segment_header(&head).map_err(|why| corrupt(path, 0, why))?;
    if hseq != seq {
        return Err(corrupt(
            path,
            8,
            format!("segment header says sequence {hseq}, its name says {seq}"),
        ));
    }

    let mut buf: Vec<u8> = Vec::new();
    let mut buf_off = SEGMENT_HEADER_BYTES as u64; // file offset of buf[0]
    let mut pos = 0usize;
    let mut max_entry_index = None;
    let stop = loop {
        let off = buf_off + pos as u64;
        if off == file_len {
            break Stop::Eof;
        }
        if file_len - off < RECORD_HEADER_BYTES as u64 {
            let rest = (file_len - off) as usize;
            if buf.len() - pos < rest {
                fill(
                    &mut f,
                    path,
                    &mut buf,
                    &mut buf_off,
                    &mut pos,
                    rest,
                    file_len,
                )?;
            }
            if buf[pos..pos + rest].iter().all(|&b| b == 0) {
                break Stop::Zeros;
            }
            break Stop::Bad("incomplete record header at the end of the file");
        }
        if buf.len() - pos < RECORD_HEADER_BYTES {
            fill(
                &mut f,
                path,
                &mut buf,
                &mut buf_off,
                &mut pos,
                RECORD_HEADER_BYTES,
                file_len,
            )?;
        }
        let h = match check_record_header(&buf[pos..], opts.max_record_bytes) {
            HeaderCheck::Zeros => break Stop::Zeros,
            HeaderCheck::Bad(why) => break Stop::Bad(why),
            HeaderCheck::Ok(h) => h,
        };
        let total = h.total_bytes();
        if off + total > file_len {
            break Stop::Bad("record runs past the end of the file");
        }
        if ((buf.len() - pos) as u64) < total {
            fill(
                &mut f,
                path,
                &mut buf,
                &mut buf_off,
                &mut pos,
                total as usize,
                file_len,
            )?;
        }
        let rec = &buf[pos..pos + total as usize];
        if !record_crc_ok(rec, h.crc) {
            break Stop::Bad("record fails its CRC");
        }
        state
            .apply(&h, &rec[RECORD_HEADER_BYTES..])
            .map_err(|why| corrupt(path, off, why))?;
        if h.rtype == REC_ENTRY || h.rtype == REC_TRUNCATE {
            max_entry_index = max_entry_index.max(Some(h.index));
        }
        pos += total as usize;
    };
    let valid_end = buf_off + pos as u64;
    let mut torn = None;
    let mut damage_end = valid_end;
    let why = match stop {
        Stop::Eof => None,
        Stop::Zeros => Some("zeroed bytes"),
        Stop::Bad(why) => Some(why),
    };
    if let Some(why) = why {
        // Every offset after the damage is a candidate: the bad record's own length field is
        // not trusted to skip its "payload" (a damaged length would hide good records).
        let (valid_after, last_nonzero) =
            find_valid_record_after(&f, path, valid_end, valid_end + 1, file_len, opts)?;
        if let Some(q) = valid_after {
            // T3: damage followed by a good record cannot be a torn write: corruption.
            return Err(corrupt(
                path,
                valid_end,
                format!("{why}, followed by a valid record at offset {q}"),
            ));
        }
        if let Some(end) = last_nonzero {
            damage_end = end;
            if !is_last {
                // T4: a segment is synced before the next one is created, so its tail is never torn.
                return Err(corrupt(
                    path,
                    valid_end,
                    format!("{why} in a sealed (not the last) segment"),
                ));
            }
            // T2: torn tail of the last segment.
            torn = Some((valid_end, why.to_string()));
        }
        // T1: preallocated zeros after the last record: the normal end.
    }
    Ok(SegmentScan {
        seq,
        path: path.to_path_buf(),
        valid_end,
        max_entry_index,
        torn,
        damage_end,
    })
}

/// Makes at least `need` bytes available at `buf[pos..]`, reading big chunks.
fn fill(
    f: &mut File,
    path: &Path,
    buf: &mut Vec<u8>,
    buf_off: &mut u64,
    pos: &mut usize,
    need: usize,
    file_len: u64,
) -> Result<(), WalError> {
    buf.drain(..*pos);
    *buf_off += *pos as u64;
    *pos = 0;
    let have = buf.len();
    let file_left = file_len - (*buf_off + have as u64);
    let target = need.max(READ_CHUNK_BYTES);
    let n = (target.saturating_sub(have) as u64).min(file_left) as usize;
    buf.resize(have + n, 0);
    f.read_exact(&mut buf[have..])
        .map_err(|e| io_err(format!("read {}", path.display()), e))?;
    Ok(())
}

/// Looks for any valid record starting at or after `first_candidate` and reports the offset
/// just past the last non-zero byte at or after `from` (None: all zeros). Gives up (answering
/// "found") past a CRC budget.
fn find_valid_record_after(
    f: &File,
    path: &Path,
    from: u64,
    first_candidate: u64,
    file_len: u64,
    opts: &WalOptions,
) -> Result<(Option<u64>, Option<u64>), WalError> {
    const WINDOW: usize = 1 << 20;
    let hb = RECORD_HEADER_BYTES;
    let mut nonzero = false;
    let mut last_nonzero: Option<u64> = None;
    let mut budget = SCAN_CRC_BUDGET_BYTES;
    let mut wbuf = vec![0u8; WINDOW + hb];
    let mut rec_buf = Vec::new();
    let mut start = from;
    while start < file_len {
        let n = ((file_len - start) as usize).min(WINDOW + hb);
        f.read_exact_at(&mut wbuf[..n], start)
            .map_err(|e| io_err(format!("read {}", path.display()), e))?;
        let body = n.min(WINDOW);
        if !nonzero && wbuf[..n].iter().any(|&b| b != 0) {
            nonzero = true;
        }
        if let Some(p) = wbuf[..body].iter().rposition(|&b| b != 0) {
            last_nonzero = Some(start + p as u64 + 1);
        }
        if nonzero {
            for i in 0..body {
                let q = start + i as u64;
                if q < first_candidate || i + hb > n {
                    continue;
                }
                let h = &wbuf[i..i + hb];
                if !(REC_ENTRY..=REC_SNAPSHOT).contains(&h[8]) || h[10] != 0 || h[11] != 0 {
                    continue;
                }
                if let HeaderCheck::Ok(rh) = check_record_header(h, opts.max_record_bytes) {
                    let total = rh.total_bytes();
                    if q + total > file_len {
                        continue;
                    }
                    if total > budget {
                        return Ok((Some(q), last_nonzero));
                    }
                    budget -= total;
                    let ok = if i + total as usize <= n {
                        record_crc_ok(&wbuf[i..i + total as usize], rh.crc)
                    } else {
                        rec_buf.resize(total as usize, 0);
                        f.read_exact_at(&mut rec_buf, q)
                            .map_err(|e| io_err(format!("read {}", path.display()), e))?;
                        record_crc_ok(&rec_buf, rh.crc)
                    };
                    if ok {
                        return Ok((Some(q), last_nonzero));
                    }
                }
            }
        }
        start += body as u64;
    }
    Ok((None, last_nonzero))
}

/// The bound on entries that the torn tail of the last segment may have held (see "Lost
/// entries" in `wal/mod.rs`), joined with any bound the hard-state files already carry.
/// `stray_snapshots` are the snapshot files the log does not refer to: a damaged snapshot
/// record may have referred to one of them.
pub fn lost_bound(rep: &Replayed, stray_snapshots: &[(u64, u64)]) -> Option<LostEntries> {
    let previous = rep.boot.hard_state.lost;
    let Some(last) = rep.segments.last() else {
        return previous;
    };
    let Some((cut, _)) = &last.torn else {
        return previous;
    };
    let kept_last = rep
        .boot
        .entries
        .last()
        .map(|e| (e.term, e.index))
        .or(rep
            .boot
            .snapshot
            .as_ref()
            .map(|s| (s.meta.term, s.meta.index)))
        .unwrap_or_default();
    let span = last.damage_end.saturating_sub(*cut).max(1);
    let records = span.div_ceil(RECORD_HEADER_BYTES as u64);
    let mut term = rep.boot.hard_state.term.max(kept_last.0);
    let mut index = LogIndex(kept_last.1 .0.saturating_add(records));
    for &(i, t) in stray_snapshots {
        if i > kept_last.1 .0 {
            index = index.max(LogIndex(i));
            term = term.max(Term(t));
        }
    }
    LostEntries::join(previous, Some(LostEntries { term, index }))
}

/// With no segment at all: refuses a directory that shows it was used (H5). The first segment
/// is created right after the two hard-state files, which then hold the default hard state
/// under sequence numbers 0 and 1, and is never deleted before a later one exists; the
/// hard-state files are rewritten, and snapshot files written, only through an open log. So a
/// snapshot file, or a hard state other than the initial one, beside no segment means the
/// log was removed: starting would forget the vote and, as the snapshot file would look
/// unreferenced, delete the snapshot.
fn log_missing(
    dir: &Path,
    files: &HardStateFiles,
    snapshot_files: &[(u64, u64)],
) -> Result<(), WalError> {
    let first_segment = super::segment_file_name(1);
    if let Some(&(i, t)) = snapshot_files.iter().max() {
        return Err(corrupt(
            &dir.join(snapshot_file_name(i, t)),
            0,
            format!(
                "a snapshot file exists but no log segment does (the log, {first_segment} \
                 onwards, is missing)"
            ),
        ));
    }
    let initial =
        files.newest == HardState::default() && files.newest_at.map_or(true, |(seq, _)| seq <= 1);
    if !initial {
        let slot = files.newest_at.map_or(0, |(_, slot)| slot);
        let hs = files.newest;
        return Err(corrupt(
            &dir.join(super::hard_state_file_name(slot)),
            0,
            format!(
                "the hard state (term {}, commit {}) shows the directory was used but no log \
                 segment exists (the log, {first_segment} onwards, is missing)",
                hs.term.0, hs.commit.0
            ),
        ));
    }
    Ok(())
}

/// Replays every segment in order, then loads the snapshot the log refers to.
/// `segments` are (sequence number, path), sorted by sequence number.
/// `snapshot_files` are the (index, term) of every snapshot file in the directory.
pub fn replay(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    snapshot_files: &[(u64, u64)],
    opts: &WalOptions,
) -> Result<Replayed, WalError> {
    let files = match read_hard_state(dir) {
        // H1: no segment yet means a crash while the directory was being initialised (the
        // first segment is created after both hard-state files): nothing was ever stored.
        Err(WalError::Corrupt { .. }) if segments.is_empty() => HardStateFiles {
            newest: HardState::default(),
            newest_at: None,
            valid: [false; 2],
            any_present: false,
        },
        r => r?,
    };
    if segments.is_empty() {
        log_missing(dir, &files, snapshot_files)?;
    }
    let (file_hs, newest, valid) = (files.newest, files.newest_at, files.valid);
    if !files.any_present && !segments.is_empty() {
        // H4: log without its hard state: the vote is lost.
        return Err(corrupt(
            &dir.join(super::hard_state_file_name(0)),
            0,
            "hard-state files are missing but log segments exist",
        ));
    }
    for w in segments.windows(2) {
        if w[1].0 != w[0].0.wrapping_add(1) {
            // L6: a missing segment in the middle.
            return Err(corrupt(
                &w[1].1,
                0,
                format!(
                    "segment {} follows segment {}: one is missing",
                    w[1].0, w[0].0
                ),
            ));
        }
    }
    let mut state = LogState {
        entries: Vec::new(),
        expected: None,
        snap: None,
        hs: None,
    };
    let mut scans = Vec::with_capacity(segments.len());
    for (k, (seq, path)) in segments.iter().enumerate() {
        scans.push(scan_segment(
            path,
            *seq,
            k + 1 == segments.len(),
            opts,
            &mut state,
        )?);
    }
    // L7: the entries must follow the snapshot (or start the log) without a gap.
    if let Some(first) = state.entries.first() {
        let want = state.snap.map_or(1, |s| s.0.saturating_add(1));
        if first.index.0 != want {
            let (_, p) = &segments[0];
            return Err(corrupt(
                p,
                SEGMENT_HEADER_BYTES as u64,
                format!(
                    "the log starts at index {} but what is before it ends at {}",
                    first.index,
                    want - 1
                ),
            ));
        }
    }
    let snapshot = match state.snap {
        Some((i, t)) => Some(load_snapshot(dir, i, t, opts)?),
        None => None,
    };
    let mut hard_state = match state.hs {
        Some(h) => merge_hard_state(file_hs, h),
        None => file_hs,
    };
    // A snapshot holds only committed entries, and compaction may have deleted the segment
    // holding the latest commit record below it: commit is at least the snapshot's index.
    if let Some((i, _)) = state.snap {
        hard_state.commit = hard_state.commit.max(LogIndex(i));
    }
    Ok(Replayed {
        boot: Boot {
            hard_state,
            snapshot,
            entries: state.entries,
            heard: Default::default(),
        },
        segments: scans,
        file_hard_state: file_hs,
        hard_state_newest: newest,
        hard_state_valid: valid,
    })
}
