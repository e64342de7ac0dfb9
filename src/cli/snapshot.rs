//! `zatt snapshot save FILE`: a consistent snapshot from the leader, streamed into a backup file
//! (`wal::backup`'s layout) that `zattd --restore FILE` bootstraps a new cluster from. The file
//! appears under its name only once complete and checked; a failed save leaves nothing there.
//! Must not hold the whole snapshot in memory.

use std::io::{self, Write};
use std::path::Path;

use super::{json, Global, Output};
use crate::client::{Client, Error, SnapshotInfo, SnapshotSink};
use crate::types::{Member, MemberRole, Membership, NodeId};
use crate::wal::backup::{BackupMeta, BackupWriter};

fn membership_of(info: &SnapshotInfo) -> Membership {
    let mut m = Membership::default();
    for mi in &info.members {
        m.members.insert(
            NodeId(mi.id),
            Member {
                role: if mi.voter {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                addr: mi.addr.clone(),
            },
        );
    }
    m
}

/// The backup file being written.
struct FileSink<'a> {
    file: &'a Path,
    writer: Option<BackupWriter>,
}

impl SnapshotSink for FileSink<'_> {
    fn begin(&mut self, info: &SnapshotInfo) -> io::Result<()> {
        let meta = BackupMeta {
            cluster_id: info.cluster_id,
            index: info.index,
            term: info.term,
            membership: membership_of(info),
            size: info.size,
        };
        self.writer = Some(BackupWriter::create(self.file, &meta)?);
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.data(bytes),
            None => Err(io::Error::other("snapshot data before its header")),
        }
    }
}

/// Saves the leader's snapshot to `file`; prints what was saved.
pub(super) fn save(
    g: &Global,
    client: &mut Client,
    file: &Path,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut sink = FileSink { file, writer: None };
    let info = match client.snapshot_save(&mut sink) {
        Ok(info) => info,
        Err(e) => {
            if let Some(w) = sink.writer {
                w.abandon();
            }
            return Err(e);
        }
    };
    let Some(w) = sink.writer else {
        return Err(Error::Protocol {
            what: "the server sent no snapshot".into(),
            may_have_applied: false,
        });
    };
    w.finish().map_err(|error| Error::Io {
        error,
        may_have_applied: false,
    })?;
    let _ = match g.output {
        Output::Text => writeln!(
            out,
            "saved the snapshot at index {} (term {}, {} bytes, cluster {}) to {}",
            info.index,
            info.term,
            info.size,
            info.cluster_id,
            file.display()
        ),
        Output::Json => {
            let mut s = String::from("{\"ok\":true");
            json::key(&mut s, "file");
            json::string(&mut s, &file.display().to_string());
            for (k, v) in [
                ("index", info.index),
                ("term", info.term),
                ("size", info.size),
                ("cluster_id", info.cluster_id),
            ] {
                json::key(&mut s, k);
                s.push_str(&v.to_string());
            }
            s.push('}');
            writeln!(out, "{s}")
        }
    };
    Ok(())
}
