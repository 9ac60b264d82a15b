//! `-w simple`: etcdctl's default, human-oriented output.

use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    DeleteRangeResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseTimeToLiveResponse, MemberAddResponse, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, TxnResponse, WatchResponse,
};
use cairn_proto::mvccpb::KeyValue;

use super::{
    EpHashKv, EpHealth, EpStatus, Printer, endpoint_hashkv_rows, endpoint_status_rows,
    member_list_rows,
};
use crate::gofmt;

/// `printKV`: key and value on their own lines, raw bytes or `\xNN` with `--hex`.
fn kv(out: &mut Vec<u8>, p: &Printer, kv: &KeyValue) {
    let (k, v) = if p.hex {
        (gofmt::hex_bytes(&kv.key), gofmt::hex_bytes(&kv.value))
    } else {
        (kv.key.clone(), kv.value.clone())
    };
    if !p.value_only {
        out.extend_from_slice(&k);
        out.push(b'\n');
    }
    out.extend_from_slice(&v);
    out.push(b'\n');
}

fn del_into(out: &mut Vec<u8>, p: &Printer, r: &DeleteRangeResponse) {
    out.extend_from_slice(format!("{}\n", r.deleted).as_bytes());
    for prev in &r.prev_kvs {
        kv(out, p, prev);
    }
}

fn get_into(out: &mut Vec<u8>, p: &Printer, r: &RangeResponse) {
    for k in &r.kvs {
        kv(out, p, k);
    }
}

fn put_into(out: &mut Vec<u8>, p: &Printer, r: &PutResponse) {
    out.extend_from_slice(b"OK\n");
    if let Some(prev) = &r.prev_kv {
        kv(out, p, prev);
    }
}

pub fn get(p: &Printer, r: &RangeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    get_into(&mut out, p, r);
    out
}

pub fn put(p: &Printer, r: &PutResponse) -> Vec<u8> {
    let mut out = Vec::new();
    put_into(&mut out, p, r);
    out
}

pub fn del(p: &Printer, r: &DeleteRangeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    del_into(&mut out, p, r);
    out
}

pub fn txn(p: &Printer, r: &TxnResponse) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(if r.succeeded {
        b"SUCCESS\n"
    } else {
        b"FAILURE\n"
    });
    for resp in &r.responses {
        out.push(b'\n');
        match &resp.response {
            Some(Response::ResponseDeleteRange(d)) => del_into(&mut out, p, d),
            Some(Response::ResponsePut(put)) => put_into(&mut out, p, put),
            Some(Response::ResponseRange(g)) => get_into(&mut out, p, g),
            // etcdctl prints Go's `%+v` of the op here; it never sends nested txns.
            _ => out.extend_from_slice(b"unexpected response\n"),
        }
    }
    out
}

/// `Event_EventType`'s name.
pub fn event_type(t: i32) -> String {
    match t {
        0 => "PUT".into(),
        1 => "DELETE".into(),
        n => n.to_string(),
    }
}

pub fn watch(p: &Printer, r: &WatchResponse) -> Vec<u8> {
    let mut out = Vec::new();
    for e in &r.events {
        out.extend_from_slice(event_type(e.r#type).as_bytes());
        out.push(b'\n');
        if let Some(prev) = &e.prev_kv {
            kv(&mut out, p, prev);
        }
        kv(&mut out, p, &e.kv.clone().unwrap_or_default());
    }
    out
}

pub fn grant(r: &LeaseGrantResponse) -> Vec<u8> {
    format!(
        "lease {} granted with TTL({}s)\n",
        gofmt::hex016(r.id),
        r.ttl
    )
    .into_bytes()
}

pub fn revoke(id: i64) -> Vec<u8> {
    format!("lease {} revoked\n", gofmt::hex016(id)).into_bytes()
}

pub fn keep_alive(r: &LeaseKeepAliveResponse) -> Vec<u8> {
    format!(
        "lease {} keepalived with TTL({})\n",
        gofmt::hex016(r.id),
        r.ttl
    )
    .into_bytes()
}

pub fn time_to_live(r: &LeaseTimeToLiveResponse, keys: bool) -> Vec<u8> {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {} already expired\n", gofmt::hex016(r.id)).into_bytes();
    }
    let mut out = format!(
        "lease {} granted with TTL({}s), remaining({}s)",
        gofmt::hex016(r.id),
        r.granted_ttl,
        r.ttl
    )
    .into_bytes();
    if keys {
        out.extend_from_slice(b", attached keys([");
        for (i, k) in r.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(k);
        }
        out.extend_from_slice(b"])");
    }
    out.push(b'\n');
    out
}

