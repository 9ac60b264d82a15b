//! `get`, `put`, `del` and `compaction`, and the request builders `txn` shares
//! (etcdctl's `getGetOp`, `getPutOp`, `getDelOp`).

use std::io::Read;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};

use super::{Ctx, stdout};
use crate::flags::Flags;
use crate::printer::Format;
use crate::{Fail, exit, gofmt};

/// clientv3's `getPrefix`: the smallest key greater than every key starting with `key`.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn bad_args(msg: &str) -> Fail {
    Fail::new(exit::BAD_ARGS, msg)
}

const TOO_MANY: &str =
    "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";
const PREFIX_AND_FROM_KEY: &str =
    "`--prefix` and `--from-key` cannot be set at the same time, choose one";

/// etcdctl's `getGetOp`.
pub fn get_op(flags: &Flags, args: &[String]) -> Result<RangeRequest, Fail> {
    if args.is_empty() {
        return Err(bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    }
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    if prefix && from_key {
        return Err(bad_args(PREFIX_AND_FROM_KEY));
    }
    let mut req = RangeRequest::default();
    match flags.str("consistency") {
        "s" => req.serializable = true,
        "l" => {}
        other => {
            return Err(Fail::new(
                exit::BAD_FEATURE,
                format!("unknown consistency flag {}", gofmt::quote_str(other)),
            ));
        }
    }
    req.key = gofmt::go_bytes(&args[0]);
    if args.len() > 1 {
        if prefix || from_key {
            return Err(bad_args(TOO_MANY));
        }
        req.range_end = gofmt::go_bytes(&args[1]);
    }
    req.limit = flags.int("limit");
    if flags.int("rev") > 0 {
        req.revision = flags.int("rev");
    }
    let order = match flags.str("order").to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(Fail::new(
                exit::BAD_FEATURE,
                format!("bad sort order {}", flags.str("order")),
            ));
        }
    };
    let target = match flags.str("sort-by").to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(Fail::new(
                exit::BAD_FEATURE,
                format!("bad sort target {}", flags.str("sort-by")),
            ));
        }
    };
    // clientv3's WithSort: ascending by key is the server's natural order.
    let order = if target == SortTarget::Key && order == SortOrder::Ascend {
        SortOrder::None
    } else {
        order
    };
    req.sort_order = order as i32;
    req.sort_target = target as i32;
    if prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_end(&req.key);
        }
    }
    if from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    req.keys_only = flags.bool("keys-only");
    Ok(req)
}

const PUT_NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

/// etcdctl's `getPutOp`; a missing value is read from `stdin`.
pub fn put_op(flags: &Flags, args: &[String], stdin: &mut dyn Read) -> Result<PutRequest, Fail> {
    if args.is_empty() {
        return Err(bad_args(PUT_NEEDS));
    }
    let ignore_value = flags.bool("ignore-value");
    if ignore_value && args.len() > 1 {
        return Err(bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut req = PutRequest {
        key: gofmt::go_bytes(&args[0]),
        ..Default::default()
    };
    if !ignore_value {
        req.value = match args.get(1) {
            Some(v) => gofmt::go_bytes(v),
            None => {
                let mut buf = Vec::new();
                if stdin.read_to_end(&mut buf).is_err() || buf.is_empty() {
                    return Err(bad_args(PUT_NEEDS));
                }
                buf
            }
        };
    }
    req.lease = gofmt::parse_int(flags.str("lease"), 16).map_err(|e| {
        Fail::new(
            exit::BAD_ARGS,
            format!("bad lease ID ({e}), expecting ID in Hex"),
        )
    })?;
    req.prev_kv = flags.bool("prev-kv");
    req.ignore_value = ignore_value;
    req.ignore_lease = flags.bool("ignore-lease");
    Ok(req)
}

/// etcdctl's `getDelOp`.
pub fn del_op(flags: &Flags, args: &[String]) -> Result<DeleteRangeRequest, Fail> {
    if args.is_empty() || args.len() > 2 {
        return Err(bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    if prefix && from_key {
        return Err(bad_args(PREFIX_AND_FROM_KEY));
    }
    let mut req = DeleteRangeRequest {
        key: gofmt::go_bytes(&args[0]),
        ..Default::default()
    };
    if args.len() > 1 {
        if prefix || from_key {
            return Err(bad_args(TOO_MANY));
        }
        req.range_end = gofmt::go_bytes(&args[1]);
    }
    if prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_end(&req.key);
        }
    }
    req.prev_kv = flags.bool("prev-kv");
    if from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    Ok(req)
}

pub async fn get(ctx: &mut Ctx) -> Result<(), Fail> {
    let req = get_op(&ctx.flags, &ctx.args)?;
    let (mut client, mut printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            KvClient::new(ch).range(req).await
        })
        .await?;
    if ctx.flags.bool("print-value-only") {
        if printer.format != Format::Simple {
            return Err(bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.value_only = true;
    }
    stdout(&printer.get(&resp)?);
    Ok(())
}

pub async fn put(ctx: &mut Ctx) -> Result<(), Fail> {
    let req = put_op(&ctx.flags, &ctx.args, &mut std::io::stdin())?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            KvClient::new(ch).put(req).await
        })
        .await?;
    stdout(&printer.put(&resp)?);
    Ok(())
}

pub async fn del(ctx: &mut Ctx) -> Result<(), Fail> {
    let req = del_op(&ctx.flags, &ctx.args)?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            KvClient::new(ch).delete_range(req).await
        })
        .await?;
    stdout(&printer.del(&resp)?);
    Ok(())
}

