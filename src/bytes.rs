//! Little-endian bytes in and out, shared by every format the project defines (the peer
//! datagrams and client frames in `wire/`, the log files in `wal/`, the snapshot and proposal
//! layouts in `kv.rs`, the membership in `types.rs`): one bounds-checked `Reader` for decoding
//! and one `PutLe` for appending, both over `byteorder`. Owns no format of its own.
//! Must not: panic on any input, or let a decoder allocate by a length it has not checked
//! against the bytes present (`Reader::bytes` refuses before it hands out a slice).

use byteorder::{ByteOrder, LittleEndian as LE};
use std::fmt;

/// A decoder's refusal: what was wrong with the bytes. Decoders never panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub what: &'static str,
}

impl DecodeError {
    pub fn new(what: &'static str) -> DecodeError {
        DecodeError { what }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for DecodeError {}

/// A bounds-checked little-endian reader over a byte slice: every read checks the bytes present
/// first, so no decoder built on it can panic or over-allocate.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The bytes not read yet (nothing is consumed).
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::new("truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(LE::read_u16(self.bytes(2)?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(LE::read_u32(self.bytes(4)?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(LE::read_u64(self.bytes(8)?))
    }
    /// A `u8` that must be 0 or 1.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::new("boolean is not 0 or 1")),
        }
    }
    /// A `u32` length followed by that many bytes, refused if over `max`.
    pub fn len_prefixed(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::new("length over limit"));
        }
        self.bytes(n)
    }
}

/// Fixed-position reads from a slice whose length the caller has already checked (a header).
/// Reading past the end is a bug in that check, not bad input, so these index directly.
pub fn le_u16(b: &[u8], at: usize) -> u16 {
    LE::read_u16(&b[at..at + 2])
}
pub fn le_u32(b: &[u8], at: usize) -> u32 {
    LE::read_u32(&b[at..at + 4])
}
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    LE::read_u64(&b[at..at + 8])
}

/// Fixed-position writes into a header the caller has sized.
pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
    LE::write_u16(&mut b[at..at + 2], v)
}
pub fn set_u32(b: &mut [u8], at: usize, v: u32) {
    LE::write_u32(&mut b[at..at + 4], v)
}
pub fn set_u64(b: &mut [u8], at: usize, v: u64) {
    LE::write_u64(&mut b[at..at + 8], v)
}

/// Appending little-endian integers to a growing buffer.
pub trait PutLe {
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
}

impl PutLe for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        let n = self.len();
        self.resize(n + 2, 0);
        set_u16(self, n, v);
    }
    fn put_u32(&mut self, v: u32) {
        let n = self.len();
        self.resize(n + 4, 0);
        set_u32(self, n, v);
    }
    fn put_u64(&mut self, v: u64) {
        let n = self.len();
        self.resize(n + 8, 0);
        set_u64(self, n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_put_and_refuses_short_input() {
        let mut b = Vec::new();
        b.push(1);
        b.put_u16(0xBEEF);
        b.put_u32(0xDEAD_BEEF);
        b.put_u64(u64::MAX - 1);
        b.put_u32(3);
        b.extend_from_slice(b"abc");
        let mut r = Reader::new(&b);
        assert!(r.bool().unwrap());
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.len_prefixed(3).unwrap(), b"abc");
        assert_eq!(r.remaining(), 0);
        assert!(r.u8().is_err());
        let mut r = Reader::new(&b[..5]);
        r.u8().unwrap();
        assert!(r.u64().is_err(), "a short read is refused");
        assert_eq!(r.remaining(), 4, "and consumes nothing");
        let mut r = Reader::new(&[2u8]);
        assert!(r.bool().is_err());
        assert_eq!(le_u64(&b, 7), u64::MAX - 1);
    }
}
