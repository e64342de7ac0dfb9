//! Rewriting a data directory for the two ways back from losing a cluster: `--restore FILE` (a
//! new cluster from a backup `zatt snapshot save` wrote) and `--force-new-cluster` (a surviving
//! member made the only member of its cluster, when a majority is lost for good). Every check
//! that can refuse runs before the first byte is written: a refused restore or force leaves the
//! directory as it was. Must not run protocol logic: it writes one durable state that the core
//! then takes as it takes any recovered one.
//!
//! `--restore`: the backup is read whole and checked (its file checksum, its layout, the
//! dictionary snapshot's own checksum, and that the snapshot stands for the index the file
//! says), the data directory must hold no data, and the new cluster gets a cluster id of its
//! own (derived from the backup and the new `--cluster`, so every restored member computes the
//! same one, and never the source's), so that stragglers of the old cluster cannot talk to it.
//! A restore is a first start whose initial state is the backup instead of an empty log: the
//! start-up (`start.rs`) draws the directory's identity and, under `--initial-cluster-state
//! auto`, asks the other servers of `--cluster` whether this server is new to them, as for any
//! empty data directory, and only then writes the backup's snapshot with the new membership, at
//! the backup's index and term, committed. Every member restored from the same file starts from
//! the same state, and a member whose restored storage was lost is refused when it is started
//! with `--restore` again (its peers know it by another incarnation), instead of coming back
//! as someone who forgot its votes.
//!
//! `--force-new-cluster` is checked (its log read) before the start-up checks its files and
//! binds its port, written once those pass, and the directory then starts as a restart would.
//! The server's whole log is kept (its snapshot and every entry after it), a `Config` entry
//! making this server the only voter is appended, in a term above every term in its log, and
//! all of it is committed at once. Entries beyond the commit index it had made
//! durable are kept too: a follower persists its commit index lazily (with its next write), so
//! the last writes acknowledged before the loss are typically among them; the price is that an
//! entry the old cluster never committed may take effect. A lost-entries bound (a damaged log
//! tail cut at recovery) is cleared with a warning: no other voter is left to hold what it
//! covers, and withholding votes would stop the only one. A marker file records the force, so
//! that a restart that still carries the flag (a config file left as it was) is refused instead
//! of undoing the members added since. The directory gets a fresh identity: to any server that
//! knew this one it is a new incarnation (a straggler of the old cluster that comes back is
//! not heard), and it has pinned no peer.

use super::*;
use crate::config::EXIT_CORRUPT;
use crate::files::read_bounded;
use crate::kv::{Kv, KvConfig};
use crate::raft::Boot;
use crate::snapdata::SnapshotData;
use crate::storage::LogStorage;
use crate::wal::backup::{read_backup, BackupMeta};
use crate::wal::identity::Identity;
use crate::wal::{Wal, WalOptions};
use std::path::{Path, PathBuf};

/// The file that records a forced new cluster (`--force-new-cluster`) in a data directory.
pub const FORCED_FILE: &str = "forced-new-cluster";
/// The most read of it (it holds one line of about 80 bytes).
const MAX_FORCED_FILE_BYTES: u64 = 4 << 10;

fn usage(m: impl Into<String>) -> ServerError {
    ServerError::usage(m)
}

fn corrupt(m: impl Into<String>) -> ServerError {
    ServerError {
        exit_code: EXIT_CORRUPT,
        message: m.into(),
    }
}

/// Whether `dir` holds no state at all (missing, or without log segments and hard state):
/// what a server finds when its disk was lost or is not mounted, and at a first start. A
/// directory that cannot be listed (no permission) is not called blank: opening it then
/// reports the real cause.
pub(super) fn dir_is_blank(dir: &Path) -> bool {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
    };
    !rd.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".wal") || name.starts_with("hardstate.") || name.ends_with(".snap")
    })
}

fn wal_options(cfg: &ServerConfig) -> WalOptions {
    WalOptions {
        segment_bytes: cfg.wal_segment_bytes,
        ..WalOptions::default()
    }
}

fn open_wal(cfg: &ServerConfig) -> Result<(Wal, Boot), ServerError> {
    Wal::open(&cfg.data_dir, wal_options(cfg)).map_err(ServerError::from)
}

fn write_durably(wal: &mut Wal, batch: &WriteBatch, what: &str) -> Result<(), ServerError> {
    wal.write(batch)
        .and_then(|_| wal.sync())
        .map_err(|e| ServerError::runtime(format!("cannot write {what}: {e}")))
}

