//! etcdctl's `txn` input language: three blank-line-terminated sections read line by line
//! (compares, success requests, failure requests), compares such as `mod("k") > "3"` scanned
//! as Go's `fmt.Sscanf(rest, "%q) %s %q")` does, and requests split by etcdctl's `Argify`
//! regular expression and parsed as little `get`/`put`/`del` command lines.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::{Compare, RequestOp, request_op::Request};

use crate::commands::kv;
use crate::flags::{self, Cmd};
use crate::gofmt;
use crate::{Fail, exit};

/// A txn as read from the input.
#[derive(Debug, Default, PartialEq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// Reads a whole txn like etcdctl: `prompt` is called before each section (it prints the
/// interactive prompts), and every error ends the command as etcdctl's would.
pub fn read_txn(
    input: &mut impl std::io::BufRead,
    prompt: &mut dyn FnMut(&str),
) -> Result<Txn, Fail> {
    let mut txn = Txn::default();
    prompt("compares:");
    while let Some(line) = next_line(input)? {
        txn.compares.push(parse_compare(&line)?);
    }
    prompt("success requests (get, put, del):");
    while let Some(line) = next_line(input)? {
        txn.success.push(parse_request(&line)?);
    }
    prompt("failure requests (get, put, del):");
    while let Some(line) = next_line(input)? {
        txn.failure.push(parse_request(&line)?);
    }
    Ok(txn)
}

/// The next trimmed line, `None` for the empty line ending a section; like Go's
/// `ReadString('\n')`, input ending without a newline is the error `EOF`. Each line is
/// parsed before the next is read, so a bad line fails even when the input ends early.
fn next_line(input: &mut impl std::io::BufRead) -> Result<Option<String>, Fail> {
    let mut buf = Vec::new();
    let n = input
        .read_until(b'\n', &mut buf)
        .map_err(|e| Fail::new(exit::INVALID_INPUT, e.to_string()))?;
    if n == 0 || buf.last() != Some(&b'\n') {
        return Err(Fail::new(exit::INVALID_INPUT, "EOF"));
    }
    let line = gofmt::go_string(&buf).trim().to_string();
    Ok((!line.is_empty()).then_some(line))
}

/// A tiny `fmt.Sscanf` for the format `%q) %s %q`: returns how many values were scanned
/// and the values (empty when not scanned).
fn scan_compare(s: &str) -> (usize, [String; 3]) {
    let mut out: [String; 3] = Default::default();
    let mut rest = s;
    let is_space = |c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n';
    // %q
    rest = rest.trim_start_matches(is_space);
    let Some((key, r)) = scan_quoted(rest) else {
        return (0, out);
    };
    out[0] = key;
    rest = r;
    // ")"
    let Some(r) = rest.strip_prefix(')') else {
        return (1, out);
    };
    // " ": at least one space, unless at the end of the input.
    if !r.is_empty() && !r.starts_with(is_space) {
        return (1, out);
    }
    rest = r.trim_start_matches(is_space);
    // %s
    let end = rest.find(is_space).unwrap_or(rest.len());
    if end == 0 {
        return (1, out);
    }
    out[1] = rest[..end].to_string();
    let r = &rest[end..];
    if !r.is_empty() && !r.starts_with(is_space) {
        return (2, out);
    }
    rest = r.trim_start_matches(is_space);
    // %q
    let Some((val, _)) = scan_quoted(rest) else {
        return (2, out);
    };
    out[2] = val;
    (3, out)
}

/// Go's `%q` scan: a double-quoted string with escapes, or a back-quoted raw string.
fn scan_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    match chars.next()? {
        (_, '`') => {
            let end = s[1..].find('`')? + 1;
            Some((s[1..end].to_string(), &s[end + 1..]))
        }
        (_, '"') => {
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next()?;
                    }
                    '"' => {
                        let lit = &s[..=i];
                        return Some((gofmt::unquote(lit)?, &s[i + 1..]));
                    }
                    _ => {}
                }
            }
            None
        }
        _ => None,
    }
}

