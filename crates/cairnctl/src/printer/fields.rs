//! `-w fields`: one `"Name" : value` line per field, as etcdctl's `fieldsPrinter`.

use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    DeleteRangeResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, TxnResponse, WatchResponse,
};
use cairn_proto::mvccpb::KeyValue;

use super::{EpHashKv, EpHealth, EpStatus};
use crate::gofmt;

fn kv(out: &mut Vec<u8>, pfx: &str, kv: &KeyValue) {
    let lines = format!(
        "\"{pfx}Key\" : {}\n\"{pfx}CreateRevision\" : {}\n\"{pfx}ModRevision\" : {}\n\"{pfx}Version\" : {}\n\"{pfx}Value\" : {}\n\"{pfx}Lease\" : {}\n",
        gofmt::quote(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        gofmt::quote(&kv.value),
        kv.lease
    );
    out.extend_from_slice(lines.as_bytes());
}

fn hdr(out: &mut Vec<u8>, h: &Option<ResponseHeader>) {
    // etcdctl dereferences the header; a missing one prints as zeroes here.
    let h = h.unwrap_or_default();
    let lines = format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    );
    out.extend_from_slice(lines.as_bytes());
}

fn del_into(out: &mut Vec<u8>, r: &DeleteRangeResponse) {
    hdr(out, &r.header);
    out.extend_from_slice(format!("\"Deleted\" : {}\n", r.deleted).as_bytes());
    for prev in &r.prev_kvs {
        kv(out, "Prev", prev);
    }
}

fn get_into(out: &mut Vec<u8>, r: &RangeResponse) {
    hdr(out, &r.header);
    for k in &r.kvs {
        kv(out, "", k);
    }
    out.extend_from_slice(format!("\"More\" : {}\n\"Count\" : {}\n", r.more, r.count).as_bytes());
}

fn put_into(out: &mut Vec<u8>, r: &PutResponse) {
    hdr(out, &r.header);
    if let Some(prev) = &r.prev_kv {
        kv(out, "Prev", prev);
    }
}

pub fn get(r: &RangeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    get_into(&mut out, r);
    out
}

pub fn put(r: &PutResponse) -> Vec<u8> {
    let mut out = Vec::new();
    put_into(&mut out, r);
    out
}

pub fn del(r: &DeleteRangeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    del_into(&mut out, r);
    out
}

pub fn txn(r: &TxnResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    out.extend_from_slice(format!("\"Succeeded\" : {}\n", r.succeeded).as_bytes());
    for resp in &r.responses {
        match &resp.response {
            Some(Response::ResponseDeleteRange(d)) => del_into(&mut out, d),
            Some(Response::ResponsePut(p)) => put_into(&mut out, p),
            Some(Response::ResponseRange(g)) => get_into(&mut out, g),
            _ => out.extend_from_slice(b"\"Unknown\" : \"\"\n"),
        }
    }
    out
}

pub fn watch(r: &WatchResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    for e in &r.events {
        out.extend_from_slice(
            format!("\"Type\" : {}\n", super::simple::event_type(e.r#type)).as_bytes(),
        );
        if let Some(prev) = &e.prev_kv {
            kv(&mut out, "Prev", prev);
        }
        kv(&mut out, "", &e.kv.clone().unwrap_or_default());
    }
    out
}

pub fn grant(r: &LeaseGrantResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    out.extend_from_slice(format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl).as_bytes());
    out
}

pub fn revoke(r: &LeaseRevokeResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    out
}

pub fn keep_alive(r: &LeaseKeepAliveResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    out.extend_from_slice(format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl).as_bytes());
    out
}

pub fn time_to_live(r: &LeaseTimeToLiveResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    out.extend_from_slice(
        format!(
            "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
            r.id, r.ttl, r.granted_ttl
        )
        .as_bytes(),
    );
    for k in &r.keys {
        out.extend_from_slice(format!("\"Key\" : {}\n", gofmt::quote(k)).as_bytes());
    }
    out
}

pub fn leases(r: &LeaseLeasesResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    for l in &r.leases {
        out.extend_from_slice(format!("\"ID\" : {}\n", l.id).as_bytes());
    }
    out
}

pub fn member_list(r: &MemberListResponse) -> Vec<u8> {
    let mut out = Vec::new();
    hdr(&mut out, &r.header);
    let mut lines = String::new();
    for m in &r.members {
        lines.push_str(&format!(
            "\"ID\" : {}\n\"Name\" : {}\n",
            m.id,
            gofmt::quote_str(&m.name)
        ));
        for u in &m.peer_ur_ls {
            lines.push_str(&format!("\"PeerURL\" : {}\n", gofmt::quote_str(u)));
        }
        for u in &m.client_ur_ls {
            lines.push_str(&format!("\"ClientURL\" : {}\n", gofmt::quote_str(u)));
        }
        lines.push_str(&format!("\"IsLearner\" : {}\n\n", m.is_learner));
    }
    out.extend_from_slice(lines.as_bytes());
    out
}

pub fn endpoint_hashkv(hs: &[EpHashKv]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in hs {
        hdr(&mut out, &h.resp.header);
        out.extend_from_slice(
            format!(
                "\"Endpoint\" : {}\n\"Hash\" : {}\n\n",
                gofmt::quote_str(&h.ep),
                h.resp.hash
            )
            .as_bytes(),
        );
    }
    out
}

