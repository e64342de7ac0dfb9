//! The disk syncer thread: the only code that blocks on the WAL's `write` and `fdatasync`.
//! The event loop submits batches tagged with a token and never waits; the thread takes
//! everything queued, writes it all and makes it durable once (group commit: one direct
//! `O_DSYNC` write, or `write` + `fdatasync` where direct I/O is refused), sends the
//! datagrams that waited for it (a follower's acknowledgements: they leave without waiting for
//! the loop to wake), then reports every token of the group, in submit order, and wakes the
//! loop through `mio::Waker`.
//!
//! Use from the event loop, in outline:
//!
//! ```text
//! let (wal, boot) = Wal::open(dir, WalOptions::default())?;   // exit(err.exit_code()) on error
//! let raft = Raft::new(config, boot, seed);
//! let syncer = Syncer::spawn(wal, Arc::new(Waker::new(poll.registry(), WAKE_TOKEN)?), udp);
//! // each iteration: for a Ready that needs_persist(), syncer.submit_then_send(token, batch,
//! // encoded messages_after_persist, quiet) and keep (token, persist_mark) aside;
//! // at every turn (a quiet group's tokens come without a wake), drain_completed() and for
//! // each token in order call raft.persisted(..); before sleeping, awaited_completed().
//! ```
//!
//! Must not touch protocol state. On any write or sync error it stops the process (fail-stop:
//! a disk that failed once cannot be trusted with the next write): one clear line naming the file and the error, then exit
//! code 74 (`EXIT_DISK_FAILURE`); it never reports a token it could not make durable.

use super::{Wal, EXIT_DISK_FAILURE};
use crate::metrics::Histogram;
use crate::storage::{LogStorage, WriteBatch};
use crate::types::Snapshot;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// An fsync slower than this is logged as a warning.
const SLOW_FSYNC_US: u64 = 50_000;
/// fsync latencies kept for `fsync_latency_us`.
const LATENCY_WINDOW: usize = 1024;
/// Jobs taken into one group at most (bounds the memory of one write).
const MAX_GROUP_JOBS: usize = 4096;

/// What to do when the disk fails: by default print the message and exit with code 74.
/// Tests may inject another (it must not let the process go on using the WAL).
pub type FatalHandler = Box<dyn Fn(&str) + Send>;

/// A datagram to send once its batch is durable.
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    /// Of datagrams one sync releases with the same key, only the last is sent
    /// (`storage::release`). Only a message sent whole in one datagram has one.
    pub key: Option<(u64, u64)>,
}

enum Job {
    /// Token, batch, what to send once it is durable, and whether the loop may hear of it at
    /// its next turn instead of being woken (`submit_then_send`).
    Batch(u64, WriteBatch, Vec<Datagram>, bool),
    Snapshot(u64, Snapshot),
    Shutdown,
}

struct Shared {
    completed: Mutex<Vec<u64>>,
    latencies_us: Mutex<(Vec<u32>, usize)>,
    /// Every fdatasync's latency since start, for `/metrics`.
    fsync_histogram: Mutex<Histogram>,
    size_bytes: AtomicU64,
    syncs: AtomicU64,
    /// Datagrams the socket refused (a full buffer): Raft retransmits.
    send_drops: AtomicU64,
    /// The loop waits for the next token, quiet or not (`want_wake`).
    wake_wanted: AtomicBool,
}

pub struct Syncer {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The default fail-stop: one line on stderr, then exit 74.
pub fn exit_on_disk_failure(msg: &str) {
    eprintln!("zatt: fatal disk failure: {msg}; stopping (exit {EXIT_DISK_FAILURE})");
    log::logger().flush();
    std::process::exit(EXIT_DISK_FAILURE);
}

impl Syncer {
    /// `udp` sends the datagrams submitted with batches (without one they are counted as
    /// dropped).
    pub fn spawn(wal: Wal, waker: Arc<mio::Waker>, udp: Option<UdpSocket>) -> Syncer {
        Syncer::spawn_with(wal, waker, udp, Box::new(exit_on_disk_failure))
    }

