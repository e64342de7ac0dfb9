//! Reading a small file whole, with a bound: the files options name (`config.rs`) and the small
//! files of a data directory (`identity`, `cluster-id`, the forced-cluster marker, the
//! hard-state files, a snapshot). Refuses anything but a regular file (a device such as
//! /dev/zero, a FIFO or a directory has no size to check first, and reading one could not end
//! or could wait forever for a writer) and a file larger than its bound, and never reads more
//! than the bound and one byte, whatever the file does while it is read: no allocation is sized
//! by what a file claims. Must not: interpret the bytes, or write; callers word the errors.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Opening, inspecting or reading it failed (a missing file among these: `is_not_found`).
    Io(io::Error),
    /// A directory, device, FIFO or socket.
    NotRegular,
    /// Over the bound: `size` is what the file said it holds, `None` when it grew while read.
    TooLarge { limit: u64, size: Option<u64> },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Said of the file, after its name: `PATH: is not a regular file`.
impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot be read: {e}"),
            ReadError::NotRegular => f.write_str("is not a regular file"),
            ReadError::TooLarge { limit, .. } => {
                write!(f, "is larger than {}", show_limit(*limit))
            }
        }
    }
}

/// `n` bytes as limits are written (`64 KiB`, `1 MiB`, `64 bytes`).
pub fn show_limit(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// The whole of the regular file `path`, at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_bounded_file(path, limit).map(|(bytes, _)| bytes)
}

/// `read_bounded`, also handing back the open file (read-only).
pub fn read_bounded_file(path: &Path, limit: u64) -> Result<(Vec<u8>, File), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO without a writer would otherwise wait for one; on a regular
    // file it changes nothing.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            limit,
            size: Some(meta.len()),
        });
    }
    let mut b = Vec::with_capacity(meta.len() as usize);
    (&f).take(limit + 1)
        .read_to_end(&mut b)
        .map_err(ReadError::Io)?;
    if b.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit, size: None });
    }
    Ok((b, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        // Goal: a file within its bound is read whole; a missing one says so; a directory, a
        // device and a FIFO (which would block an ordinary open) are refused without reading;
        // a file one byte over is refused by its size.
        let dir = std::env::temp_dir().join(format!("zatt-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        std::fs::write(&ok, b"12345").unwrap();
        assert_eq!(read_bounded(&ok, 5).unwrap(), b"12345");
        let e = read_bounded(&ok, 4).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    limit: 4,
                    size: Some(5)
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "is larger than 4 bytes");
        assert!(read_bounded(&dir.join("missing"), 5)
            .unwrap_err()
            .is_not_found());
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for p in [dir.as_path(), Path::new("/dev/zero"), fifo.as_path()] {
            let e = read_bounded(p, 1 << 20).unwrap_err();
            assert!(matches!(e, ReadError::NotRegular), "{}: {e:?}", p.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