/// etcdctl's `parseCompare`.
pub fn parse_compare(line: &str) -> Result<Compare, Fail> {
    let invalid = |msg: String| Fail::new(exit::INVALID_INPUT, msg);
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid(format!("malformed comparison: {line}")));
    };
    let (n, [key, op, val]) = scan_compare(&gofmt::as_runes(rest));
    if n != 3 {
        return Err(invalid(format!(
            "malformed comparison: {line}; got {target}({}) {op} {}",
            gofmt::quote(&gofmt::go_bytes(&key)),
            gofmt::quote(&gofmt::go_bytes(&val))
        )));
    }
    let bad_request = || invalid(format!("invalid txn compare request: {line}"));
    let (target, union) = match target {
        "ver" | "version" => (
            CompareTarget::Version,
            TargetUnion::Version(gofmt::parse_int(&val, 10).map_err(|_| bad_request())?),
        ),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(gofmt::parse_int(&val, 10).map_err(|_| bad_request())?),
        ),
        "m" | "mod" => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(gofmt::parse_int(&val, 10).map_err(|_| bad_request())?),
        ),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(gofmt::go_bytes(&val)),
        ),
        // etcdctl 3.4.23 panics on `lease` compares; this is what 3.5 does.
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(gofmt::parse_int(&val, 16).map_err(|_| bad_request())?),
        ),
        other => {
            return Err(invalid(format!(
                "malformed comparison: {line} (unknown target {other})"
            )));
        }
    };
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        // clientv3.Compare panics here; the goroutine dump that follows is not reproduced.
        _ => return Err(Fail::panic("Unknown result op")),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: gofmt::go_bytes(&key),
        range_end: vec![],
        target_union: Some(union),
    })
}

/// etcdctl's `Argify`: the matches of `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`,
/// with double-quoted words unquoted as Go strings. Single-quoted words are cut as etcdctl
/// 3.4 cuts them, `word[1 : len(words)-1]` (sic: the number of words, not the word's
/// length), so `'ab'` is `ab` only on a line of four words.
pub fn argify(s: &str) -> Result<Vec<String>, Fail> {
    let b = s.as_bytes();
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let mut raw: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let mut j = i + 1;
                let mut closed = None;
                while j < b.len() {
                    match b[j] {
                        b'\\' if j + 1 < b.len() && b[j + 1] != b'\n' => j += 2,
                        b'\\' => break,
                        b'"' => {
                            closed = Some(j);
                            break;
                        }
                        _ => j += 1,
                    }
                }
                match closed {
                    Some(end) => {
                        raw.push(&s[i..=end]);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            }
            b'\'' => match s[i + 1..].find('\'') {
                Some(off) => {
                    raw.push(&s[i..i + off + 2]);
                    i += off + 2;
                }
                None => i += 1,
            },
            c if is_space(c) => i += 1,
            _ => {
                let end = (i..b.len()).find(|&j| is_space(b[j])).unwrap_or(b.len());
                raw.push(&s[i..end]);
                i = end;
            }
        }
    }
    let n = raw.len();
    raw.into_iter()
        .map(|word| {
            if word.starts_with('\'') {
                let hi = n - 1;
                let len = gofmt::go_bytes(word).len();
                if hi > len {
                    return Err(Fail::panic(&format!(
                        "runtime error: slice bounds out of range [:{hi}] with length {len}"
                    )));
                }
                if hi < 1 {
                    return Err(Fail::panic(&format!(
                        "runtime error: slice bounds out of range [1:{hi}]"
                    )));
                }
                Ok(gofmt::go_string(&gofmt::go_bytes(word)[1..hi]))
            } else if word.starts_with('"') {
                gofmt::unquote(&gofmt::as_runes(word))
                    .ok_or_else(|| Fail::new(exit::INVALID_INPUT, "invalid syntax"))
            } else {
                Ok(word.to_string())
            }
        })
        .collect()
}

