//! The disk-space alarm: the driver measures the free space of the data directory's file
//! system (it alone can) and reports it through [`Host::disk_space`]; the host decides. While
//! free space is below `--min-free-disk`, this node, as leader, refuses writes that add data
//! (Put, and Cas with a new value) with `NoSpace`; deletes, compare-and-delete, session
//! registrations and membership changes still go through (they are how an operator makes room
//! or moves the cluster to bigger disks), and so do reads and status. The alarm clears by
//! itself at the first measurement back above the threshold. Must not stop the node: an actual
//! failed write still stops the process in storage (exit 74), which this alarm exists to make
//! rare.

use super::*;
use log::{info, warn};

/// The threshold below which the alarm is raised: a size, or a share of the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinFreeDisk {
    Bytes(u64),
    /// Hundredths of a percent of the file system's size (500 = 5%).
    BasisPoints(u32),
}

impl Default for MinFreeDisk {
    fn default() -> MinFreeDisk {
        MinFreeDisk::Bytes(DEFAULT_MIN_FREE_DISK_BYTES)
    }
}

/// `--min-free-disk`'s default: room for a few WAL segments and a snapshot of a modest
/// dictionary, so that the alarm comes well before a write fails.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 << 20;

impl MinFreeDisk {
    /// The threshold in bytes on a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFreeDisk::Bytes(b) => b,
            MinFreeDisk::BasisPoints(bp) => {
                (total as u128 * bp as u128 / 10_000).min(u64::MAX as u128) as u64
            }
        }
    }
}

/// What the last measurement said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct DiskState {
    pub free: u64,
    pub min: u64,
    pub alarm: bool,
}

impl Host {
    /// The driver measured the data directory's file system: `free` bytes available to the
    /// server out of `total`. Raises or clears the alarm.
    pub fn disk_space(&mut self, free: u64, total: u64) {
        let min = self.cfg.min_free_disk.bytes_of(total);
        let alarm = min > 0 && free < min;
        if alarm && !self.disk.alarm {
            warn!(
                "{}: disk space alarm: {free} bytes free, below --min-free-disk {min} bytes; \
                 refusing writes that add data until space is freed",
                self.who()
            );
        } else if !alarm && self.disk.alarm {
            info!(
                "{}: disk space alarm cleared: {free} bytes free (--min-free-disk {min} bytes); \
                 writes accepted again",
                self.who()
            );
        }
        self.disk = DiskState { free, min, alarm };
    }

    /// Whether the disk-space alarm is raised.
    pub fn disk_alarm(&self) -> bool {
        self.disk.alarm
    }

    /// The refusal for a write that would add data while the alarm is raised.
    pub(super) fn no_space(&self) -> ErrorKind {
        ErrorKind::NoSpace {
            free_bytes: self.disk.free,
            min_free_bytes: self.disk.min,
        }
    }
}

/// Whether a write adds data (refused under the alarm) rather than only removing it or
/// registering a session.
pub(super) fn adds_data(req: &crate::wire::client::RequestView<'_>) -> bool {
    use crate::wire::client::RequestView;
    matches!(
        req,
        RequestView::Put { .. } | RequestView::Cas { new: Some(_), .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_in_bytes_and_in_shares() {
        assert_eq!(MinFreeDisk::Bytes(5).bytes_of(1000), 5);
        assert_eq!(MinFreeDisk::BasisPoints(500).bytes_of(1_000_000), 50_000);
        assert_eq!(
            MinFreeDisk::BasisPoints(10_000).bytes_of(u64::MAX),
            u64::MAX
        );
        assert_eq!(MinFreeDisk::BasisPoints(0).bytes_of(1 << 40), 0);
    }
}