/// The cluster id of a cluster restored from a backup: a hash of the backup's origin (its
/// cluster, index and checksum) and the new members, the same on every restored member.
fn restored_cluster_id(
    source: u64,
    index: u64,
    checksum: &[u8],
    cluster: &[(NodeId, String)],
) -> u64 {
    let mut list = cluster.to_vec();
    let crc = checksum
        .iter()
        .fold(String::new(), |s, b| format!("{s}{b:02x}"));
    list.push((
        NodeId(0),
        format!("restored from {source} at {index} ({crc})"),
    ));
    crate::config::cluster_id_of(&list)
}

/// A backup checked by `check_restore`, written by `write_restore` once the start-up has
/// settled that this server may form the new cluster.
pub(super) struct Restore {
    file: PathBuf,
    meta: BackupMeta,
    data: Vec<u8>,
    keys: usize,
    /// The new cluster's id (never the backup's own).
    pub cluster_id: u64,
}

/// What a start leaves in a data directory before the cluster's first byte: a restore that
/// failed after it (a busy port, a refusal by the servers it asked) may run again.
fn leftover_of_a_start(name: &str) -> bool {
    matches!(name, "LOCK" | "hardstate.0" | "hardstate.1")
        || name == crate::wal::identity::IDENTITY_FILE
        || name.ends_with(".wal")
        || name.ends_with(".tmp")
}

/// `zattd --restore FILE`, first half: checks the backup whole (its file checksum, its layout,
/// the dictionary snapshot's own checksum and index) and that the data directory holds no data,
/// and settles the new cluster id. Writes nothing.
pub(super) fn check_restore(cfg: &ServerConfig, file: &Path) -> Result<Restore, ServerError> {
    let dir = &cfg.data_dir;
    if let Err(e) = std::fs::metadata(file) {
        return Err(usage(format!(
            "cannot read --restore {}: {e}",
            file.display()
        )));
    }
    let max = WalOptions::default().max_snapshot_bytes;
    let (meta, data) =
        read_backup(file, max).map_err(|e| corrupt(format!("{e}; nothing was written")))?;
    let kv = Kv::restore(&data, KvConfig::default()).map_err(|e| {
        corrupt(format!(
            "backup {} is unusable: its snapshot does not restore ({e}); nothing was written",
            file.display()
        ))
    })?;
    if kv.applied_index().0 != meta.index {
        return Err(corrupt(format!(
            "backup {} is unusable: its snapshot stands for index {}, the file says {}; nothing \
             was written",
            file.display(),
            kv.applied_index().0,
            meta.index
        )));
    }
    if meta.index == 0 || meta.term == 0 {
        return Err(corrupt(format!(
            "backup {} is unusable: it stands for no log position; nothing was written",
            file.display()
        )));
    }
    let checksum = &data[data.len().saturating_sub(4)..];
    let cluster_id = match cfg.cluster_id {
        Some(id) => id,
        None => restored_cluster_id(meta.cluster_id, meta.index, checksum, &cfg.cluster),
    };
    if cluster_id == meta.cluster_id {
        return Err(usage(format!(
            "--cluster-id {cluster_id} is the backup's own cluster's: a restored cluster needs \
             an id of its own, so that servers of the old one cannot talk to it; nothing was \
             written"
        )));
    }
    let not_empty = || {
        usage(format!(
            "--restore needs an empty data directory, and {} is not (restored already? then \
             start without --restore); nothing was written",
            dir.display()
        ))
    };
    let names = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<String>>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        ServerError::runtime(format!("cannot read data directory {}: {e}", dir.display()))
    })?;
    for name in &names {
        // The cluster id is written before the restored state (see `write_restore`): a restore
        // cut short between the two runs again.
        let own_cluster_id = name == start::CLUSTER_ID_FILE
            && matches!(start::read_cluster_id(dir), Ok(Some(id)) if id == cluster_id);
        if !(leftover_of_a_start(name) || own_cluster_id) {
            return Err(not_empty());
        }
    }
    Ok(Restore {
        file: file.to_path_buf(),
        meta,
        data,
        keys: kv.len(),
        cluster_id,
    })
}

impl Restore {
    /// The refusal for a data directory whose log turned out to hold data.
    pub(super) fn not_empty(&self, dir: &Path) -> ServerError {
        usage(format!(
            "--restore needs an empty data directory, and {} holds a log (restored already? \
             then start without --restore)",
            dir.display()
        ))
    }
}

