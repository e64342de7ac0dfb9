//! `zatt snapshot save FILE`: a consistent snapshot from the leader, streamed into a backup file
//! (`wal::backup`'s layout) that `zattd --restore FILE` bootstraps a new cluster from. The file
//! appears under its name only once complete and checked; a failed save leaves nothing there.
//! Must not hold the whole snapshot in memory, replace anything but a regular file (it renames
//! over FILE), or call a local file's failure a connection's.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{json, Failure, Global, Output};
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

/// Checks, before the cluster is asked for anything, that a backup can be saved at `file`:
/// nothing but a regular file is there, and its directory exists and is writable. The save
/// renames a temporary file over FILE, so a device, FIFO or socket there would be replaced by
/// a regular file, not written to (`/dev/full` was), and a symbolic link would be replaced
/// itself, not its target: both are refused, naming the path (name the target instead).
pub(super) fn check_destination(file: &Path) -> Result<(), String> {
    let cannot = |why: String| cannot_save(file, why);
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) if m.file_type().is_symlink() => {
            return Err(cannot(
                "it is a symbolic link, which the save would replace: name its target".into(),
            ))
        }
        Ok(m) if m.is_dir() => return Err(cannot("it is a directory".into())),
        Ok(_) => {
            return Err(cannot(
                "it is not a regular file (a device, FIFO or socket), which the save would \
                 replace"
                    .into(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(cannot(e.to_string())),
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(cannot(format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(cannot(format!("directory {}: {e}", dir.display()))),
    }
    let mut c = dir.as_os_str().as_bytes().to_vec();
    c.push(0);
    // SAFETY: `c` is a NUL-terminated path that outlives the call; access only reads it.
    if unsafe { libc::access(c.as_ptr().cast(), libc::W_OK | libc::X_OK) } != 0 {
        let e = io::Error::last_os_error();
        return Err(cannot(format!(
            "directory {} is not writable: {e}",
            dir.display()
        )));
    }
    Ok(())
}

/// A local file's failure, as every one is said: naming the file, not the connection.
fn cannot_save(file: &Path, why: impl std::fmt::Display) -> String {
    format!("cannot save the snapshot to {}: {why}", file.display())
}

/// The backup file being written; remembers its own failure, which is the local file's, not
/// the connection's.
struct FileSink<'a> {
    file: &'a Path,
    writer: Option<BackupWriter>,
    failed: Option<String>,
}

impl FileSink<'_> {
    fn check<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        r
    }
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
        let w = BackupWriter::create(self.file, &meta);
        self.writer = Some(self.check(w)?);
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => {
                let r = w.data(bytes);
                self.check(r)
            }
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
) -> Result<(), Failure> {
    let local = |why: String| Failure::Said(cannot_save(file, why));
    let mut sink = FileSink {
        file,
        writer: None,
        failed: None,
    };
    let info = match client.snapshot_save(&mut sink) {
        Ok(info) => info,
        Err(e) => {
            if let Some(w) = sink.writer {
                w.abandon();
            }
            return Err(match sink.failed {
                Some(why) => local(why),
                None => Failure::Client(e),
            });
        }
    };
    let Some(w) = sink.writer else {
        return Err(Failure::Client(Error::Protocol {
            what: "the server sent no snapshot".into(),
            may_have_applied: false,
        }));
    };
    w.finish().map_err(|e| local(e.to_string()))?;
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
