//! `-w json`: Go's `encoding/json` of etcd's gogo-protobuf structs, i.e. fields in
//! declaration order under their `json` tags, all `omitempty`, bytes as base64, and the
//! `oneof` of a txn response as `{"Response":{"ResponseRange":{...}}}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    DeleteRangeResponse, HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, Member, MemberAddResponse,
    MemberListResponse, MoveLeaderResponse, PutResponse, RangeResponse, ResponseHeader,
    StatusResponse, TxnResponse, WatchResponse,
};
use cairn_proto::mvccpb::{Event, KeyValue};

use super::{EpHashKv, EpHealth, EpStatus};
use crate::gofmt;

/// A JSON object being written, with `omitempty` helpers.
struct Obj(Vec<String>);

impl Obj {
    fn new() -> Obj {
        Obj(Vec::new())
    }

    fn raw(mut self, name: &str, value: String) -> Obj {
        self.0.push(format!("\"{name}\":{value}"));
        self
    }

    fn int(self, name: &str, v: i128) -> Obj {
        if v == 0 {
            self
        } else {
            self.raw(name, v.to_string())
        }
    }

    fn boolean(self, name: &str, v: bool) -> Obj {
        if v {
            self.raw(name, "true".into())
        } else {
            self
        }
    }

    fn bytes(self, name: &str, v: &[u8]) -> Obj {
        if v.is_empty() {
            self
        } else {
            self.raw(name, format!("\"{}\"", STANDARD.encode(v)))
        }
    }

    fn string(self, name: &str, v: &str) -> Obj {
        if v.is_empty() {
            self
        } else {
            self.raw(name, gofmt::json_string(v))
        }
    }

    fn opt(self, name: &str, v: Option<String>) -> Obj {
        match v {
            Some(v) => self.raw(name, v),
            None => self,
        }
    }

    fn list(self, name: &str, items: Vec<String>) -> Obj {
        if items.is_empty() {
            self
        } else {
            self.raw(name, format!("[{}]", items.join(",")))
        }
    }

    fn done(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

/// `printJSON`: the value and a newline.
pub fn line(json: String) -> Vec<u8> {
    let mut out = json.into_bytes();
    out.push(b'\n');
    out
}

fn header(h: &Option<ResponseHeader>) -> Option<String> {
    h.map(|h| {
        Obj::new()
            .int("cluster_id", h.cluster_id.into())
            .int("member_id", h.member_id.into())
            .int("revision", h.revision.into())
            .int("raft_term", h.raft_term.into())
            .done()
    })
}

fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision.into())
        .int("mod_revision", kv.mod_revision.into())
        .int("version", kv.version.into())
        .bytes("value", &kv.value)
        .int("lease", kv.lease.into())
        .done()
}

pub fn range(r: &RangeResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .list("kvs", r.kvs.iter().map(kv).collect())
        .boolean("more", r.more)
        .int("count", r.count.into())
        .done()
}

pub fn put(r: &PutResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .opt("prev_kv", r.prev_kv.as_ref().map(kv))
        .done()
}

pub fn del(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .int("deleted", r.deleted.into())
        .list("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .done()
}

pub fn txn(r: &TxnResponse) -> String {
    let responses = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(Response::ResponseRange(g)) => format!("{{\"ResponseRange\":{}}}", range(g)),
                Some(Response::ResponsePut(p)) => format!("{{\"ResponsePut\":{}}}", put(p)),
                Some(Response::ResponseDeleteRange(d)) => {
                    format!("{{\"ResponseDeleteRange\":{}}}", del(d))
                }
                Some(Response::ResponseTxn(t)) => format!("{{\"ResponseTxn\":{}}}", txn(t)),
                None => "null".to_string(),
            };
            format!("{{\"Response\":{inner}}}")
        })
        .collect();
    Obj::new()
        .opt("header", header(&r.header))
        .boolean("succeeded", r.succeeded)
        .list("responses", responses)
        .done()
}

/// The fields of a header embedded (as `*pb.ResponseHeader`) in one of clientv3's lease
/// response structs: flattened into the outer object.
fn flat_header(h: &Option<ResponseHeader>) -> Obj {
    let h = match h {
        Some(h) => h,
        None => return Obj::new(),
    };
    Obj::new()
        .int("cluster_id", h.cluster_id.into())
        .int("member_id", h.member_id.into())
        .int("revision", h.revision.into())
        .int("raft_term", h.raft_term.into())
}