/// `zattd --restore FILE`, second half, in place of bootstrapping the initial membership: the
/// cluster id, then the backup's snapshot with the membership `--cluster` names, at the
/// backup's index and term, committed. Returns the state written, as a restart would recover it.
pub(super) fn write_restore(
    cfg: &ServerConfig,
    r: Restore,
    wal: &mut Wal,
) -> Result<Boot, ServerError> {
    let dir = &cfg.data_dir;
    // First: a restart that finds the snapshot must find the new cluster's id with it, never
    // derive another from --cluster.
    start::write_cluster_id(dir, r.cluster_id)?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(r.meta.index),
            term: Term(r.meta.term),
            membership: Membership::of_voters(cfg.cluster.iter().cloned()),
        },
        data: SnapshotData::from(r.data),
    };
    let hard_state = HardState {
        term: Term(r.meta.term),
        vote: None,
        commit: LogIndex(r.meta.index),
        lost: None,
    };
    let batch = WriteBatch {
        snapshot: Some(snapshot.clone()),
        hard_state: Some(hard_state),
        entries: Vec::new(),
    };
    write_durably(wal, &batch, "the restored snapshot")?;
    info!(
        "n{}: restored {} (cluster {}, index {}, term {}, {} keys) into {} as cluster {} with \
         {} voters",
        cfg.id,
        r.file.display(),
        r.meta.cluster_id,
        r.meta.index,
        r.meta.term,
        r.keys,
        dir.display(),
        r.cluster_id,
        cfg.cluster.len()
    );
    Ok(Boot {
        hard_state,
        snapshot: Some(snapshot),
        entries: Vec::new(),
        heard: Default::default(),
    })
}

/// A forced new cluster checked and ready to write (`Force::write`): the log it keeps is open.
pub(super) struct Force {
    wal: Wal,
    batch: WriteBatch,
    lost: Option<LostEntries>,
    /// This server's address in the new membership.
    pub addr: String,
    index: LogIndex,
    term: Term,
    last_index: LogIndex,
    known_committed: LogIndex,
}

/// `zattd --force-new-cluster`, first half: every check that can refuse it, and the membership
/// it will write (this server the only voter, keeping its committed log). Opens the log as any
/// start's recovery does (which may take the lock, delete `.tmp` files and cut a torn tail),
/// and writes nothing of the force itself, so that the start-up can still refuse (a TLS file,
/// a busy port) with no new membership written.
pub(super) fn plan_force_new_cluster(cfg: &ServerConfig) -> Result<Force, ServerError> {
    let dir = &cfg.data_dir;
    let marker = dir.join(FORCED_FILE);
    // Any marker refuses, even one that cannot be read: what it records is that a force was
    // made here.
    let forced = match read_bounded(&marker, MAX_FORCED_FILE_BYTES) {
        Ok(text) => Some(String::from_utf8_lossy(&text).trim().to_string()),
        Err(e) if e.is_not_found() => None,
        Err(e) => Some(format!("{} {e}", marker.display())),
    };
    if let Some(how) = forced {
        return Err(usage(format!(
            "{} was already forced into a new cluster ({how}); start it without \
             --force-new-cluster (delete {} only to force it again after another loss)",
            dir.display(),
            marker.display()
        )));
    }
    let none = || {
        usage(format!(
            "--force-new-cluster keeps a surviving server's data, and {} holds none",
            dir.display()
        ))
    };
    // Other files (a lock, an identity, what a failed start left) are not a log to keep.
    if dir_is_blank(dir) {
        return Err(none());
    }
    let (wal, boot) = open_wal(cfg)?;
    let snapshot_index = boot.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
    let last_index = boot.entries.last().map_or(snapshot_index, |e| e.index);
    if last_index == LogIndex(0) {
        return Err(none());
    }
    let known_committed = boot.hard_state.commit.max(snapshot_index).min(last_index);
    let membership = boot
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Config)
        .find_map(|e| Membership::decode(&e.data).ok().map(|(m, _)| m))
        .or_else(|| boot.snapshot.as_ref().map(|s| s.meta.membership.clone()))
        .unwrap_or_default();
    let addr = match (&cfg.listen, membership.members.get(&cfg.id)) {
        (Some(l), _) => l.clone(),
        (None, Some(me)) => me.addr.clone(),
        (None, None) => {
            return Err(usage(format!(
                "node {} is not in the membership {} holds; give --listen HOST:PORT",
                cfg.id,
                dir.display()
            )))
        }
    };
    let max_term = boot
        .entries
        .iter()
        .map(|e| e.term)
        .chain(boot.snapshot.as_ref().map(|s| s.meta.term))
        .chain(std::iter::once(boot.hard_state.term))
        .chain(boot.hard_state.lost.map(|l| l.term))
        .max()
        .unwrap_or(Term(0));
    // A term no leader of the old cluster can have used here: the entry below is this
    // server's own, and must not look like anyone else's.
    let term = Term(max_term.0 + 1);
    let index = LogIndex(last_index.0 + 1);
    let alone = Membership::of_voters([(cfg.id, addr.clone())]);
    let batch = WriteBatch {
        snapshot: None,
        hard_state: Some(HardState {
            term,
            vote: None,
            commit: index,
            lost: None,
        }),
        entries: vec![Entry::new(term, index, EntryKind::Config, &alone.encoded())],
    };
    Ok(Force {
        wal,
        batch,
        lost: boot.hard_state.lost,
        addr,
        index,
        term,
        last_index,
        known_committed,
    })
}