pub fn leases(r: &LeaseLeasesResponse) -> Vec<u8> {
    let mut out = format!("found {} leases\n", r.leases.len());
    for l in &r.leases {
        out.push_str(&format!("{}\n", gofmt::hex016(l.id)));
    }
    out.into_bytes()
}

/// Health goes to stderr in etcdctl 3.4's simple format.
pub fn endpoint_health(hs: &[EpHealth]) -> Vec<u8> {
    let mut out = String::new();
    for h in hs {
        if h.error.is_empty() {
            out.push_str(&format!(
                "{} is healthy: successfully committed proposal: took = {}\n",
                h.ep,
                gofmt::duration_string(h.took)
            ));
        } else {
            out.push_str(&format!(
                "{} is unhealthy: failed to commit proposal: {}\n",
                h.ep, h.error
            ));
        }
    }
    out.into_bytes()
}

/// A table's rows as lines of comma-separated cells.
fn rows(rows: Vec<Vec<String>>) -> Vec<u8> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    out.into_bytes()
}

pub fn endpoint_status(st: &[EpStatus]) -> Vec<u8> {
    rows(endpoint_status_rows(st).1)
}

pub fn endpoint_hashkv(hs: &[EpHashKv]) -> Vec<u8> {
    rows(endpoint_hashkv_rows(hs).1)
}

pub fn member_list(r: &MemberListResponse) -> Vec<u8> {
    rows(member_list_rows(&r.members).1)
}

/// Member IDs go through Go's `%16x`: padded with spaces, not zeroes.
pub fn member_add(r: &MemberAddResponse) -> Vec<u8> {
    let id = r.member.as_ref().map(|m| m.id).unwrap_or_default();
    let cluster_id = r.header.map(|h| h.cluster_id).unwrap_or_default();
    format!("Member {id:16x} added to cluster {cluster_id:16x}\n").into_bytes()
}

/// `Member <id> removed from|updated in|promoted in cluster <cluster id>`.
pub fn member_changed(id: u64, change: &str, header: &Option<ResponseHeader>) -> Vec<u8> {
    let cluster_id = header.map(|h| h.cluster_id).unwrap_or_default();
    format!("Member {id:16x} {change} cluster {cluster_id:16x}\n").into_bytes()
}

