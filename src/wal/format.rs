//! Byte layouts of the write-ahead log's files (see the table at the top of `wal/mod.rs`):
//! encoders append into caller buffers without allocating per record, decoders check every
//! length against the bytes present and the configured limits before touching anything.
//! Nothing here touches the file system.

use crate::bytes::{le_u32, le_u64, set_u32, set_u64, PutLe};
use crate::types::{
    DecodeError, EntryKind, HardState, LogIndex, LostEntries, Membership, NodeId, Reader,
    SnapshotMeta, Term, MAX_ADDR_LEN, MAX_MEMBERS,
};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ZATTWAL1";
/// Segment header: magic (8), segment sequence number (8), segment_bytes at creation (8),
/// reserved zero (4), CRC32 of the 28 bytes before it (4).
pub const SEGMENT_HEADER_BYTES: usize = 32;

/// Record header: crc (4), payload length (4), type (1), kind (1), reserved zero (2),
/// term (8), index (8).
pub const RECORD_HEADER_BYTES: usize = 28;

pub const REC_ENTRY: u8 = 1;
pub const REC_HARD_STATE: u8 = 2;
pub const REC_TRUNCATE: u8 = 3;
pub const REC_SNAPSHOT: u8 = 4;
/// Snapshot record kinds: whether the entries after the snapshot's index stay. The writer
/// decides (it knows the term of the entry at that index); replay cannot, once compaction
/// has deleted that entry's segment.
pub const SNAPSHOT_DISCARDS_LOG: u8 = 0;
pub const SNAPSHOT_KEEPS_SUFFIX: u8 = 1;

/// Hard-state file: magic (4), sequence number (8), term (8), vote (8, 0 = none), commit (8),
/// lost-entries bound term (8) and index (8, 0 = none), CRC32 of the 52 bytes before it (4).
pub const HARD_STATE_MAGIC: &[u8; 4] = b"ZHS2";
pub const HARD_STATE_BYTES: usize = 56;
/// The first layout (no lost-entries bound), still read so an older directory opens.
pub const HARD_STATE_MAGIC_V1: &[u8; 4] = b"ZHS1";
pub const HARD_STATE_BYTES_V1: usize = 40;

/// Snapshot file: magic (8), index (8), term (8), membership length (4), membership
/// (`Membership::encode`), data length (8), data, CRC32 of everything before it (4).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"ZATTSNP1";
/// The largest encoded membership: count (2) + per member id (8), role (1), len (1), address.
pub const MAX_MEMBERSHIP_BYTES: usize = 2 + MAX_MEMBERS * (8 + 1 + 1 + MAX_ADDR_LEN);
/// Snapshot file bytes besides the membership and the data.
pub const SNAPSHOT_OVERHEAD_BYTES: usize = 8 + 8 + 8 + 4 + 8 + 4;

pub fn encode_segment_header(seq: u64, segment_bytes: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    set_u64(&mut h, 8, seq);
    set_u64(&mut h, 16, segment_bytes);
    let crc = crc32fast::hash(&h[0..28]);
    set_u32(&mut h, 28, crc);
    h
}

/// Returns the segment's sequence number, or why the header is bad.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, &'static str> {
    if h.len() < SEGMENT_HEADER_BYTES {
        return Err("segment header is incomplete");
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("segment header has a bad magic");
    }
    if le_u32(h, 28) != crc32fast::hash(&h[0..28]) || h[24..28] != [0, 0, 0, 0] {
        return Err("segment header fails its CRC");
    }
    Ok(le_u64(h, 8))
}

/// Appends one record to `out`: the header, then the payload, then fills in the CRC, which
/// covers every byte of the record after the CRC field itself.
pub fn encode_record(
    out: &mut Vec<u8>,
    rtype: u8,
    kind: u8,
    term: u64,
    index: u64,
    payload: &[u8],
) {
    let start = out.len();
    out.put_u32(0);
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(&[rtype, kind, 0, 0]);
    out.put_u64(term);
    out.put_u64(index);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    set_u32(out, start, crc);
}

/// A record header that passed its structural checks (the CRC is checked once the payload
/// is present: see `record_crc_ok`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub payload_len: u32,
    pub rtype: u8,
    pub kind: u8,
    pub term: u64,
    pub index: u64,
}

impl RecordHeader {
    pub fn total_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.payload_len as u64
    }
}

