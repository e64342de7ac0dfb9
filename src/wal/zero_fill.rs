//! Writing whole files without the page cache: a new segment's zeros (`prepare_segment`) and a
//! snapshot file (`write_snapshot_file`); and, where the file system refuses direct I/O, the
//! zeros through the page cache, written back a chunk at a time.
//!
//! Through the page cache, 64 MiB of zeros are first copied into 16,384 cached pages, which the
//! kernel must take from free memory, and then written back. On a virtual machine whose free
//! memory is handed back to its host (free page reporting, as on the project's machine), each
//! of those pages costs a fault in the host when it is first touched again: in a profile of
//! three servers under 64 clients, the threads preparing segments took 15 % of the servers'
//! CPU, most of it in that copy (`perf/RESULTS.md`, tenth pass). Written with `O_DIRECT` from
//! one small buffer of zeros, the same segment touches no new memory: the disk reads the same
//! 256 KiB each time, and each write waits for the disk, which also paces the zeros against
//! the live log's syncs. A snapshot file is as large as the dictionary (124 MB at 1,000,000
//! keys of 16 B with 100 B values), and was the same cost: while three servers loaded
//! 1,000,000 keys, the copy of snapshot files into the page cache took 18.5 % of their CPU.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Direct writes need block-aligned memory, offsets and lengths; Linux file systems require
/// multiples of the device's logical block size (512 B or 4 KiB), and this is a multiple of both.
pub const ALIGN: usize = 4096;

/// Block-aligned memory for direct I/O, as a vector of these.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Block(pub [u8; ALIGN]);

/// The bytes of `blocks`, for direct writes from them.
pub fn as_bytes_mut(blocks: &mut [Block]) -> &mut [u8] {
    let len = std::mem::size_of_val(blocks);
    // SAFETY: `Block` is `repr(C)` over a byte array whose size equals its alignment, so a
    // slice of them is `len` contiguous initialised bytes, borrowed mutably here once.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), len) }
}