pub fn endpoint_health(hs: &[EpHealth]) -> Vec<u8> {
    let mut out = String::new();
    for h in hs {
        out.push_str(&format!(
            "\"Endpoint\" : {}\n\"Health\" : {}\n\"Took\" : {}\n\"Error\" : {}\n\n",
            gofmt::quote_str(&h.ep),
            h.health,
            gofmt::duration_string(h.took),
            h.error
        ));
    }
    out.into_bytes()
}

pub fn endpoint_status(st: &[EpStatus]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in st {
        hdr(&mut out, &s.resp.header);
        let r = &s.resp;
        out.extend_from_slice(
            format!(
                "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : [{}]\n\"Endpoint\" : {}\n\n",
                gofmt::quote_str(&r.version),
                r.db_size,
                r.leader,
                r.is_learner,
                r.raft_index,
                r.raft_term,
                r.raft_applied_index,
                r.errors.join(" "),
                gofmt::quote_str(&s.ep),
            )
            .as_bytes(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;
    use cairn_proto::etcdserverpb::{ResponseHeader, ResponseOp};

    /// Verified against etcdctl 3.4.23 (`get --prefix foo -w fields`).
    #[test]
    fn get_fields() {
        let r = RangeResponse {
            header: td::header(3),
            kvs: vec![
                td::kv("foo", "bar", 2, 2, 1),
                td::kv("foo2", "baz", 3, 3, 1),
            ],
            more: false,
            count: 2,
        };
        assert_eq!(
            String::from_utf8(get(&r)).unwrap(),
            r#""ClusterID" : 324952591200643719
"MemberID" : 3319814642761637952
"Revision" : 3
"RaftTerm" : 2
"Key" : "foo"
"CreateRevision" : 2
"ModRevision" : 2
"Version" : 1
"Value" : "bar"
"Lease" : 0
"Key" : "foo2"
"CreateRevision" : 3
"ModRevision" : 3
"Version" : 1
"Value" : "baz"
"Lease" : 0
"More" : false
"Count" : 2
"#
        );
    }

    /// Verified against etcdctl 3.4.23: inner headers carry only the revision.
    #[test]
    fn txn_fields() {
        let inner = Some(ResponseHeader {
            revision: 22,
            ..Default::default()
        });
        let r = TxnResponse {
            header: td::header(22),
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse {
                        header: inner,
                        prev_kv: Some(td::kv("a", "11", 13, 21, 3)),
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: inner,
                        deleted: 0,
                        prev_kvs: vec![],
                    })),
                },
            ],
        };
        assert_eq!(
            String::from_utf8(txn(&r)).unwrap(),
            r#""ClusterID" : 324952591200643719
"MemberID" : 3319814642761637952
"Revision" : 22
"RaftTerm" : 2
"Succeeded" : true
"ClusterID" : 0
"MemberID" : 0
"Revision" : 22
"RaftTerm" : 0
"PrevKey" : "a"
"PrevCreateRevision" : 13
"PrevModRevision" : 21
"PrevVersion" : 3
"PrevValue" : "11"
"PrevLease" : 0
"ClusterID" : 0
"MemberID" : 0
"Revision" : 22
"RaftTerm" : 0
"Deleted" : 0
"#
        );
    }

    #[test]
    fn status_fields() {
        let st = [EpStatus {
            ep: "127.0.0.1:23790".into(),
            resp: td::status(),
        }];
        assert_eq!(
            String::from_utf8(endpoint_status(&st)).unwrap(),
            r#""ClusterID" : 324952591200643719
"MemberID" : 3319814642761637952
"Revision" : 26
"RaftTerm" : 2
"Version" : "3.4.23"
"DBSize" : 24576
"Leader" : 3319814642761637952
"IsLearner" : false
"RaftIndex" : 39
"RaftTerm" : 2
"RaftAppliedIndex" : 39
"Errors" : []
"Endpoint" : "127.0.0.1:23790"

"#
        );
    }

    /// Verified against etcdctl 3.4.23 (`member list -w fields`).
    #[test]
    fn member_list_fields() {
        assert_eq!(
            String::from_utf8(member_list(&td::member_list())).unwrap(),
            r#""ClusterID" : 7266900810802666328
"MemberID" : 4627081221937520288
"Revision" : 0
"RaftTerm" : 2
"ID" : 4627081221937520288
"Name" : "m1"
"PeerURL" : "http://127.0.0.1:23801"
"ClientURL" : "http://127.0.0.1:23791"
"IsLearner" : false

"ID" : 13227418286370388827
"Name" : ""
"PeerURL" : "http://127.0.0.1:23804"
"PeerURL" : "http://127.0.0.1:23805"
"IsLearner" : true

"#
        );
    }

    #[test]
    fn quoted_bytes() {
        let mut out = Vec::new();
        kv(&mut out, "", &kv_bytes());
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("\"Key\" : \"a\\x00\\xff\\n\"\n")
        );
    }

    fn kv_bytes() -> KeyValue {
        KeyValue {
            key: b"a\x00\xff\n".to_vec(),
            ..Default::default()
        }
    }
}