impl Force {
    /// `zattd --force-new-cluster`, second half: writes the membership `plan_force_new_cluster`
    /// made, a fresh identity and the marker.
    pub(super) fn write(self, cfg: &ServerConfig) -> Result<(), ServerError> {
        let Force {
            mut wal,
            batch,
            lost,
            addr,
            index,
            term,
            last_index,
            known_committed,
        } = self;
        let dir = &cfg.data_dir;
        let marker = dir.join(FORCED_FILE);
        write_durably(&mut wal, &batch, "the forced membership")?;
        drop(wal);
        let unknown = last_index.0.saturating_sub(known_committed.0);
        if let Some(b) = lost {
            warn!(
                "n{}: its log had lost a damaged tail (entries through index {} of term {} at \
                 most); those that are not in the log kept are gone for good",
                cfg.id, b.index.0, b.term.0
            );
        }
        // A fresh identity: its log now says things the old incarnation never did.
        Identity::generate()
            .and_then(|i| i.store(dir))
            .map_err(|e| {
                ServerError::runtime(format!(
                    "cannot write a new identity for {}: {e}",
                    dir.display()
                ))
            })?;
        // After the write: a process that dies between the two forces again at the next start,
        // which only repeats the same one-member membership (nobody was added in between).
        let note = format!(
            "n{} forced at index {} term {}, its log kept through index {}\n",
            cfg.id, index.0, term.0, last_index.0
        );
        write_marker(dir, &marker, &note)?;
        warn!(
            "n{}: FORCED A NEW CLUSTER from {}: the only voter now, at {addr}; kept its whole log \
             through index {} (known committed through {}, {unknown} entries after that now \
             committed too), new membership at index {} term {}; add servers with --join and \
             `zatt member add`",
            cfg.id,
            dir.display(),
            last_index.0,
            known_committed.0,
            index.0,
            term.0
        );
        Ok(())
    }
}

fn write_marker(dir: &Path, marker: &Path, text: &str) -> Result<(), ServerError> {
    let tmp = dir.join(format!("{FORCED_FILE}.tmp"));
    (|| -> io::Result<()> {
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, marker)?;
        std::fs::File::open(dir)?.sync_all()
    })()
    .map_err(|e| ServerError::runtime(format!("cannot write {}: {e}", marker.display())))
}

#[cfg(test)]
mod tests {
    use super::dir_is_blank;

    #[test]
    fn only_a_missing_or_stateless_directory_is_blank() {
        // Goal: a directory that cannot be listed is not taken for a blank one (the start
        // would then be refused for a missing --cluster, hiding the real cause). Method: a
        // missing path, an empty directory, one holding a hard-state file, and a symbolic
        // link that points at itself (listing it fails; root may list anything else).
        let base = std::env::temp_dir().join(format!("zatt-blank-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("empty")).unwrap();
        std::fs::create_dir_all(base.join("used")).unwrap();
        std::fs::write(base.join("used").join("hardstate.0"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("loop"), base.join("loop")).unwrap();
        let blank = |name: &str| dir_is_blank(&base.join(name));
        let got = [
            blank("missing"),
            blank("empty"),
            blank("used"),
            blank("loop"),
        ];
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(got, [true, true, false, false]);
    }
}