    /// As `spawn`, with the fail-stop action given (tests).
    pub fn spawn_with(
        mut wal: Wal,
        waker: Arc<mio::Waker>,
        udp: Option<UdpSocket>,
        fatal: FatalHandler,
    ) -> Syncer {
        wal.set_defer_compaction(true);
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            completed: Mutex::new(Vec::new()),
            latencies_us: Mutex::new((Vec::with_capacity(LATENCY_WINDOW), 0)),
            fsync_histogram: Mutex::new(Histogram::latency()),
            size_bytes: AtomicU64::new(wal.size_bytes()),
            syncs: AtomicU64::new(0),
            send_drops: AtomicU64::new(0),
            wake_wanted: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("zatt-syncer".into())
            .spawn(move || run(wal, rx, sh, waker, udp, fatal))
            .unwrap_or_else(|e| {
                exit_on_disk_failure(&format!("cannot start the syncer thread: {e}"));
                unreachable!()
            });
        Syncer {
            tx,
            shared,
            thread: Some(thread),
        }
    }

    /// Queues a batch; `token` is reported by `completed` once the batch is durable. The
    /// queue is unbounded: the caller bounds what it has in flight (tokens not yet completed).
    pub fn submit(&self, token: u64, batch: WriteBatch) {
        self.submit_then_send(token, batch, Vec::new(), false);
    }

    /// As `submit`; once the batch is durable, and before `token` is reported, the thread
    /// sends `datagrams`. A group of only `quiet` batches does not wake the loop: their tokens
    /// wait in `completed` for the loop's next turn, unless `want_wake` was called since. (A
    /// follower's batches: their acknowledgements are the datagrams, and the loop has nothing
    /// to do for them that cannot wait for the next AppendEntries or tick, and each wake-up
    /// costs it a sleep and a switch.)
    pub fn submit_then_send(
        &self,
        token: u64,
        batch: WriteBatch,
        datagrams: Vec<Datagram>,
        quiet: bool,
    ) {
        // A send fails only once the thread has stopped, i.e. after a fail-stop in progress.
        let _ = self.tx.send(Job::Batch(token, batch, datagrams, quiet));
    }

    /// The loop now waits for tokens already submitted: the next group wakes it even if
    /// quiet. The loop must then look at `awaited_completed` before it sleeps: a group that
    /// finished just before this call did not see it.
    pub fn want_wake(&self) {
        self.shared.wake_wanted.store(true, Ordering::SeqCst);
    }

    /// Whether tokens wait to be drained that the loop asked to hear of (`want_wake`) and was
    /// not woken for. Once the thread has taken the wish it wakes the loop itself, so without
    /// a wish pending there is nothing to look at (and quiet tokens wait for the next turn).
    pub fn awaited_completed(&self) -> bool {
        self.shared.wake_wanted.load(Ordering::SeqCst) && self.has_completed()
    }

    /// Whether tokens wait to be drained.
    pub fn has_completed(&self) -> bool {
        !lock(&self.shared.completed).is_empty()
    }

    /// Queues a snapshot this node took itself (compaction), ordered with the batches.
    pub fn submit_snapshot(&self, token: u64, snap: Snapshot) {
        let _ = self.tx.send(Job::Snapshot(token, snap));
    }

    /// Tokens made durable since the last call, in submit order.
    pub fn completed(&self) -> Vec<u64> {
        let mut v = Vec::new();
        self.drain_completed(&mut v);
        v
    }

    /// As `completed`, appending to the caller's vector (no allocation in the loop).
    pub fn drain_completed(&self, out: &mut Vec<u64>) {
        let mut c = lock(&self.shared.completed);
        out.append(&mut c);
    }