/// etcdctl's `parseRequestUnion`.
pub fn parse_request(line: &str) -> Result<RequestOp, Fail> {
    let words = argify(line)?;
    if words.len() < 2 {
        return Err(Fail::new(
            exit::INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        ));
    }
    let invalid = || format!("invalid txn request: {line}");
    let (cmd, flags, args) = match flags::parse_txn_op(&words) {
        Ok(parsed) => parsed,
        Err(Some(usage)) => {
            return Err(Fail {
                stderr_before: format!("{usage}\n"),
                ..Fail::new(exit::INVALID_INPUT, invalid())
            });
        }
        Err(None) => return Err(Fail::new(exit::INVALID_INPUT, invalid())),
    };
    let request = match cmd {
        Cmd::Get => Request::RequestRange(kv::get_op(&flags, &args)?),
        // etcdctl's stdin is already consumed by the txn reader here.
        Cmd::Put => Request::RequestPut(kv::put_op(&flags, &args, &mut std::io::empty())?),
        _ => Request::RequestDeleteRange(kv::del_op(&flags, &args)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_compare(line).unwrap_err().msg
    }

    #[test]
    fn compares() {
        let c = parse_compare(r#"mod("k") > "3""#).unwrap();
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.key, b"k");
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(3)));
        let c = parse_compare(r#"value( "a\x41") != `x y`"#).unwrap();
        assert_eq!(c.key, b"aA");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"x y".to_vec())));
        let c = parse_compare(r#"value("a") = "12" trailing"#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"12".to_vec())));
        let c = parse_compare(r#"lease("a") = "1f""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Lease(31)));
        for (line, target) in [
            ("c(\"a\") = \"1\"", CompareTarget::Create),
            ("ver(\"a\") < \"1\"", CompareTarget::Version),
        ] {
            assert_eq!(parse_compare(line).unwrap().target, target as i32);
        }
    }

    /// Messages verified against etcdctl 3.4.23.
    #[test]
    fn compare_errors() {
        assert_eq!(err("foo"), "malformed comparison: foo");
        assert_eq!(
            err(r#"value("a") = 1"#),
            r#"malformed comparison: value("a") = 1; got value("a") = """#
        );
        assert_eq!(
            err(r#"value("a")="12""#),
            r#"malformed comparison: value("a")="12"; got value("a")  """#
        );
        assert_eq!(
            err(r#"ver("a") = "x""#),
            r#"invalid txn compare request: ver("a") = "x""#
        );
        assert_eq!(
            err(r#"foo("a") = "x""#),
            r#"malformed comparison: foo("a") = "x" (unknown target foo)"#
        );
        let f = parse_compare(r#"ver("a") ~ "1""#).unwrap_err();
        assert!(f.panic);
        assert_eq!(f.code, 2);
        assert_eq!(parse_compare("foo").unwrap_err().code, 3);
    }

    #[test]
    fn argify_like_etcdctl() {
        assert_eq!(
            argify(r#"put x1 "hello world" ab"cd ef""#).unwrap(),
            vec!["put", "x1", "hello world", "ab\"cd", "ef\""]
        );
        assert_eq!(
            argify(r#"put x3 "a\tb""#).unwrap(),
            vec!["put", "x3", "a\tb"]
        );
    }

    #[test]
    fn requests() {
        let op = parse_request("put a 12 --prev-kv").unwrap();
        match op.request {
            Some(Request::RequestPut(p)) => {
                assert_eq!(
                    (p.key.as_slice(), p.value.as_slice(), p.prev_kv),
                    (&b"a"[..], &b"12"[..], true)
                );
            }
            other => panic!("{other:?}"),
        }
        let op = parse_request("get a --prefix").unwrap();
        match op.request {
            Some(Request::RequestRange(r)) => assert_eq!(r.range_end, b"b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_request("get").unwrap_err().msg,
            "invalid txn compare request: get"
        );
        assert_eq!(
            parse_request("bad a").unwrap_err().msg,
            "invalid txn request: bad a"
        );
        let f = parse_request("get a --foo").unwrap_err();
        assert_eq!(f.msg, "invalid txn request: get a --foo");
        assert!(
            f.stderr_before
                .starts_with("Usage:\n   get [options] <key> [range_end] [flags]\n")
        );
        assert!(f.stderr_before.ends_with("Serializable(s) (default \"l\")\n      --from-key             Get keys that are greater than or equal to the given key using byte compare\n  -h, --help                 help for get\n      --keys-only            Get only the keys\n      --limit int            Maximum number of results\n      --order string         Order of results; ASCEND or DESCEND (ASCEND by default)\n      --prefix               Get keys with matching prefix\n      --print-value-only     Only write values when using the \"simple\" output format\n      --rev int              Specify the kv revision\n      --sort-by string       Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION\n\n"));
        let f = parse_request("put a").unwrap_err();
        assert_eq!(
            (f.code, f.msg.as_str()),
            (
                128,
                "put command needs 1 argument and input from stdin or 2 arguments"
            )
        );
    }

    #[test]
    fn sections_and_prompts() {
        let input = "value(\"a\") = \"1\"\n\nput a 11\n\nget a\n\n";
        let mut prompts = Vec::new();
        let txn = read_txn(&mut input.as_bytes(), &mut |p| prompts.push(p.to_string())).unwrap();
        assert_eq!(
            (txn.compares.len(), txn.success.len(), txn.failure.len()),
            (1, 1, 1)
        );
        assert_eq!(prompts.len(), 3);
        let f = read_txn(&mut "\n\n".as_bytes(), &mut |_| {}).unwrap_err();
        assert_eq!((f.code, f.msg.as_str()), (3, "EOF"));
        let f = read_txn(&mut "\n\nget a".as_bytes(), &mut |_| {}).unwrap_err();
        assert_eq!(f.msg, "EOF");
        assert_eq!(
            read_txn(&mut "\n\n\n".as_bytes(), &mut |_| {}).unwrap(),
            Txn::default()
        );
    }
}
