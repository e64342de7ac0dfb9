//! Keys and values are bytes; this shows them to people. [`Escaped`] writes bytes as readable,
//! unambiguous text: UTF-8 text as it is, with backslash escapes for a backslash, tab, newline,
//! carriage return, other control characters and every byte that is not part of valid UTF-8.
//! The `zatt` command line's `scan` and `dump` lines and the client's `Display`/`Debug` output
//! use it. Owns only formatting: it never changes what is stored.

use std::fmt::{self, Write as _};

/// Bytes shown as text. `Display` writes them unquoted with these escapes, and nothing else
/// escaped, so the text maps back to exactly one byte string:
///
/// | bytes | written |
/// |---|---|
/// | `\` | `\\` |
/// | tab, newline, carriage return | `\t`, `\n`, `\r` |
/// | other ASCII control bytes (0x00–0x1f, 0x7f) | `\xHH` (two lowercase hex digits) |
/// | a byte that is not part of valid UTF-8 | `\xHH` (always 0x80–0xff) |
/// | a non-ASCII control character (U+0080–U+009F) | `\u{HH}` |
/// | any other character | itself |
///
/// `Debug` writes a quoted literal instead: `"text"` (Rust string escapes) when the bytes are
/// UTF-8, else `b"..."` (Rust byte-string escapes).
///
/// ```
/// use zatt::client::Escaped;
/// assert_eq!(Escaped(b"tab\there").to_string(), r"tab\there");
/// assert_eq!(Escaped(b"caf\xc3\xa9 \xff\\").to_string(), r"café \xff\\");
/// assert_eq!(format!("{:?}", Escaped(b"hi")), r#""hi""#);
/// assert_eq!(format!("{:?}", Escaped(b"\xff")), r#"b"\xff""#);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\t' => f.write_str("\\t")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes `Display`: the test of unambiguity.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c != '\\' {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            match it.next().unwrap() {
                '\\' => out.push(b'\\'),
                't' => out.push(b'\t'),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                'x' => {
                    let h: String = [it.next().unwrap(), it.next().unwrap()].iter().collect();
                    out.push(u8::from_str_radix(&h, 16).unwrap());
                }
                'u' => {
                    assert_eq!(it.next(), Some('{'));
                    let h: String = it.by_ref().take_while(|&c| c != '}').collect();
                    let c = char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap();
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                other => panic!("unknown escape \\{other}"),
            }
        }
        out
    }

    #[test]
    fn every_byte_string_maps_to_one_text_and_back() {
        // Goal: the escaping is unambiguous: no two byte strings give the same text, and the
        // text never holds a raw tab or newline (the separators of `zatt scan`'s lines).
        let mut rng = crate::rng::SplitMix64(7);
        let mut cases: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            b"a\tb\nc\rd\\e".to_vec(),
            b"\\x41".to_vec(),
            "caf\u{e9} \u{85} \u{2028}".as_bytes().to_vec(),
            vec![0xff, 0xc3, 0x41, 0x00, 0x7f],
        ];
        for _ in 0..2000 {
            let n = rng.below(12) as usize;
            cases.push(rng.bytes(n));
        }
        for b in cases {
            let text = Escaped(&b).to_string();
            assert!(!text.contains(['\t', '\n', '\r']), "{text:?}");
            assert_eq!(unescape(&text), b, "{text:?}");
        }
    }
}