    /// (p50, p99) of the recent `fdatasync` latencies, in microseconds; (0, 0) before any.
    pub fn fsync_latency_us(&self) -> (u64, u64) {
        let l = lock(&self.shared.latencies_us);
        if l.0.is_empty() {
            return (0, 0);
        }
        let mut v = l.0.clone();
        drop(l);
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as u64;
        (at(0.50), at(0.99))
    }

    /// Every `fdatasync` latency so far, in buckets.
    pub fn fsync_histogram(&self) -> Histogram {
        lock(&self.shared.fsync_histogram).clone()
    }

    /// Bytes the WAL holds on disk, as of the last group.
    pub fn size_bytes(&self) -> u64 {
        self.shared.size_bytes.load(Ordering::Relaxed)
    }

    /// Datagrams the thread could not send (the socket's buffer was full).
    pub fn send_drops(&self) -> u64 {
        self.shared.send_drops.load(Ordering::Relaxed)
    }

    /// Groups synced so far.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Makes everything submitted durable, then stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Job::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(
    mut wal: Wal,
    rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    waker: Arc<mio::Waker>,
    udp: Option<UdpSocket>,
    fatal: FatalHandler,
) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut tokens: Vec<u64> = Vec::new();
    let mut datagrams: Vec<Datagram> = Vec::new();
    loop {
        match rx.recv() {
            Ok(j) => jobs.push(j),
            Err(_) => return,
        }
        while jobs.len() < MAX_GROUP_JOBS {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut stop = false;
        let mut quiet = true;
        for job in jobs.drain(..) {
            let r = match job {
                Job::Batch(t, b, d, q) => {
                    quiet &= q;
                    tokens.push(t);
                    datagrams.extend(d);
                    wal.write(&b)
                }
                Job::Snapshot(t, s) => {
                    quiet = false;
                    tokens.push(t);
                    wal.save_snapshot(&s)
                }
                Job::Shutdown => {
                    stop = true;
                    Ok(())
                }
            };
            if let Err(e) = r {
                let what = if super::SnapshotWriteError::is(&e) {
                    "snapshot write failed"
                } else {
                    "WAL write failed"
                };
                fatal(&format!("{what}: {e}"));
                return;
            }
        }
        let syncs_before = wal.syncs();
        if let Err(e) = wal.sync() {
            fatal(&format!("WAL sync failed: {e}"));
            return;
        }
        if wal.syncs() != syncs_before {
            let us = wal.last_fdatasync_us();
            if us > SLOW_FSYNC_US {
                log::warn!("slow fsync {}ms", us / 1000);
            }
            lock(&shared.fsync_histogram).observe_us(us);
            let us = us.min(u32::MAX as u64) as u32;
            let mut l = lock(&shared.latencies_us);
            let (v, next) = &mut *l;
            if v.len() < LATENCY_WINDOW {
                v.push(us);
            } else {
                v[*next] = us;
            }
            *next = (*next + 1) % LATENCY_WINDOW;
            drop(l);
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        crate::storage::release(
            datagrams.drain(..),
            |d| d.key,
            |d| {
                // Nonblocking (the loop's socket): a full buffer drops it, as the loop's own sends.
                if !udp
                    .as_ref()
                    .is_some_and(|u| u.send_to(&d.bytes, d.to).is_ok())
                {
                    shared.send_drops.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        if !tokens.is_empty() {
            shared.size_bytes.store(wal.size_bytes(), Ordering::Relaxed);
            lock(&shared.completed).append(&mut tokens);
            // After publishing: `want_wake` then `awaited_completed` on the loop's side, so
            // one of the two sees the other.
            let wanted = shared.wake_wanted.swap(false, Ordering::SeqCst);
            if !quiet || wanted || stop {
                if let Err(e) = waker.wake() {
                    log::warn!("cannot wake the event loop: {e}");
                }
            }
        }
        if let Err(e) = wal.run_deferred_compaction() {
            fatal(&format!("WAL compaction failed: {e}"));
            return;
        }
        if stop {
            return;
        }
    }
}