pub async fn compaction(ctx: &mut Ctx) -> Result<(), Fail> {
    if ctx.args.len() != 1 {
        return Err(bad_args("compaction command needs 1 argument"));
    }
    let revision = gofmt::parse_int(&ctx.args[0], 10).map_err(|e| Fail::new(exit::ERROR, e))?;
    let req = CompactionRequest {
        revision,
        physical: ctx.flags.bool("physical"),
    };
    let (mut client, _printer) = ctx.must_client()?;
    client
        .unary(ctx.command_timeout(), |ch| async move {
            KvClient::new(ch).compact(req).await
        })
        .await?;
    stdout(format!("compacted revision {revision}\n").as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;

    fn op(words: &[&str]) -> Result<(flags::Cmd, Flags, Vec<String>), Option<&'static str>> {
        let words: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        flags::parse_txn_op(&words)
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    }

    #[test]
    fn get_requests() {
        let (_, f, a) = op(&[
            "get",
            "k",
            "--prefix",
            "--sort-by=MODIFY",
            "--order",
            "descend",
            "--limit",
            "2",
            "--rev=5",
        ])
        .unwrap();
        let r = get_op(&f, &a).unwrap();
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"k"[..], &b"l"[..])
        );
        assert_eq!(
            (r.sort_target, r.sort_order),
            (SortTarget::Mod as i32, SortOrder::Descend as i32)
        );
        assert_eq!((r.limit, r.revision), (2, 5));
        let (_, f, a) = op(&["get", "", "--prefix"]).unwrap();
        let r = get_op(&f, &a).unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        let (_, f, a) = op(&["get", "k", "--order=ASCEND", "--consistency=s"]).unwrap();
        let r = get_op(&f, &a).unwrap();
        assert_eq!(r.sort_order, SortOrder::None as i32);
        assert!(r.serializable);
        let (_, f, a) = op(&["get", "k", "--consistency=x"]).unwrap();
        let e = get_op(&f, &a).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "unknown consistency flag \"x\"")
        );
        let (_, f, a) = op(&["get", "k", "z", "--prefix"]).unwrap();
        assert_eq!(get_op(&f, &a).unwrap_err().msg, TOO_MANY);
    }

    #[test]
    fn put_requests() {
        let (_, f, a) = op(&["put", "k", "--lease=zz"]).unwrap();
        let e = put_op(&f, &a, &mut &b"v"[..]).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                128,
                r#"bad lease ID (strconv.ParseInt: parsing "zz": invalid syntax), expecting ID in Hex"#
            )
        );
        let (_, f, a) = op(&["put", "k", "--lease=1f"]).unwrap();
        let r = put_op(&f, &a, &mut &b"from stdin\n"[..]).unwrap();
        assert_eq!((r.value.as_slice(), r.lease), (&b"from stdin\n"[..], 31));
        let (_, f, a) = op(&["put", "k"]).unwrap();
        assert_eq!(put_op(&f, &a, &mut &b""[..]).unwrap_err().msg, PUT_NEEDS);
    }

    #[test]
    fn del_requests() {
        let (_, f, a) = op(&["del", "a", "b", "c"]).unwrap();
        assert_eq!(
            del_op(&f, &a).unwrap_err().msg,
            "del command needs one argument as key and an optional argument as range_end"
        );
        let (_, f, a) = op(&["del", "k", "--from-key", "--prev-kv"]).unwrap();
        let r = del_op(&f, &a).unwrap();
        assert_eq!((r.range_end, r.prev_kv), (vec![0], true));
    }
}