/// `types.ID`s print as hex without padding.
pub fn move_leader(leader: u64, target: u64) -> Vec<u8> {
    format!("Leadership transferred from {leader:x} to {target:x}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::super::{Format, Printer};
    use super::*;
    use cairn_proto::etcdserverpb::ResponseOp;
    use std::time::Duration;

    const P: Printer = Printer {
        format: Format::Simple,
        hex: false,
        value_only: false,
    };

    /// Verified against etcdctl 3.4.23 (`lease timetolive -- -5`, `lease list`).
    #[test]
    fn lease_ids() {
        let r = LeaseTimeToLiveResponse {
            id: -5,
            ttl: -1,
            ..Default::default()
        };
        assert_eq!(
            time_to_live(&r, true),
            b"lease -000000000000005 already expired\n"
        );
        let r = LeaseTimeToLiveResponse {
            id: 0x1a15a1fc00fa5010,
            ttl: 299,
            granted_ttl: 300,
            keys: vec![b"k1".to_vec(), b"k2".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(time_to_live(&r, true)).unwrap(),
            "lease 1a15a1fc00fa5010 granted with TTL(300s), remaining(299s), attached keys([k1 k2])\n"
        );
        let l = LeaseLeasesResponse {
            header: td::header(4),
            leases: vec![cairn_proto::etcdserverpb::LeaseStatus { id: 0x1234 }],
        };
        assert_eq!(leases(&l), b"found 1 leases\n0000000000001234\n");
    }

    #[test]
    fn kvs() {
        let r = RangeResponse {
            header: td::header(14),
            kvs: vec![td::kv("k2", "fromstdin", 12, 12, 1)],
            count: 1,
            more: false,
        };
        assert_eq!(get(&P, &r), b"k2\nfromstdin\n");
        let hex = Printer { hex: true, ..P };
        assert_eq!(
            get(&hex, &r),
            b"\\x6b\\x32\n\\x66\\x72\\x6f\\x6d\\x73\\x74\\x64\\x69\\x6e\n"
        );
        let vo = Printer {
            value_only: true,
            ..P
        };
        assert_eq!(get(&vo, &r), b"fromstdin\n");
        let d = DeleteRangeResponse {
            header: td::header(18),
            deleted: 1,
            prev_kvs: vec![td::kv("k6", "v", 17, 17, 1)],
        };
        assert_eq!(del(&P, &d), b"1\nk6\nv\n");
    }

    /// `txn` output verified against etcdctl 3.4.23.
    #[test]
    fn txn_output() {
        let r = TxnResponse {
            header: td::header(20),
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse {
                        header: td::header(20),
                        prev_kv: None,
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseRange(RangeResponse {
                        header: td::header(20),
                        kvs: vec![td::kv("b", "2", 20, 20, 1)],
                        count: 1,
                        more: false,
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: td::header(20),
                        deleted: 0,
                        prev_kvs: vec![],
                    })),
                },
            ],
        };
        assert_eq!(
            String::from_utf8(txn(&P, &r)).unwrap(),
            "SUCCESS\n\nOK\n\nb\n2\n\n0\n"
        );
    }

    /// etcdctl 3.4.23's lines; its `%16x` pads a short member ID with spaces.
    #[test]
    fn members() {
        let header = Some(ResponseHeader {
            cluster_id: 0x64d937c925e41b58,
            ..Default::default()
        });
        let added = MemberAddResponse {
            header,
            member: Some(cairn_proto::etcdserverpb::Member {
                id: 0x14b0fb79d3ce6e5,
                ..Default::default()
            }),
            members: vec![],
        };
        assert_eq!(
            String::from_utf8(member_add(&added)).unwrap(),
            "Member  14b0fb79d3ce6e5 added to cluster 64d937c925e41b58\n"
        );
        assert_eq!(
            String::from_utf8(member_changed(0xb7913ad97e9cfb5b, "promoted in", &header)).unwrap(),
            "Member b7913ad97e9cfb5b promoted in cluster 64d937c925e41b58\n"
        );
        assert_eq!(
            String::from_utf8(move_leader(0x4036b1db24775ea0, 0x14b0fb79d3ce6e5)).unwrap(),
            "Leadership transferred from 4036b1db24775ea0 to 14b0fb79d3ce6e5\n"
        );
        assert_eq!(
            String::from_utf8(member_list(&td::member_list())).unwrap(),
            "4036b1db24775ea0, started, m1, http://127.0.0.1:23801, http://127.0.0.1:23791, false\n\
             b7913ad97e9cfb5b, unstarted, , http://127.0.0.1:23804,http://127.0.0.1:23805, , true\n"
        );
    }

    #[test]
    fn endpoints() {
        let st = [EpStatus {
            ep: "127.0.0.1:23790".into(),
            resp: td::status(),
        }];
        assert_eq!(
            String::from_utf8(endpoint_status(&st)).unwrap(),
            "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 25 kB, true, false, 2, 39, 39, \n"
        );
        let hs = [
            EpHealth {
                ep: "127.0.0.1:23790".into(),
                health: true,
                took: Duration::from_nanos(1_206_405),
                error: String::new(),
            },
            EpHealth {
                ep: "127.0.0.1:1".into(),
                health: false,
                took: Duration::from_secs(5),
                error: "context deadline exceeded".into(),
            },
        ];
        assert_eq!(
            String::from_utf8(endpoint_health(&hs)).unwrap(),
            "127.0.0.1:23790 is healthy: successfully committed proposal: took = 1.206405ms\n\
             127.0.0.1:1 is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
    }
}