/// What the 28 bytes at some offset look like.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Every byte zero: the preallocated, never-written part of a segment.
    Zeros,
    /// Not a record header (the reason says which field is wrong).
    Bad(&'static str),
    Ok(RecordHeader),
}

/// Checks the fixed fields of a record header. `h` must hold at least `RECORD_HEADER_BYTES`.
#[inline]
pub fn check_record_header(h: &[u8], max_record_bytes: u64) -> HeaderCheck {
    let h = &h[..RECORD_HEADER_BYTES];
    let crc = le_u32(h, 0);
    let payload_len = le_u32(h, 4);
    let (rtype, kind) = (h[8], h[9]);
    if crc == 0 && payload_len == 0 && rtype == 0 && h.iter().all(|&b| b == 0) {
        return HeaderCheck::Zeros;
    }
    if h[10] != 0 || h[11] != 0 {
        return HeaderCheck::Bad("record reserved bytes are not zero");
    }
    let term = le_u64(h, 12);
    let index = le_u64(h, 20);
    match rtype {
        REC_ENTRY => {
            if EntryKind::from_u8(kind).is_none() {
                return HeaderCheck::Bad("entry record has an unknown kind");
            }
            if payload_len as u64 > max_record_bytes {
                return HeaderCheck::Bad("record length over max_record_bytes");
            }
        }
        REC_HARD_STATE => {
            if kind != 0 || payload_len != 8 {
                return HeaderCheck::Bad("hard-state record has a bad kind or length");
            }
        }
        REC_TRUNCATE | REC_SNAPSHOT => {
            if kind > (rtype == REC_SNAPSHOT) as u8 || payload_len != 0 {
                return HeaderCheck::Bad("marker record has a bad kind or length");
            }
        }
        _ => return HeaderCheck::Bad("unknown record type"),
    }
    HeaderCheck::Ok(RecordHeader {
        crc,
        payload_len,
        rtype,
        kind,
        term,
        index,
    })
}

/// `rec` is the whole record (header and payload).
#[inline]
pub fn record_crc_ok(rec: &[u8], crc: u32) -> bool {
    crc32fast::hash(&rec[4..]) == crc
}

pub fn encode_hard_state(seq: u64, hs: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut b = [0u8; HARD_STATE_BYTES];
    b[0..4].copy_from_slice(HARD_STATE_MAGIC);
    set_u64(&mut b, 4, seq);
    set_u64(&mut b, 12, hs.term.0);
    set_u64(&mut b, 20, hs.vote.map_or(0, |v| v.0));
    set_u64(&mut b, 28, hs.commit.0);
    let (lt, li) = hs.lost.map_or((0, 0), |l| (l.term.0, l.index.0));
    set_u64(&mut b, 36, lt);
    set_u64(&mut b, 44, li);
    let crc = crc32fast::hash(&b[0..52]);
    set_u32(&mut b, 52, crc);
    b
}

/// Returns (sequence number, hard state). Reads both layouts (`ZHS1` has no lost bound).
pub fn decode_hard_state(b: &[u8]) -> Result<(u64, HardState), &'static str> {
    let (body_len, v2) = match b.get(0..4) {
        Some(m) if m == HARD_STATE_MAGIC => (HARD_STATE_BYTES - 4, true),
        Some(m) if m == HARD_STATE_MAGIC_V1 => (HARD_STATE_BYTES_V1 - 4, false),
        _ if b.len() != HARD_STATE_BYTES && b.len() != HARD_STATE_BYTES_V1 => {
            return Err("hard-state file has the wrong length")
        }
        _ => return Err("hard-state file has a bad magic"),
    };
    if b.len() != body_len + 4 {
        return Err("hard-state file has the wrong length");
    }
    if le_u32(b, body_len) != crc32fast::hash(&b[0..body_len]) {
        return Err("hard-state file fails its CRC");
    }
    let vote = le_u64(b, 20);
    let lost = if v2 && le_u64(b, 44) != 0 {
        Some(LostEntries {
            term: Term(le_u64(b, 36)),
            index: LogIndex(le_u64(b, 44)),
        })
    } else {
        None
    };
    Ok((
        le_u64(b, 4),
        HardState {
            term: Term(le_u64(b, 12)),
            vote: if vote == 0 { None } else { Some(NodeId(vote)) },
            commit: LogIndex(le_u64(b, 28)),
            lost,
        },
    ))
}

