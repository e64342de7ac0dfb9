//! Just enough JSON writing for the `zatt` command line's `--output json`: strings escaped per
//! RFC 8259, numbers, and bytes (a string when they are UTF-8, else `{"base64": "..."}`, so
//! that no two byte strings print alike). Written by hand to keep the CLI free of a JSON
//! dependency; it only writes, never parses.

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal, quotes included.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // U+2028 and U+2029 are valid JSON but break JavaScript parsers that eval it.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends bytes: a JSON string when they are UTF-8 text; otherwise (JSON strings hold text
/// only) an object `{"base64":"..."}` with the bytes in standard base64 (RFC 4648 §4).
pub fn bytes(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => string(out, s),
        Err(_) => {
            out.push_str("{\"base64\":\"");
            base64(out, b);
            out.push_str("\"}");
        }
    }
}

/// Standard base64 with padding. Encoding only, a dozen lines: not worth a dependency.
fn base64(out: &mut String, b: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// Appends `"name":` after a comma when the object already has a member.
pub fn key(out: &mut String, name: &str) {
    if !out.ends_with('{') && !out.ends_with('[') {
        out.push(',');
    }
    string(out, name);
    out.push(':');
}

pub fn opt_u64(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

pub fn opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        // Goal: any key or value printed by `--output json` parses back as the same text.
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\te\u{1}f\u{7f}é\u{2028}");
        assert_eq!(out, r#""a\"b\\c\nd\te\u0001f\u007fé\u2028""#);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64_objects() {
        // Goal: JSON output never loses or conflates bytes (U+FFFD used to stand for any).
        let mut out = String::new();
        bytes(&mut out, b"ok\xff");
        assert_eq!(out, r#"{"base64":"b2v/"}"#);
        let mut out = String::new();
        bytes(&mut out, "ok\u{fffd}".as_bytes());
        assert_eq!(out, "\"ok\u{fffd}\"");
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            base64(&mut out, plain.as_bytes());
            assert_eq!(out, coded, "{plain}");
        }
    }

    #[test]
    fn keys_are_comma_separated_within_an_object() {
        let mut out = String::from("{");
        key(&mut out, "a");
        out.push('1');
        key(&mut out, "b");
        opt_u64(&mut out, None);
        out.push('}');
        assert_eq!(out, r#"{"a":1,"b":null}"#);
    }
}
