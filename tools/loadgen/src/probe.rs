//! The environment probe printed with every benchmark: how long an fdatasync takes in the data
//! directory's file system, a loopback UDP round trip, the load average and the CPU count. A run
//! taken while the disk or the CPUs were busy shows it here. Owns only short, bounded measurements.

use crate::args::{Format, ProbeConfig};
use crate::hist::Histogram;
use crate::report::json_str;
use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Probe {
    pub fsync_p50_us: f64,
    pub fsync_p99_us: f64,
    pub udp_rtt_p50_us: f64,
    pub udp_rtt_p99_us: f64,
    pub loadavg: String,
    pub cpus: usize,
    pub fs_dir: String,
}

/// Times `samples` 4 KiB appends each followed by fdatasync, in a scratch file in `dir`.
fn fsync_latency(dir: &std::path::Path, samples: usize) -> std::io::Result<Histogram> {
    let path = dir.join(format!(".loadgen-probe-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let mut h = Histogram::new();
    let result = (|| {
        for _ in 0..samples {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            h.record(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.map(|_| h)
}

/// Times `samples` 64-byte ping-pongs between two UDP sockets on 127.0.0.1, the echo side in a
/// second thread, as the servers' peer traffic does.
fn udp_round_trip(samples: usize) -> std::io::Result<Histogram> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    echo.set_read_timeout(Some(Duration::from_secs(1)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    client.connect(echo.local_addr()?)?;
    let n = samples;
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        for _ in 0..n {
            match echo.recv_from(&mut buf) {
                Ok((len, from)) => {
                    let _ = echo.send_to(&buf[..len], from);
                }
                Err(_) => return,
            }
        }
    });
    let msg = [7u8; 64];
    let mut buf = [0u8; 128];
    let mut h = Histogram::new();
    for _ in 0..samples {
        let start = Instant::now();
        client.send(&msg)?;
        if client.recv(&mut buf).is_err() {
            break;
        }
        h.record(start.elapsed().as_nanos() as u64);
    }
    let _ = t.join();
    Ok(h)
}

pub fn run_probe(cfg: &ProbeConfig) -> std::io::Result<Probe> {
    let fs = fsync_latency(&cfg.dir, cfg.fsync_samples)?;
    let udp = udp_round_trip(cfg.udp_samples)?;
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(Probe {
        fsync_p50_us: us(fs.percentile_ns(50.0)),
        fsync_p99_us: us(fs.percentile_ns(99.0)),
        udp_rtt_p50_us: us(udp.percentile_ns(50.0)),
        udp_rtt_p99_us: us(udp.percentile_ns(99.0)),
        loadavg,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fs_dir: std::fs::canonicalize(&cfg.dir)
            .unwrap_or_else(|_| cfg.dir.clone())
            .display()
            .to_string(),
    })
}

impl Probe {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => format!(
                "{{\"fsync_p50_us\":{:.1},\"fsync_p99_us\":{:.1},\"udp_rtt_p50_us\":{:.1},\
                 \"udp_rtt_p99_us\":{:.1},\"loadavg\":{},\"cpus\":{},\"fs_dir\":{}}}",
                self.fsync_p50_us,
                self.fsync_p99_us,
                self.udp_rtt_p50_us,
                self.udp_rtt_p99_us,
                json_str(&self.loadavg),
                self.cpus,
                json_str(&self.fs_dir)
            ),
            Format::Text => format!(
                "probe: fdatasync 4KiB p50 {:.0} µs p99 {:.0} µs ({}); loopback UDP RTT p50 {:.1} µs \
                 p99 {:.1} µs; load average {}; {} CPUs",
                self.fsync_p50_us,
                self.fsync_p99_us,
                self.fs_dir,
                self.udp_rtt_p50_us,
                self.udp_rtt_p99_us,
                self.loadavg,
                self.cpus
            ),
        }
    }
}
