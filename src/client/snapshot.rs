//! Saving a snapshot (a backup) through the client: `SnapshotSave` to the leader, then its
//! bytes with `SnapshotChunk` requests on the same connection, each chunk handed to the caller
//! as it arrives (nothing holds the whole snapshot), and the checksum verified at the end.
//! The protocol is in `docs/PROTOCOL.md` ("Backups"). Must not write files: the caller decides
//! where the bytes go (`zatt snapshot save` writes `wal::backup`'s file).

use super::*;
use crate::wire::client::SNAPSHOT_CHUNK_BYTES;

/// Where [`Client::snapshot_save`] puts a snapshot as it arrives.
pub trait SnapshotSink {
    /// What the snapshot is, before any of its bytes.
    fn begin(&mut self, info: &SnapshotInfo) -> io::Result<()>;
    /// The next bytes of its data, in order.
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl Client {
    /// Takes a consistent snapshot of the dictionary on the leader (holding every write
    /// acknowledged before the call) and streams it to `sink`. Fails if the bytes received do
    /// not match the snapshot's size and checksum (the sink has then had bytes it must throw
    /// away). Each request has the client's `timeout`.
    pub fn snapshot_save(&mut self, sink: &mut dyn SnapshotSink) -> Result<SnapshotInfo> {
        let sink_error = |error: io::Error| Error::Io {
            error,
            may_have_applied: false,
        };
        let info = match self.call(&mut Request::SnapshotSave, Route::Leader, Retry::Idempotent)? {
            Response::SnapshotBegin(info) => info,
            other => return Err(unexpected(other, false)),
        };
        sink.begin(&info).map_err(sink_error)?;
        let protocol = |what: String| Error::Protocol {
            what,
            may_have_applied: false,
        };
        let mut crc = crc32fast::Hasher::new();
        // The last 4 bytes seen: the data's own CRC once the end is reached.
        let mut tail: Vec<u8> = Vec::with_capacity(4 + SNAPSHOT_CHUNK_BYTES);
        let mut offset = 0u64;
        while offset < info.size {
            let req = Request::SnapshotChunk {
                id: info.id,
                offset,
            };
            let id = self.next_request_id;
            self.next_request_id += 1;
            let deadline = Instant::now() + self.config.timeout;
            if self.conn.is_none() {
                return Err(protocol(format!(
                    "the connection to the server holding the snapshot closed at byte {offset} of {}; save again",
                    info.size
                )));
            }
            let resp = match self.round_trip(id, &req, deadline) {
                Ok(r) => r,
                Err(e) => {
                    self.conn = None;
                    return Err(conn_error(e, false));
                }
            };
            let data = match resp {
                Response::SnapshotChunk { offset: o, data } if o == offset => data,
                Response::Error(k) => return Err(Error::Server(k)),
                other => return Err(unexpected(other, false)),
            };
            if data.is_empty() || offset + data.len() as u64 > info.size {
                return Err(protocol(format!(
                    "the server sent {} bytes at offset {offset} of a {}-byte snapshot",
                    data.len(),
                    info.size
                )));
            }
            offset += data.len() as u64;
            tail.extend_from_slice(&data);
            let keep = tail.len().min(4);
            let (hash, _) = tail.split_at(tail.len() - keep);
            crc.update(hash);
            tail.drain(..tail.len() - keep);
            sink.data(&data).map_err(sink_error)?;
        }
        let own =
            (tail.len() == 4).then(|| u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if own != Some(info.checksum) || crc.finalize() != info.checksum {
            return Err(protocol(format!(
                "the snapshot received does not match its checksum {:#010x}: damaged in transit; save again",
                info.checksum
            )));
        }
        Ok(info)
    }
}