/// A whole snapshot file in one buffer (tests: the writer writes the head, the data where it
/// lies and `snapshot_crc`, and never holds the file whole).
#[cfg(test)]
pub fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let mut out = encode_snapshot_head(meta, data.len() as u64);
    let crc = snapshot_crc(&out, data);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc);
    out
}

/// A snapshot file's bytes before its data (magic, index, term, membership, data length): the
/// writer writes this, the data from where it lies, then `snapshot_crc`, so a snapshot as big
/// as the dictionary is never copied whole. The data starts at the head's length.
pub fn encode_snapshot_head(meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let mut m = Vec::new();
    meta.membership.encode(&mut m);
    let mut out = Vec::with_capacity(SNAPSHOT_OVERHEAD_BYTES + m.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.put_u64(meta.index.0);
    out.put_u64(meta.term.0);
    out.put_u32(m.len() as u32);
    out.extend_from_slice(&m);
    out.put_u64(data_len);
    out
}

/// The CRC that ends a snapshot file: of its head and data.
pub fn snapshot_crc(head: &[u8], data: &[u8]) -> [u8; 4] {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(data);
    h.finalize().to_le_bytes()
}

/// Decodes a whole snapshot file. The caller has already bounded `b.len()` by
/// `max_snapshot_bytes`; every inner length is checked against the bytes present.
pub fn decode_snapshot(b: &[u8]) -> Result<(SnapshotMeta, &[u8]), DecodeError> {
    if b.len() < SNAPSHOT_OVERHEAD_BYTES {
        return Err(DecodeError::new("snapshot file is truncated"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != le_u32(crc, 0) {
        return Err(DecodeError::new("snapshot file fails its CRC"));
    }
    let mut r = Reader::new(body);
    if r.bytes(8)? != SNAPSHOT_MAGIC {
        return Err(DecodeError::new("snapshot file has a bad magic"));
    }
    let index = LogIndex(r.u64()?);
    let term = Term(r.u64()?);
    let m = r.len_prefixed(MAX_MEMBERSHIP_BYTES)?;
    let (membership, used) = Membership::decode(m)?;
    if used != m.len() {
        return Err(DecodeError::new("snapshot membership has trailing bytes"));
    }
    let n = r.u64()?;
    if n != r.remaining() as u64 {
        return Err(DecodeError::new(
            "snapshot data length does not match the file",
        ));
    }
    let data = r.bytes(n as usize)?;
    Ok((
        SnapshotMeta {
            index,
            term,
            membership,
        },
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, MemberRole};

    #[test]
    fn decoders_refuse_every_truncation_and_round_trip_the_whole() {
        // Goal: every layout round-trips and no prefix of it decodes. Method: encode, then
        // decode every cut.
        let hs = HardState {
            term: Term(7),
            vote: Some(NodeId(3)),
            commit: LogIndex(99),
            lost: None,
        };
        let b = encode_hard_state(42, &hs);
        assert_eq!(decode_hard_state(&b), Ok((42, hs)));
        for cut in 0..b.len() {
            assert!(decode_hard_state(&b[..cut]).is_err());
        }
        let mut m = Membership::default();
        m.members.insert(
            NodeId(2),
            Member {
                role: MemberRole::Learner,
                addr: "127.0.0.2:5254".into(),
            },
        );
        let meta = SnapshotMeta {
            index: LogIndex(10),
            term: Term(2),
            membership: m,
        };
        let s = encode_snapshot(&meta, b"state");
        let (dm, data) = decode_snapshot(&s).unwrap();
        assert_eq!((dm, data), (meta, &b"state"[..]));
        for cut in 0..s.len() {
            assert!(decode_snapshot(&s[..cut]).is_err(), "cut {cut}");
        }
        let h = encode_segment_header(5, 1 << 20);
        assert_eq!(decode_segment_header(&h), Ok(5));
        let mut rec = Vec::new();
        encode_record(&mut rec, REC_ENTRY, 1, 3, 4, b"abc");
        match check_record_header(&rec, 1 << 20) {
            HeaderCheck::Ok(rh) => {
                assert_eq!((rh.term, rh.index, rh.total_bytes()), (3, 4, 31));
                assert!(record_crc_ok(&rec, rh.crc));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check_record_header(&rec, 2),
            HeaderCheck::Bad("record length over max_record_bytes")
        );
        assert_eq!(check_record_header(&[0u8; 28], 2), HeaderCheck::Zeros);
    }
}
