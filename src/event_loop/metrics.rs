//! What the loop counts (client requests by operation, their errors by kind and their latency,
//! connections, HTTP requests), the periodic measurement of free disk space it feeds the host,
//! and the gathering of one `/metrics` scrape from every owner of a figure: the host's
//! families, the loop's, the syncer's (fsync latency, WAL size) and the peer codec's (dropped
//! datagrams). Counters are plain fields bumped on the loop thread. Must not block: everything
//! here is arithmetic on memory, plus one `statvfs` a second.

use super::*;
use crate::metrics::{Exposition, Histogram};
use crate::wire::client::{request_name, ErrorKind};
use std::path::Path;

/// Slots for request opcodes and error kinds (an opcode or kind beyond them counts in slot 0,
/// "unknown").
const SLOTS: usize = 32;

/// How often free disk space is measured.
pub(super) const DISK_CHECK: Duration = Duration::from_secs(1);

/// The loop's counters.
pub(super) struct LoopMetrics {
    /// Requests answered, by opcode.
    requests: [u64; SLOTS],
    /// Error answers, by opcode and error kind.
    errors: [[u64; SLOTS]; SLOTS],
    /// Time from the loop turn that read a request to the one that answered it, by opcode.
    latency: Vec<Histogram>,
    /// The kind names seen, by code (for labels).
    kind_names: [&'static str; SLOTS],
    pub conns_accepted: u64,
    pub conns_refused: u64,
    /// HTTP answers by status code.
    pub http: BTreeMap<u16, u64>,
}

impl Default for LoopMetrics {
    fn default() -> LoopMetrics {
        LoopMetrics {
            requests: [0; SLOTS],
            errors: [[0; SLOTS]; SLOTS],
            latency: (0..SLOTS).map(|_| Histogram::latency()).collect(),
            kind_names: [""; SLOTS],
            conns_accepted: 0,
            conns_refused: 0,
            http: BTreeMap::new(),
        }
    }
}

fn slot(op: u8) -> usize {
    if (op as usize) < SLOTS {
        op as usize
    } else {
        0
    }
}

impl LoopMetrics {
    /// One answer to a request with opcode `op`, read `waited` ago.
    pub fn answered(&mut self, op: u8, error: Option<&ErrorKind>, waited: Duration) {
        let o = slot(op);
        self.requests[o] += 1;
        self.latency[o].observe_us(waited.as_micros().min(u64::MAX as u128) as u64);
        if let Some(k) = error {
            let c = slot(k.code());
            self.errors[o][c] += 1;
            self.kind_names[c] = k.name();
        }
    }

    fn write(&self, e: &mut Exposition) {
        let op_name = |o: usize| {
            if o == 0 {
                "unknown"
            } else {
                request_name(o as u8)
            }
        };
        e.family(
            "zatt_client_requests_total",
            "counter",
            "Client requests answered, by operation.",
        );
        for (o, n) in self.requests.iter().enumerate() {
            if *n > 0 {
                e.sample(
                    "zatt_client_requests_total",
                    &[("op", op_name(o))],
                    *n as f64,
                );
            }
        }
        e.family(
            "zatt_client_errors_total",
            "counter",
            "Client requests answered with an error, by operation and error kind.",
        );
        for (o, row) in self.errors.iter().enumerate() {
            for (k, n) in row.iter().enumerate() {
                if *n > 0 {
                    e.sample(
                        "zatt_client_errors_total",
                        &[("op", op_name(o)), ("kind", self.kind_names[k])],
                        *n as f64,
                    );
                }
            }
        }
        e.family(
            "zatt_client_request_duration_seconds",
            "histogram",
            "Time from the loop turn that read a client request to the one that answered it, by operation.",
        );
        for (o, h) in self.latency.iter().enumerate() {
            if h.count() > 0 {
                e.histogram_samples(
                    "zatt_client_request_duration_seconds",
                    &[("op", op_name(o))],
                    h,
                );
            }
        }
        e.counter(
            "zatt_client_connections_accepted_total",
            "Client connections accepted.",
            self.conns_accepted,
        );
        e.counter(
            "zatt_client_connections_refused_total",
            "Client connections refused over --max-connections.",
            self.conns_refused,
        );
        e.family(
            "zatt_http_requests_total",
            "counter",
            "Requests to this HTTP endpoint, by status code answered.",
        );
        for (code, n) in &self.http {
            let c = code.to_string();
            e.sample("zatt_http_requests_total", &[("code", &c)], *n as f64);
        }
    }
}

/// Bytes available to the server and the size of the file system holding `dir`.
pub(super) fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct it is given; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let frsize = st.f_frsize as u64;
        Some((
            (st.f_bavail as u64).saturating_mul(frsize),
            (st.f_blocks as u64).saturating_mul(frsize),
        ))
    }
}

impl Server {
    /// Measures free disk space and tells the host.
    pub(super) fn check_disk(&mut self) {
        match disk_space(&self.cfg.data_dir) {
            Some((free, total)) => self.host.disk_space(free, total),
            None => debug!(
                "n{}: cannot measure free space of {}",
                self.io.id,
                self.cfg.data_dir.display()
            ),
        }
    }

    /// The text of one `/metrics` scrape.
    pub(super) fn metrics_text(&self) -> String {
        let mut e = Exposition::new();
        e.family(
            "zatt_build_info",
            "gauge",
            "Always 1; the labels say which server this is.",
        );
        let id = self.io.id.0.to_string();
        let cluster = self.cluster_id.to_string();
        e.sample(
            "zatt_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("id", &id),
                ("cluster_id", &cluster),
            ],
            1.0,
        );
        self.host.write_metrics(&mut e);
        self.io.metrics.write(&mut e);
        e.gauge(
            "zatt_client_connections",
            "Client connections open (within --max-connections).",
            self.real_conns as f64,
        );
        e.family(
            "zatt_peer_datagrams_dropped_total",
            "counter",
            "Peer datagrams dropped, by reason.",
        );
        for (reason, n) in self.io.codec.drops().iter() {
            e.sample(
                "zatt_peer_datagrams_dropped_total",
                &[("reason", reason)],
                n as f64,
            );
        }
        e.sample(
            "zatt_peer_datagrams_dropped_total",
            &[("reason", "SendFailed")],
            (self.io.udp_send_drops + self.io.syncer.send_drops()) as f64,
        );
        // Raft messages the host refused for a peer's storage identity (`host/peers.rs`).
        for (reason, n) in self.host.incarnation_drops() {
            e.sample(
                "zatt_peer_datagrams_dropped_total",
                &[("reason", reason)],
                n as f64,
            );
        }
        e.gauge(
            "zatt_wal_bytes",
            "Bytes the write-ahead log holds on disk.",
            self.io.syncer.size_bytes() as f64,
        );
        e.counter(
            "zatt_wal_fsyncs_total",
            "Durable writes of the write-ahead log, one per group commit (a direct O_DSYNC write, or write + fdatasync).",
            self.io.syncer.syncs(),
        );
        e.histogram(
            "zatt_wal_fsync_duration_seconds",
            "Duration of each durable write of the write-ahead log (the fdatasync, or the whole direct write).",
            &self.io.syncer.fsync_histogram(),
        );
        e.finish()
    }
}