/// How a file system says it does not do direct I/O (at open, or for a write's alignment).
pub fn refuses(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// Writes bytes `0..end` of `path` with direct I/O, `chunk` bytes (a multiple of `ALIGN`) at a
/// time from one aligned buffer, which `fill(buf, offset)` fills with the bytes due at `offset`
/// (the buffer starts zeroed). `end` must be a multiple of `ALIGN`. Returns how many bytes it
/// wrote: less than `end` when the file system refuses direct I/O (at open, or `EINVAL` from a
/// write), and the caller then writes the rest through the page cache. Not durable until the
/// caller syncs the file.
fn stream(
    path: &Path,
    end: u64,
    chunk: usize,
    mut fill: impl FnMut(&mut [u8], u64),
) -> io::Result<u64> {
    debug_assert_eq!(end % ALIGN as u64, 0);
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if refuses(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut blocks = vec![Block([0; ALIGN]); (chunk / ALIGN).max(1)];
    let buf = as_bytes_mut(&mut blocks);
    let mut at = 0u64;
    while at < end {
        let n = buf.len().min((end - at) as usize);
        fill(&mut buf[..n], at);
        match f.write_all_at(&buf[..n], at) {
            Ok(()) => at += n as u64,
            Err(e) if refuses(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes zeros over `path`'s bytes `0..len` with direct I/O, `chunk` bytes at a time: returns
/// how many, less than `len` for the last `len % ALIGN` bytes or when the file system refuses
/// (see `stream`).
pub fn direct(path: &Path, len: u64, chunk: usize) -> io::Result<u64> {
    stream(path, len - len % ALIGN as u64, chunk, |_, _| {})
}

/// Writes `parts`, one after the other, from offset 0 of the new file `path` with direct I/O,
/// the last block padded with zeros: the caller cuts the file to the parts' length
/// (`set_len`) before it syncs. False, and the file's content undefined, when the file system
/// refuses direct I/O: the caller then writes every byte through the page cache.
pub fn write_parts(path: &Path, parts: &[&[u8]], chunk: usize) -> io::Result<bool> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let end = total.div_ceil(ALIGN) * ALIGN;
    let done = stream(path, end as u64, chunk, |buf, at| {
        // The bytes of the concatenated parts from `at`, zeros past their end.
        let (mut skip, mut out) = (at as usize, 0);
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            let n = (p.len() - skip).min(buf.len() - out);
            buf[out..out + n].copy_from_slice(&p[skip..skip + n]);
            out += n;
            skip = 0;
            if out == buf.len() {
                return;
            }
        }
        buf[out..].fill(0);
    })?;
    Ok(done == end as u64)
}

/// Writes zeros over bytes `from..len` of `f` through the page cache, `chunk` bytes at a time,
/// each chunk written back as it goes (`write_back`).
pub fn buffered(f: &File, from: u64, len: u64, chunk: usize) -> io::Result<()> {
    let zeros = vec![0u8; chunk.min(len.saturating_sub(from) as usize)];
    let mut at = from;
    while at < len {
        let n = zeros.len().min((len - at) as usize);
        f.write_all_at(&zeros[..n], at)?;
        // Only pacing: a write error, if any, comes back from the caller's final sync.
        let _ = write_back(f, at, n as u64);
        at += n as u64;
    }
    Ok(())
}

/// Writes `len` bytes of `f` from `offset` back to the disk and waits for them, without a cache
/// flush (the segment's final sync does that). Preparing a segment writes back its zeros a
/// chunk at a time: left to its final sync, a whole segment (64 MiB by default) went to the
/// disk in one burst of tens of milliseconds, and every sync of the live log, on this server
/// and on any other sharing the disk, waited behind it (`perf/RESULTS.md`, ninth pass).
fn write_back(f: &File, offset: u64, len: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the descriptor is `f`'s, open for the call; no pointer is passed.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new file open for reading and writing in a directory of its own, for this module's and
/// `direct`'s tests: (the directory, which the test removes, the file's path, the file).
#[cfg(test)]
pub(super) fn scratch_file(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, File) {
    let dir = std::env::temp_dir().join(format!("zatt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("file");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (dir, path, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn both_ways_leave_every_byte_zero_and_direct_reports_what_it_wrote() {
        let (dir, path, f) = scratch_file("zero-fill");
        // Not a multiple of the chunk, nor of the block: the tail is left to the caller.
        let len = 3 * 8192 + 4096 + 100;
        f.write_all_at(&vec![0xA5; len as usize], 0).unwrap();
        f.sync_all().unwrap();
        let done = direct(&path, len, 8192).unwrap();
        let direct_io = done > 0;
        if direct_io {
            assert_eq!(done, len - 100, "direct writes every whole block, no more");
        }
        let mut got = vec![0u8; len as usize];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..done as usize].iter().all(|&b| b == 0));
        assert!(
            got[done as usize..].iter().all(|&b| b == 0xA5),
            "nothing past it"
        );
        buffered(&f, done, len, 8192).unwrap();
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got.iter().all(|&b| b == 0));
        assert_eq!(
            f.metadata().unwrap().size(),
            len,
            "the length is left alone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parts_go_out_back_to_back_across_chunks_with_the_last_block_padded() {
        let (dir, path, f) = scratch_file("write-parts");
        let parts: Vec<Vec<u8>> = [100usize, 9000, 3, 0, 5000, 8192]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|k| (k * 3 + i * 101 + 1) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let want = parts.concat();
        if write_parts(&path, &refs, 8192).unwrap() {
            let padded = want.len().div_ceil(ALIGN) * ALIGN;
            let mut got = vec![0xA5u8; padded];
            f.read_exact_at(&mut got, 0).unwrap();
            assert!(got[..want.len()] == want[..], "the parts, in order");
            assert!(
                got[want.len()..].iter().all(|&b| b == 0),
                "zeros after them"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
