//! The check clientv3 makes of peer URLs before `MemberAdd` and `MemberUpdate`
//! (`types.NewURLs`), with Go's `url.Parse` and `net.SplitHostPort` errors, word for word.

use crate::gofmt::quote_str;

/// `types.NewURLs`: every URL (trimmed of spaces) must parse, have the scheme http, https,
/// unix or unixs, a `host:port` and no path. `Err` is the error etcdctl prints.
pub fn validate(urls: &[String]) -> Result<(), String> {
    if urls.is_empty() {
        return Err("no valid URLs given".into());
    }
    for url in urls {
        let url = url.trim();
        let parsed = parse(url).map_err(|(input, e)| format!("parse {}: {e}", quote_str(input)))?;
        if !matches!(parsed.scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {url}"
            ));
        }
        if !is_host_port(&parsed.host) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {url}"
            ));
        }
        if !parsed.path.is_empty() {
            return Err(format!("URL must not contain a path: {url}"));
        }
    }
    Ok(())
}

/// What the check needs of a parsed URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct Url {
    /// Lower-cased.
    scheme: String,
    /// Unescaped.
    host: String,
    /// Unescaped; empty for an opaque URL (`scheme:rest`).
    path: String,
}

/// Go's `url.Parse`. `Err` holds the input the error names (without the fragment, unless
/// the fragment is what failed) and the error.
fn parse(raw: &str) -> Result<Url, (&str, String)> {
    let (without_fragment, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let url = parse_without_fragment(without_fragment).map_err(|e| (without_fragment, e))?;
    if let Some(f) = fragment {
        unescape(f, Mode::Other).map_err(|e| (raw, e))?;
    }
    Ok(url)
}

fn parse_without_fragment(raw: &str) -> Result<Url, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = Url::default();
    if raw == "*" {
        url.path = "*".into();
        return Ok(url);
    }
    let (scheme, rest) = scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(before, _)| before)
    };
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // An opaque URL: no host, no path.
            return Ok(url);
        }
        let first_segment = rest.split('/').next().unwrap_or("");
        if first_segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    let mut path = rest;
    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, after) = match authority_and_path.find('/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, ""),
        };
        url.host = parse_authority(authority)?;
        path = after;
    }
    url.path = unescape(path, Mode::Other)?;
    Ok(url)
}

/// Go's `getScheme`: `(scheme, rest)`; no scheme when the text before a colon is not one.
fn scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// Go's `parseAuthority`: the unescaped host (user info is checked, then dropped).
fn parse_authority(authority: &str) -> Result<String, String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(userinfo) = userinfo {
        let valid = userinfo
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c));
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        for part in userinfo.splitn(2, ':') {
            unescape(part, Mode::Other)?;
        }
    }
    Ok(host)
}

/// Go's `parseHost`.
fn parse_host(host: &str) -> Result<String, String> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote_str(colon_port)));
        }
        if let Some(zone) = host[..i].find("%25") {
            let mut unescaped = unescape(&host[..zone], Mode::Host)?;
            unescaped.push_str(&unescape(&host[zone..i], Mode::Zone)?);
            unescaped.push_str(&unescape(&host[i..], Mode::Host)?);
            return Ok(unescaped);
        }
    } else if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote_str(colon_port)));
        }
    }
    unescape(host, Mode::Host)
}

/// `""`, or `:` and digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The parts of a URL Go's `unescape` treats differently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    Other,
}

/// Go's `shouldEscape` for a host or zone: ASCII other than these must be escaped.
fn must_escape_in_host(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c))
}

/// Go's `url.unescape`: `%XX` decoded; errors for a bad escape and, in a host, for a
/// character that may not appear there.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let escape = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = escape else {
                    let bad = &s[i..(i + 3).min(s.len())];
                    return Err(format!("invalid URL escape {}", quote_str(bad)));
                };
                let value =
                    u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("0"), 16).unwrap_or(0);
                if mode == Mode::Host && value < 0x80 && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {}", quote_str(&s[i..i + 3])));
                }
                if mode == Mode::Zone
                    && &s[i..i + 3] != "%25"
                    && value != b' '
                    && (value >= 0x80 || must_escape_in_host(value))
                {
                    return Err(format!("invalid URL escape {}", quote_str(&s[i..i + 3])));
                }
                out.push(value);
                i += 3;
            }
            c => {
                if mode != Mode::Other && c < 0x80 && must_escape_in_host(c) {
                    return Err(format!(
                        "invalid character {} in host name",
                        quote_str(&s[i..i + 1])
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `net.SplitHostPort` succeeds.
fn is_host_port(hostport: &str) -> bool {
    let Some(last_colon) = hostport.rfind(':') else {
        return false;
    };
    let (host_start, host_end) = if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else {
            return false;
        };
        if end + 1 != last_colon {
            return false;
        }
        (1, end + 1)
    } else {
        if hostport[..last_colon].contains(':') {
            return false;
        }
        (0, 0)
    };
    !hostport[host_start..].contains('[') && !hostport[host_end..].contains(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), String> {
        validate(&[url.to_string()])
    }

    /// Each error as etcdctl 3.4.23 printed it for `member update 1234 --peer-urls=<url>`.
    #[test]
    fn errors_match_etcdctl() {
        for (url, error) in [
            (
                "127.0.0.1:2380",
                r#"parse "127.0.0.1:2380": first path segment in URL cannot contain colon"#,
            ),
            (
                "ftp://x:1",
                "URL scheme must be http, https, unix, or unixs: ftp://x:1",
            ),
            (
                "http://x",
                r#"URL address does not have the form "host:port": http://x"#,
            ),
            ("http://x:1/p", "URL must not contain a path: http://x:1/p"),
            ("http://x:1/", "URL must not contain a path: http://x:1/"),
            ("://x", r#"parse "://x": missing protocol scheme"#),
            ("http://[::1", r#"parse "http://[::1": missing ']' in host"#),
            (
                "http://x:abc",
                r#"parse "http://x:abc": invalid port ":abc" after host"#,
            ),
            (
                "http://x:1%zz",
                r#"parse "http://x:1%zz": invalid port ":1%zz" after host"#,
            ),
            ("", "URL scheme must be http, https, unix, or unixs: "),
            (
                "http://a b:1",
                r#"parse "http://a b:1": invalid character " " in host name"#,
            ),
            (
                "http://x:1\x01",
                r#"parse "http://x:1\x01": net/url: invalid control character in URL"#,
            ),
            (
                "http:x:1",
                r#"URL address does not have the form "host:port": http:x:1"#,
            ),
            ("x", "URL scheme must be http, https, unix, or unixs: x"),
            ("%zz", r#"parse "%zz": invalid URL escape "%zz""#),
            (
                "mailto:a@b",
                "URL scheme must be http, https, unix, or unixs: mailto:a@b",
            ),
        ] {
            assert_eq!(check(url), Err(error.to_string()), "{url:?}");
        }
    }

    /// URLs etcdctl 3.4.23 sent on to the server.
    #[test]
    fn accepted_like_etcdctl() {
        for url in [
            " http://x:1 ",
            "unix://x:1",
            "HTTP://x:1",
            "http://x:1?q=1",
            "http://x:1#f",
            "http://u@x:1",
            "http://:1",
            "http://x:",
            "http://[::1]:2",
            "http://x:99999",
        ] {
            assert_eq!(check(url), Ok(()), "{url:?}");
        }
        assert_eq!(validate(&[]), Err("no valid URLs given".into()));
    }
}