fn event(e: &Event) -> String {
    Obj::new()
        .int("type", e.r#type.into())
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .done()
}

/// clientv3's `WatchResponse`: its exported fields, none `omitempty`. `events_nil`: the
/// response clientv3 makes up when it closes a stream has no event slice at all.
pub fn watch(r: &WatchResponse, events_nil: bool) -> String {
    let events: Vec<String> = r.events.iter().map(event).collect();
    let events = if events_nil {
        "null".to_string()
    } else {
        format!("[{}]", events.join(","))
    };
    Obj::new()
        .raw(
            "Header",
            header(&Some(r.header.unwrap_or_default())).unwrap_or_default(),
        )
        .raw("Events", events)
        .raw("CompactRevision", r.compact_revision.to_string())
        .raw("Canceled", r.canceled.to_string())
        .raw("Created", r.created.to_string())
        .done()
}

pub fn grant(r: &LeaseGrantResponse) -> String {
    flat_header(&r.header)
        .raw("ID", r.id.to_string())
        .raw("TTL", r.ttl.to_string())
        .raw("Error", gofmt::json_string(&r.error))
        .done()
}

pub fn revoke(r: &LeaseRevokeResponse) -> String {
    Obj::new().opt("header", header(&r.header)).done()
}

pub fn keep_alive(r: &LeaseKeepAliveResponse) -> String {
    flat_header(&r.header)
        .raw("ID", r.id.to_string())
        .raw("TTL", r.ttl.to_string())
        .done()
}

pub fn time_to_live(r: &LeaseTimeToLiveResponse) -> String {
    let keys = if r.keys.is_empty() {
        "null".to_string()
    } else {
        let ks: Vec<String> = r
            .keys
            .iter()
            .map(|k| format!("\"{}\"", STANDARD.encode(k)))
            .collect();
        format!("[{}]", ks.join(","))
    };
    flat_header(&r.header)
        .raw("id", r.id.to_string())
        .raw("ttl", r.ttl.to_string())
        .raw("granted-ttl", r.granted_ttl.to_string())
        .raw("keys", keys)
        .done()
}

pub fn leases(r: &LeaseLeasesResponse) -> String {
    let ls: Vec<String> = r
        .leases
        .iter()
        .map(|l| format!("{{\"id\":{}}}", l.id))
        .collect();
    flat_header(&r.header)
        .raw("leases", format!("[{}]", ls.join(",")))
        .done()
}

fn status(r: &StatusResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .string("version", &r.version)
        .int("dbSize", r.db_size.into())
        .int("leader", r.leader.into())
        .int("raftIndex", r.raft_index.into())
        .int("raftTerm", r.raft_term.into())
        .int("raftAppliedIndex", r.raft_applied_index.into())
        .list(
            "errors",
            r.errors.iter().map(|e| gofmt::json_string(e)).collect(),
        )
        .int("dbSizeInUse", r.db_size_in_use.into())
        .boolean("isLearner", r.is_learner)
        .done()
}

pub fn endpoint_status(st: &[EpStatus]) -> String {
    let items: Vec<String> = st
        .iter()
        .map(|s| {
            Obj::new()
                .raw("Endpoint", gofmt::json_string(&s.ep))
                .raw("Status", status(&s.resp))
                .done()
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn hashkv(r: &HashKvResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .int("hash", r.hash.into())
        .int("compact_revision", r.compact_revision.into())
        .done()
}

pub fn endpoint_hashkv(hs: &[EpHashKv]) -> String {
    let items: Vec<String> = hs
        .iter()
        .map(|h| {
            Obj::new()
                .raw("Endpoint", gofmt::json_string(&h.ep))
                .raw("HashKV", hashkv(&h.resp))
                .done()
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn strings(v: &[String]) -> Vec<String> {
    v.iter().map(|s| gofmt::json_string(s)).collect()
}

fn member(m: &Member) -> String {
    Obj::new()
        .int("ID", m.id.into())
        .string("name", &m.name)
        .list("peerURLs", strings(&m.peer_ur_ls))
        .list("clientURLs", strings(&m.client_ur_ls))
        .boolean("isLearner", m.is_learner)
        .done()
}

/// A response of a header and the members: `MemberList`, `MemberRemove`, `MemberUpdate`.
pub fn members(h: &Option<ResponseHeader>, members: &[Member]) -> String {
    Obj::new()
        .opt("header", header(h))
        .list("members", members.iter().map(member).collect())
        .done()
}

pub fn member_list(r: &MemberListResponse) -> String {
    members(&r.header, &r.members)
}

pub fn member_add(r: &MemberAddResponse) -> String {
    Obj::new()
        .opt("header", header(&r.header))
        .opt("member", r.member.as_ref().map(member))
        .list("members", r.members.iter().map(member).collect())
        .done()
}

pub fn move_leader(r: &MoveLeaderResponse) -> String {
    Obj::new().opt("header", header(&r.header)).done()
}

pub fn endpoint_health(hs: &[EpHealth]) -> String {
    let items: Vec<String> = hs
        .iter()
        .map(|h| {
            Obj::new()
                .raw("endpoint", gofmt::json_string(&h.ep))
                .raw("health", h.health.to_string())
                .raw("took", gofmt::json_string(&gofmt::duration_string(h.took)))
                .string("error", &h.error)
                .done()
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;
    use cairn_proto::etcdserverpb::ResponseOp;
    use std::time::Duration;

    /// The expected strings below are etcdctl 3.4.23's output for the same responses.
    #[test]
    fn kv_responses() {
        let r = RangeResponse {
            header: td::header(3),
            kvs: vec![kv_("foo", "bar", 2, 2, 1)],
            more: false,
            count: 1,
        };
        assert_eq!(
            range(&r),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":3,"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1}"#
        );
        let p = PutResponse {
            header: td::header(9),
            prev_kv: Some(kv_("k1", "v1", 8, 8, 1)),
        };
        assert_eq!(
            put(&p),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":9,"raft_term":2},"prev_kv":{"key":"azE=","create_revision":8,"mod_revision":8,"version":1,"value":"djE="}}"#
        );
        let p = PutResponse {
            header: td::header(4),
            prev_kv: None,
        };
        assert_eq!(
            put(&p),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":4,"raft_term":2}}"#
        );
        let d = DeleteRangeResponse {
            header: td::header(16),
            deleted: 2,
            prev_kvs: vec![
                kv_("k2", "fromstdin", 12, 12, 1),
                kv_("k5", "-v", 14, 14, 1),
            ],
        };
        assert_eq!(
            del(&d),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":16,"raft_term":2},"deleted":2,"prev_kvs":[{"key":"azI=","create_revision":12,"mod_revision":12,"version":1,"value":"ZnJvbXN0ZGlu"},{"key":"azU=","create_revision":14,"mod_revision":14,"version":1,"value":"LXY="}]}"#
        );
    }

    #[test]
    fn txn_response() {
        let r = TxnResponse {
            header: td::header(21),
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(Response::ResponseRange(RangeResponse {
                    header: Some(ResponseHeader {
                        revision: 21,
                        ..Default::default()
                    }),
                    kvs: vec![kv_("a", "11", 13, 21, 3)],
                    more: false,
                    count: 1,
                })),
            }],
        };
        assert_eq!(
            txn(&r),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":21,"raft_term":2},"responses":[{"Response":{"ResponseRange":{"header":{"revision":21},"kvs":[{"key":"YQ==","create_revision":13,"mod_revision":21,"version":3,"value":"MTE="}],"count":1}}}]}"#
        );
    }

    #[test]
    fn endpoints() {
        let st = [EpStatus {
            ep: "127.0.0.1:23790".into(),
            resp: td::status(),
        }];
        assert_eq!(
            endpoint_status(&st),
            r#"[{"Endpoint":"127.0.0.1:23790","Status":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":26,"raft_term":2},"version":"3.4.23","dbSize":24576,"leader":3319814642761637952,"raftIndex":39,"raftTerm":2,"raftAppliedIndex":39,"dbSizeInUse":24576}}]"#
        );
        assert_eq!(endpoint_status(&[]), "[]");
        let hs = [EpHealth {
            ep: "127.0.0.1:1".into(),
            health: false,
            took: Duration::from_nanos(5_001_265_972),
            error: "context deadline exceeded".into(),
        }];
        assert_eq!(
            endpoint_health(&hs),
            r#"[{"endpoint":"127.0.0.1:1","health":false,"took":"5.001265972s","error":"context deadline exceeded"}]"#
        );
    }

    /// etcdctl 3.4.23's `endpoint hashkv -w json`; it knows nothing of etcd 3.6's
    /// `hash_revision`.
    #[test]
    fn hashkv_response() {
        let hs = [EpHashKv {
            ep: "127.0.0.1:23791".into(),
            resp: HashKvResponse {
                header: td::header(1),
                hash: 1084519789,
                compact_revision: -1,
                hash_revision: 1,
            },
        }];
        assert_eq!(
            endpoint_hashkv(&hs),
            r#"[{"Endpoint":"127.0.0.1:23791","HashKV":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":1,"raft_term":2},"hash":1084519789,"compact_revision":-1}}]"#
        );
    }

    /// etcdctl 3.4.23's `member list -w json`: `omitempty` drops the unstarted member's
    /// name and client URLs and the voter's `isLearner`.
    #[test]
    fn member_list_response() {
        assert_eq!(
            member_list(&td::member_list()),
            r#"{"header":{"cluster_id":7266900810802666328,"member_id":4627081221937520288,"raft_term":2},"members":[{"ID":4627081221937520288,"name":"m1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]},{"ID":13227418286370388827,"peerURLs":["http://127.0.0.1:23804","http://127.0.0.1:23805"],"isLearner":true}]}"#
        );
        assert_eq!(move_leader(&MoveLeaderResponse::default()), "{}");
    }

    /// etcdctl 3.4.23's `watch -w json` and `lease ... -w json` lines for the same responses.
    #[test]
    fn watch_and_lease_responses() {
        let ids = ResponseHeader {
            cluster_id: 2755613793311995676,
            member_id: 9829954754940738069,
            revision: 0,
            raft_term: 2,
        };
        let canceled = WatchResponse {
            header: Some(ids),
            compact_revision: 12,
            canceled: true,
            ..Default::default()
        };
        assert_eq!(
            watch(&canceled, false),
            r#"{"Header":{"cluster_id":2755613793311995676,"member_id":9829954754940738069,"raft_term":2},"Events":[],"CompactRevision":12,"Canceled":true,"Created":false}"#
        );
        assert_eq!(
            watch(&WatchResponse::default(), true),
            r#"{"Header":{},"Events":null,"CompactRevision":0,"Canceled":false,"Created":false}"#
        );
        let del = WatchResponse {
            header: Some(ResponseHeader {
                revision: 10,
                ..ids
            }),
            events: vec![Event {
                r#type: 1,
                kv: Some(KeyValue {
                    key: b"w1".to_vec(),
                    mod_revision: 10,
                    ..Default::default()
                }),
                prev_kv: Some(kv_("w1", "b", 8, 9, 2)),
            }],
            ..Default::default()
        };
        assert_eq!(
            watch(&del, false),
            r#"{"Header":{"cluster_id":2755613793311995676,"member_id":9829954754940738069,"revision":10,"raft_term":2},"Events":[{"type":1,"kv":{"key":"dzE=","mod_revision":10},"prev_kv":{"key":"dzE=","create_revision":8,"mod_revision":9,"version":2,"value":"Yg=="}}],"CompactRevision":0,"Canceled":false,"Created":false}"#
        );
        let h4 = Some(ResponseHeader { revision: 4, ..ids });
        let g = LeaseGrantResponse {
            header: h4,
            id: 1879586523217285128,
            ttl: 100,
            error: String::new(),
        };
        assert_eq!(
            grant(&g),
            r#"{"cluster_id":2755613793311995676,"member_id":9829954754940738069,"revision":4,"raft_term":2,"ID":1879586523217285128,"TTL":100,"Error":""}"#
        );
        let t = LeaseTimeToLiveResponse {
            header: h4,
            id: 4660,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            time_to_live(&t),
            r#"{"cluster_id":2755613793311995676,"member_id":9829954754940738069,"revision":4,"raft_term":2,"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}"#
        );
        let l = LeaseLeasesResponse {
            header: h4,
            leases: vec![],
        };
        assert_eq!(
            leases(&l),
            r#"{"cluster_id":2755613793311995676,"member_id":9829954754940738069,"revision":4,"raft_term":2,"leases":[]}"#
        );
    }

    fn kv_(k: &str, v: &str, c: i64, m: i64, ver: i64) -> KeyValue {
        td::kv(k, v, c, m, ver)
    }
}
