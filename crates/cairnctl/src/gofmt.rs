//! Go's formatting rules that etcdctl's output inherits: `%q` quoting, `encoding/json` and
//! zap string escaping, `time.Duration` printing and parsing, `strconv.ParseInt`,
//! and humanize's byte sizes.

use std::fmt::Write as _;
use std::time::Duration;

/// Go's `unicode.IsPrint`, closely enough for keys and values: letters, marks, numbers,
/// punctuation, symbols and the ASCII space.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xD800..=0xF8FF | 0xFEFF | 0xFFF0..=0xFFFB
        | 0xFFFE | 0xFFFF | 0xE0000..=0xE007F | 0xF0000..)
}

/// Splits `bytes` into UTF-8 characters; an invalid byte comes back as `Err(byte)`.
fn utf8_units(bytes: &[u8]) -> impl Iterator<Item = Result<char, u8>> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = match rest[0] {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 0,
        };
        if take > 0
            && take <= rest.len()
            && let Ok(s) = std::str::from_utf8(&rest[..take])
        {
            let c = s.chars().next().expect("one char");
            rest = &rest[take..];
            return Some(Ok(c));
        }
        let b = rest[0];
        rest = &rest[1..];
        Some(Err(b))
    })
}

/// Go strings are bytes. cairnctl keeps them in Rust `String`s with every byte that is not
/// valid UTF-8 stored as the private-use character U+10FF00 + byte, so command-line
/// arguments and stdin lines survive unchanged into keys, values and messages.
pub fn go_string(bytes: &[u8]) -> String {
    utf8_units(bytes)
        .map(|u| match u {
            Ok(c) => c,
            Err(b) => char::from_u32(0x10FF00 + u32::from(b)).expect("a private-use char"),
        })
        .collect()
}

/// The bytes of a string made by [`go_string`].
pub fn go_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match c as u32 {
            b @ 0x10FF00..=0x10FFFF => out.push((b - 0x10FF00) as u8),
            _ => push_char(&mut out, c),
        }
    }
    out
}

