//! A local cluster of `zattd` processes on loopback for the failover mode and the tests: start,
//! kill -9 one server, restart it, wait for a leader, stop all. Only ever signals the processes it
//! started (by their `Child` handle). Must not decide anything about Raft; it only asks Status.

use crate::blocking::BlockingConn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zatt::wire::client::Status;

pub struct LocalCluster {
    pub zattd: PathBuf,
    pub dir: PathBuf,
    pub addrs: Vec<SocketAddr>,
    pub extra_args: Vec<String>,
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// Starts servers 1..=n on ports base..base+n-1, data in `dir/N`, logs in `dir/N.log`.
    pub fn start(
        zattd: &Path,
        dir: &Path,
        base_port: u16,
        n: usize,
        extra_args: Vec<String>,
    ) -> Result<LocalCluster, String> {
        if !zattd.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release --bin zattd` or pass --zattd",
                zattd.display()
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base_port + i as u16)))
            .collect();
        let mut c = LocalCluster {
            zattd: zattd.to_path_buf(),
            dir: dir.to_path_buf(),
            addrs,
            extra_args,
            children: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            c.start_server(i)?;
        }
        Ok(c)
    }

    pub fn cluster_flag(&self) -> String {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={}", i + 1, a))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoints_flag(&self) -> String {
        self.addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) server index `i` (node id i+1) with its existing data directory.
    pub fn start_server(&mut self, i: usize) -> Result<(), String> {
        let data = self.dir.join(format!("{}", i + 1));
        let log_path = self.dir.join(format!("{}.log", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.zattd)
            .arg("--id")
            .arg((i + 1).to_string())
            .arg("--cluster")
            .arg(self.cluster_flag())
            .arg("--data-dir")
            .arg(&data)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.zattd.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    /// kill -9 server `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether server `i` exited on its own (its exit status), for error messages.
    pub fn exited(&mut self, i: usize) -> Option<String> {
        let c = self.children[i].as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(format!(
                "server {} exited: {st} (see {})",
                i + 1,
                self.dir.join(format!("{}.log", i + 1)).display()
            )),
            _ => None,
        }
    }

    pub fn status(&self, i: usize, timeout: Duration) -> Option<Status> {
        crate::blocking::status_of(self.addrs[i], None, timeout)
    }

    /// Waits until a running server says it leads; returns its index and status.
    pub fn wait_for_leader(&mut self, wait: Duration) -> Result<(usize, Status), String> {
        let deadline = Instant::now() + wait;
        loop {
            for i in 0..self.addrs.len() {
                if let Some(e) = self.exited(i) {
                    return Err(e);
                }
                if self.children[i].is_none() {
                    continue;
                }
                if let Some(s) = self.status(i, Duration::from_millis(200)) {
                    if s.role == "leader" {
                        return Ok((i, s));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no leader within {wait:?} (logs in {})",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until server `i` answers Status and has applied at least `index`.
    pub fn wait_caught_up(&mut self, i: usize, index: u64, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.exited(i) {
                return Err(e);
            }
            if let Some(s) = self.status(i, Duration::from_millis(200)) {
                if s.applied_index >= index {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server {} did not catch up to {index} within {wait:?}",
                    i + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A persistent Status connection to one server, reopened when it fails; for polling every
/// millisecond without a connect per poll.
pub struct StatusPoller {
    addr: SocketAddr,
    conn: Option<BlockingConn>,
}

impl StatusPoller {
    pub fn new(addr: SocketAddr) -> StatusPoller {
        StatusPoller { addr, conn: None }
    }

    pub fn poll(&mut self, timeout: Duration) -> Option<Status> {
        if self.conn.is_none() {
            self.conn = BlockingConn::connect(self.addr, None, timeout).ok();
        }
        let c = self.conn.as_mut()?;
        match c.status() {
            Ok(s) => Some(s),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }
}
