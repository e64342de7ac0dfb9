//! The data directory's identity: its incarnation (a random id drawn when the directory is
//! created, so that a server whose storage was lost or replaced comes back as someone new) and
//! the incarnations this server pinned for its peers (a peer is known by node id and
//! incarnation; see "Incarnations" in `wire/mod.rs`). Kept in one small file, rewritten whole
//! (temporary name, sync, rename, directory sync) whenever a pin changes, which happens once per
//! peer: a pin must be durable before the first message from that peer is acted on, or a crash
//! could forget that this server ever heard from the peer's earlier incarnation.
//! Must not: know Raft or the network; trust a count it has not checked against the bytes.
//!
//! File `identity`: magic `ZID1` (4), incarnation (8), pin count (2), then per pin node id (8)
//! and incarnation (8), then CRC32 of every byte before it (4). Integers little-endian.

use super::{sync_dir, WalError};
use crate::bytes::{PutLe, Reader};
use crate::files::{read_bounded, ReadError};
use crate::types::NodeId;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

pub const IDENTITY_FILE: &str = "identity";
const MAGIC: &[u8; 4] = b"ZID1";
/// More pins than any membership can hold is damage, not data.
const MAX_PINS: usize = 4096;
/// The largest identity file: one with `MAX_PINS` pins. A larger one is not read.
const MAX_FILE_BYTES: u64 = (4 + 8 + 2 + 16 * MAX_PINS + 4) as u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Never 0 (0 means "no incarnation" on the wire).
    pub incarnation: u64,
    /// Each peer's incarnation as this server first heard it.
    pub pins: BTreeMap<NodeId, u64>,
}

impl Identity {
    /// A new identity with a fresh random incarnation.
    pub fn generate() -> io::Result<Identity> {
        let mut b = [0u8; 8];
        loop {
            fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
            let incarnation = u64::from_le_bytes(b);
            if incarnation != 0 {
                return Ok(Identity {
                    incarnation,
                    pins: BTreeMap::new(),
                });
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + 16 * self.pins.len());
        out.extend_from_slice(MAGIC);
        out.put_u64(self.incarnation);
        out.put_u16(self.pins.len().min(MAX_PINS) as u16);
        for (id, inc) in self.pins.iter().take(MAX_PINS) {
            out.put_u64(id.0);
            out.put_u64(*inc);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
        out
    }

    /// Decodes a whole file, or says what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Identity, &'static str> {
        if b.len() < 4 + 8 + 2 + 4 {
            return Err("identity file is truncated");
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != crate::bytes::le_u32(crc, 0) {
            return Err("identity file fails its CRC");
        }
        let mut r = Reader::new(body);
        if r.bytes(4).map_err(|e| e.what)? != MAGIC {
            return Err("identity file has a bad magic");
        }
        let incarnation = r.u64().map_err(|e| e.what)?;
        if incarnation == 0 {
            return Err("identity file holds incarnation 0");
        }
        let n = r.u16().map_err(|e| e.what)? as usize;
        if n > MAX_PINS || n * 16 != r.remaining() {
            return Err("identity file's pin count does not match its length");
        }
        let mut pins = BTreeMap::new();
        for _ in 0..n {
            let id = NodeId(r.u64().map_err(|e| e.what)?);
            let inc = r.u64().map_err(|e| e.what)?;
            if id.0 == 0 || inc == 0 || pins.insert(id, inc).is_some() {
                return Err("identity file has a bad pin");
            }
        }
        Ok(Identity { incarnation, pins })
    }

    /// The identity stored in `dir`, if any. A damaged file refuses the start (exit 65): the
    /// pins it held are promises about who this server heard from. So does one too large to
    /// be an identity, or not a regular file, which is not read.
    pub fn load(dir: &Path) -> Result<Option<Identity>, WalError> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = match read_bounded(&path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(ReadError::Io(e)) => {
                return Err(WalError::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                })
            }
            Err(e) => {
                return Err(WalError::Corrupt {
                    file: path,
                    offset: 0,
                    reason: format!("the identity file {e}"),
                })
            }
        };
        Identity::decode(&bytes)
            .map(Some)
            .map_err(|why| WalError::Corrupt {
                file: path,
                offset: 0,
                reason: why.to_string(),
            })
    }

    /// Makes this identity the durable one in `dir` (all or nothing).
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(IDENTITY_FILE);
        let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
        let ctx = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        let mut f = fs::File::create(&tmp).map_err(|e| ctx("create", &tmp, e))?;
        f.write_all(&self.encode())
            .and_then(|_| f.sync_all())
            .map_err(|e| ctx("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| ctx("rename", &tmp, e))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_damage() {
        let mut id = Identity::generate().unwrap();
        assert_ne!(id.incarnation, 0);
        id.pins.insert(NodeId(2), 77);
        id.pins.insert(NodeId(3), 78);
        let b = id.encode();
        assert_eq!(Identity::decode(&b), Ok(id.clone()));
        for cut in 0..b.len() {
            assert!(Identity::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut d = b.clone();
                d[i] ^= 1 << bit;
                assert!(Identity::decode(&d).is_err(), "byte {i} bit {bit}");
            }
        }
        let dir = std::env::temp_dir().join(format!("zatt-identity-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(Identity::load(&dir).unwrap(), None);
        id.store(&dir).unwrap();
        assert_eq!(Identity::load(&dir).unwrap(), Some(id));
        fs::write(dir.join(IDENTITY_FILE), b"garbage").unwrap();
        let e = Identity::load(&dir).unwrap_err();
        assert_eq!(e.exit_code(), super::super::EXIT_CORRUPT);
        // The largest identity there can be is read; one byte more is refused by its size,
        // naming the file, and never read (a sparse file of a GiB allocates nothing).
        let most = Identity {
            incarnation: 5,
            pins: (1..=MAX_PINS as u64).map(|p| (NodeId(p), p)).collect(),
        };
        assert_eq!(most.encode().len() as u64, MAX_FILE_BYTES);
        most.store(&dir).unwrap();
        assert_eq!(Identity::load(&dir).unwrap(), Some(most));
        for len in [MAX_FILE_BYTES + 1, 1 << 30] {
            fs::File::create(dir.join(IDENTITY_FILE))
                .unwrap()
                .set_len(len)
                .unwrap();
            let e = Identity::load(&dir).unwrap_err();
            assert_eq!(e.exit_code(), super::super::EXIT_CORRUPT);
            let text = e.to_string();
            assert!(
                text.contains(IDENTITY_FILE) && text.contains("is larger than"),
                "{text}"
            );
        }
        fs::remove_file(dir.join(IDENTITY_FILE)).unwrap();
        fs::create_dir(dir.join(IDENTITY_FILE)).unwrap();
        let e = Identity::load(&dir).unwrap_err();
        assert!(e.to_string().contains("is not a regular file"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
