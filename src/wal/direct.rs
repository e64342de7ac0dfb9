//! Appends to the live segment with direct I/O: one `pwrite` on a descriptor opened with
//! `O_DIRECT | O_DSYNC` is the group's write and its sync together, and no page of the page
//! cache is filled with the log (see `zero_fill` for why new pages are dear here).
//!
//! Direct I/O moves whole blocks from block-aligned memory to block-aligned offsets. An append
//! rarely starts or ends on a block boundary, so each write starts at the block holding the
//! append offset, with that block's earlier bytes (the end of the previous group, kept here,
//! or read once from the file after `open` and after a new segment), and ends at the next
//! boundary, padded with zeros. Both are what the file already holds: the earlier bytes were
//! written before, and past the last record a segment holds zeros (`prepare_segment`; only
//! segments that were zero-filled are written this way). A torn write of that block can
//! therefore only leave bytes as they were or as they are meant to be: the records acknowledged
//! before it are rewritten with their own values.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::zero_fill::{as_bytes_mut, Block, ALIGN};

/// A buffer grown past this by a burst is given back after its write.
const KEEP_BYTES: usize = 16 << 20;

/// The live segment opened for direct appends.
pub struct DirectAppender {
    file: File,
    /// Block-aligned memory the writes go out from; its first block holds the bytes before
    /// `tail_at` in that offset's block.
    blocks: Vec<Block>,
    /// The append offset the first block is ready for; `None` when its bytes must be read.
    tail_at: Option<u64>,
}

impl DirectAppender {
    /// Opens `path` for direct, synchronous writes. Fails when its file system refuses
    /// `O_DIRECT` (tmpfs before Linux 6.6, some network file systems).
    pub fn open(path: &Path) -> io::Result<DirectAppender> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)?;
        Ok(DirectAppender {
            file,
            blocks: Vec::new(),
            tail_at: None,
        })
    }

    /// Writes `data` at `offset`, durable on the disk when this returns `Ok`. `plain`, the
    /// same file opened without `O_DIRECT`, supplies the bytes before `offset` in its block
    /// when they are not kept from the previous append.
    pub fn append(&mut self, plain: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = offset - offset % ALIGN as u64;
        let head = (offset - start) as usize;
        let end = head + data.len();
        let padded = end.div_ceil(ALIGN) * ALIGN;
        if self.blocks.len() < padded / ALIGN {
            self.blocks.resize(padded / ALIGN, Block([0; ALIGN]));
        }
        let known = self.tail_at == Some(offset);
        // Until this write succeeds, the kept block may not match the file.
        self.tail_at = None;
        let bytes = as_bytes_mut(&mut self.blocks);
        if !known {
            plain.read_exact_at(&mut bytes[..head], start)?;
        }
        bytes[head..end].copy_from_slice(data);
        bytes[end..padded].fill(0);
        self.file.write_all_at(&bytes[..padded], start)?;
        let last = end - end % ALIGN;
        bytes.copy_within(last..end, 0);
        self.tail_at = Some(offset + data.len() as u64);
        if self.blocks.len() * ALIGN > KEEP_BYTES {
            self.blocks.truncate(1);
            self.blocks.shrink_to_fit();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_appends_leave_the_file_as_plain_appends_would() {
        let (dir, path, plain) = super::super::zero_fill::scratch_file("direct");
        plain.write_all_at(&vec![0u8; 64 << 10], 0).unwrap();
        plain.write_all_at(b"header-bytes", 0).unwrap();
        plain.sync_all().unwrap();
        let mut d = match DirectAppender::open(&path) {
            Ok(d) => d,
            // A file system without O_DIRECT: the log falls back to plain writes there.
            Err(e) if super::super::zero_fill::refuses(&e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let mut want = vec![0u8; 64 << 10];
        want[..12].copy_from_slice(b"header-bytes");
        let mut off = 12u64;
        // Sizes that start and end inside a block, cross one or several boundaries, and end
        // exactly on one.
        for (i, n) in [1usize, 300, 4096, 5000, 4096 - 1113, 9000, 7, 12288]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..n).map(|k| (k * 7 + i * 13 + 1) as u8).collect();
            d.append(&plain, off, &data).unwrap();
            want[off as usize..off as usize + n].copy_from_slice(&data);
            off += n as u64;
        }
        // A fresh appender reads the partial block back from the file.
        let mut again = DirectAppender::open(&path).unwrap();
        again.append(&plain, off, b"after reopening").unwrap();
        want[off as usize..off as usize + 15].copy_from_slice(b"after reopening");
        let mut got = vec![0u8; 64 << 10];
        plain.read_exact_at(&mut got, 0).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(got == want, "the file differs from the appends made");
    }
}
