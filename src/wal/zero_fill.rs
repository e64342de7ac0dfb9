//! Writing a new segment's zeros (`prepare_segment`) without the page cache.
//!
//! Through the page cache, 64 MiB of zeros are first copied into 16,384 cached pages, which the
//! kernel must take from free memory, and then written back. On a virtual machine whose free
//! memory is handed back to its host (free page reporting, as on the project's machine), each
//! of those pages costs a fault in the host when it is first touched again: in a profile of
//! three servers under 64 clients, the threads preparing segments took 15 % of the servers'
//! CPU, most of it in that copy (`perf/RESULTS.md`, tenth pass). Written with `O_DIRECT` from
//! one small buffer of zeros, the same segment touches no new memory: the disk reads the same
//! 256 KiB each time, and each write waits for the disk, which also paces the zeros against
//! the live log's syncs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
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

/// Writes zeros over `path`'s bytes `0..len` with direct I/O, `chunk` bytes (a multiple of
/// `ALIGN`) at a time. Returns how many bytes it wrote: less than `len` when the file system
/// refuses direct I/O (`O_DIRECT` at open, or `EINVAL` from a write), or for the last
/// `len % ALIGN` bytes; the caller writes the rest through the page cache. Not durable until
/// the caller syncs the file.
pub fn direct(path: &Path, len: u64, chunk: usize) -> io::Result<u64> {
    let Ok(f) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    else {
        return Ok(0);
    };
    let mut blocks = vec![Block([0; ALIGN]); (chunk / ALIGN).max(1)];
    let zeros = as_bytes_mut(&mut blocks);
    let end = len - len % ALIGN as u64;
    let mut at = 0u64;
    while at < end {
        let n = zeros.len().min((end - at) as usize);
        match f.write_all_at(&zeros[..n], at) {
            Ok(()) => at += n as u64,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes zeros over bytes `from..len` of `f` through the page cache, `chunk` bytes at a time,
/// each chunk written back as it goes (`write_back`).
pub fn buffered(
    f: &File,
    from: u64,
    len: u64,
    chunk: usize,
    write_back: impl Fn(&File, u64, u64),
) -> io::Result<()> {
    let zeros = vec![0u8; chunk.min(len.saturating_sub(from) as usize)];
    let mut at = from;
    while at < len {
        let n = zeros.len().min((len - at) as usize);
        f.write_all_at(&zeros[..n], at)?;
        write_back(f, at, n as u64);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn both_ways_leave_every_byte_zero_and_direct_reports_what_it_wrote() {
        let dir = std::env::temp_dir().join(format!("zatt-zero-fill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        // Not a multiple of the chunk, nor of the block: the tail is left to the caller.
        let len = 3 * 8192 + 4096 + 100;
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
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
        buffered(&f, done, len, 8192, |_, _, _| {}).unwrap();
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got.iter().all(|&b| b == 0));
        assert_eq!(
            f.metadata().unwrap().size(),
            len,
            "the length is left alone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