/// What `fmt.Sscanf` sees of a string made by [`go_string`]: it reads runes, so every
/// invalid byte becomes U+FFFD.
pub fn as_runes(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (0x10FF00..=0x10FFFF).contains(&(c as u32)) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// [`quote`] of a string made by [`go_string`].
pub fn quote_str(s: &str) -> String {
    quote(&go_bytes(s))
}

/// Go's `fmt.Sprintf("%016x", n)` of an int64 (a minus sign counts in the width).
pub fn hex016(n: i64) -> String {
    if n < 0 {
        format!("-{:015x}", n.unsigned_abs())
    } else {
        format!("{n:016x}")
    }
}

/// Go's `strconv.Quote` (and so `fmt`'s `%q`) of a byte string.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for unit in utf8_units(bytes) {
        match unit {
            Err(b) => {
                let _ = write!(out, "\\x{b:02x}");
            }
            Ok(c) => match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if is_print(c) => out.push(c),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if (c as u32) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            },
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.Unquote` for a double-quoted or back-quoted literal.
pub fn unquote(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() < 2 {
        return None;
    }
    let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
    let inner = &s[1..s.len() - 1];
    if first == b'`' && last == b'`' {
        if inner.contains('`') {
            return None;
        }
        return Some(inner.replace('\r', ""));
    }
    if first != b'"' || last != b'"' || inner.contains('\n') {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                let mut hex = |n: usize| -> Option<u32> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        let (_, d) = chars.next()?;
                        v = v * 16 + d.to_digit(16)?;
                    }
                    Some(v)
                };
                match e {
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'v' => out.push(11),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'x' => out.push(hex(2)? as u8),
                    'u' => push_char(&mut out, char::from_u32(hex(4)?)?),
                    'U' => push_char(&mut out, char::from_u32(hex(8)?)?),
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            let (_, d) = chars.next()?;
                            v = v * 8 + d.to_digit(8)?;
                        }
                        if v > 255 {
                            return None;
                        }
                        out.push(v as u8);
                    }
                    _ => return None,
                }
            }
            c => push_char(&mut out, c),
        }
    }
    Some(go_string(&out))
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A JSON string literal as Go's `encoding/json` writes it (HTML-safe, Go before 1.22).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON string literal as zap's JSON encoder writes it (no HTML escaping).
pub fn zap_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String`.
pub fn duration_string(d: Duration) -> String {
    let u = d.as_nanos() as u64;
    if u == 0 {
        return "0s".to_string();
    }
    let frac = |v: u64, prec: u32| -> (u64, String) {
        let p = 10u64.pow(prec);
        let digits = format!("{:0width$}", v % p, width = prec as usize);
        let digits = digits.trim_end_matches('0');
        let f = if digits.is_empty() {
            String::new()
        } else {
            format!(".{digits}")
        };
        (v / p, f)
    };
    if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, f) = frac(u, prec);
        return format!("{int}{f}{unit}");
    }
    let (secs, f) = frac(u, 9);
    let (s, mins) = (secs % 60, secs / 60);
    if mins == 0 {
        return format!("{s}{f}s");
    }
    let (m, hours) = (mins % 60, mins / 60);
    if hours == 0 {
        return format!("{m}m{s}{f}s");
    }
    format!("{hours}h{m}m{s}{f}s")
}

/// Go's `time.ParseDuration`; the error text is Go's.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote_str(s));
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "" => {
                return Err(format!("time: missing unit in duration {}", quote_str(s)));
            }
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote_str(other),
                    quote_str(s)
                ));
            }
        };
        total += value * scale;
    }
    if neg {
        // A negative timeout expires at once.
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Go's `strconv.ParseInt(s, base, 64)`; base 0 infers 0x/0o/0b/0 prefixes (and allows `_`).
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", quote_str(s));
    let range = || {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            quote_str(s)
        )
    };
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if base == 0 {
        let lower = body.to_ascii_lowercase();
        if lower.starts_with("0x") {
            (16, body[2..].replace('_', ""))
        } else if lower.starts_with("0o") {
            (8, body[2..].replace('_', ""))
        } else if lower.starts_with("0b") {
            (2, body[2..].replace('_', ""))
        } else if body.len() > 1 && body.starts_with('0') {
            (8, body[1..].replace('_', ""))
        } else {
            (10, body.replace('_', ""))
        }
    } else {
        if body.contains('_') {
            return Err(syntax());
        }
        (base, body.to_string())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(syntax());
    }
    let magnitude = u128::from_str_radix(&digits, radix).map_err(|_| range())?;
    if neg {
        if magnitude > (i64::MAX as u128) + 1 {
            return Err(range());
        }
        Ok((magnitude as i128).wrapping_neg() as i64)
    } else {
        if magnitude > i64::MAX as u128 {
            return Err(range());
        }
        Ok(magnitude as i64)
    }
}

/// Go's `strconv.ParseUint(s, base, 64)` for a base other than 0: digits only, no sign or
/// prefix; a value too large is out of range as soon as it overflows.
pub fn parse_uint(s: &str, base: u32) -> Result<u64, String> {
    let error = |what: &str| format!("strconv.ParseUint: parsing {}: {what}", quote_str(s));
    if s.is_empty() {
        return Err(error("invalid syntax"));
    }
    let mut n: u64 = 0;
    for c in s.chars() {
        let digit = c.to_digit(base).ok_or_else(|| error("invalid syntax"))?;
        n = n
            .checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or_else(|| error("value out of range"))?;
    }
    Ok(n)
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            quote_str(s)
        )),
    }
}

/// `humanize.Bytes`: SI units, e.g. 24576 -> "25 kB".
pub fn human_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let e = ((s as f64).ln() / 1000f64.ln()).floor();
    let suffix = SIZES[e as usize];
    let val = ((s as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// `addHexPrefix(hex.EncodeToString(b))`: every byte as `\xNN`.
pub fn hex_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(b.len() * 4);
    for byte in b {
        let _ = write!(out, "\\x{byte:02x}");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(quote(b"a\tb\"\\"), r#""a\tb\"\\""#);
        assert_eq!(quote(b"\x00\x7f\xff"), r#""\x00\x7f\xff""#);
        assert_eq!(quote("é\u{a0}".as_bytes()), "\"é\\u00a0\"");
    }

    #[test]
    fn unquote_like_go() {
        assert_eq!(unquote(r#""a\tb""#).as_deref(), Some("a\tb"));
        assert_eq!(unquote(r#""a\x41""#).as_deref(), Some("aA"));
        assert_eq!(unquote("`raw\\n`").as_deref(), Some("raw\\n"));
        assert_eq!(unquote(r#""\z""#), None);
        assert_eq!(go_bytes(&unquote(r#""a\xff""#).unwrap()), b"a\xff");
        assert_eq!(go_bytes(&go_string(b"k\xff\x00\xc3")), b"k\xff\x00\xc3");
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(
            duration_string(Duration::from_nanos(1_206_405)),
            "1.206405ms"
        );
        assert_eq!(
            duration_string(Duration::from_nanos(5_001_265_972)),
            "5.001265972s"
        );
        assert_eq!(duration_string(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(duration_string(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(duration_string(Duration::from_secs(90)), "1m30s");
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("zz"),
            Err(r#"time: invalid duration "zz""#.to_string())
        );
        assert_eq!(
            parse_duration("5"),
            Err(r#"time: missing unit in duration "5""#.to_string())
        );
    }

    #[test]
    fn ints_like_go() {
        assert_eq!(parse_int("ff", 16), Ok(255));
        assert_eq!(parse_int("0x10", 0), Ok(16));
        assert_eq!(
            parse_int("zz", 16),
            Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.to_string())
        );
        assert_eq!(
            parse_int("9223372036854775808", 10),
            Err(
                r#"strconv.ParseInt: parsing "9223372036854775808": value out of range"#
                    .to_string()
            )
        );
        assert_eq!(parse_int("-9223372036854775808", 10), Ok(i64::MIN));
    }

    /// The errors etcdctl 3.4.23 printed for these member IDs.
    #[test]
    fn uints_like_go() {
        assert_eq!(parse_uint("4036B1db24775ea0", 16), Ok(0x4036b1db24775ea0));
        assert_eq!(parse_uint("ffffffffffffffff", 16), Ok(u64::MAX));
        for (arg, error) in [
            ("zz", "invalid syntax"),
            ("-5", "invalid syntax"),
            ("+5", "invalid syntax"),
            ("0x10", "invalid syntax"),
            ("", "invalid syntax"),
            ("10000000000000000000", "value out of range"),
            ("100000000000000000z", "value out of range"),
        ] {
            assert_eq!(
                parse_uint(arg, 16),
                Err(format!("strconv.ParseUint: parsing {arg:?}: {error}")),
            );
        }
    }

    #[test]
    fn sizes_like_humanize() {
        assert_eq!(human_bytes(24576), "25 kB");
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(20_480_000), "20 MB");
    }

    #[test]
    fn json_escapes_like_go() {
        assert_eq!(
            json_string("a<b>&\"\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\n\u0001""#
        );
        assert_eq!(zap_string("a<\"b\""), r#""a<\"b\"""#);
    }
}
