//! etcdctl's output formats (`-w simple|json|fields|table|protobuf`) over the wire types.
//! Every printer returns the exact bytes etcdctl writes.

mod fields;
mod json;
mod simple;
mod table;

pub use simple::event_type;

use std::time::Duration;

use cairn_proto::etcdserverpb::{
    DeleteRangeResponse, HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, Member, MemberAddResponse,
    MemberListResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse,
    MoveLeaderResponse, PutResponse, RangeResponse, ResponseHeader, StatusResponse, TxnResponse,
    WatchResponse,
};
use prost::Message;

use crate::{Fail, exit, gofmt};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

impl Format {
    /// `NewPrinter`; an unknown name is etcdctl's "unsupported output format".
    pub fn from_name(name: &str) -> Result<Format, Fail> {
        Ok(match name {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "table" => Format::Table,
            "protobuf" => Format::Protobuf,
            _ => return Err(Fail::new(exit::BAD_FEATURE, "unsupported output format")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::Protobuf => "protobuf",
        }
    }

    fn unsupported(self) -> Fail {
        Fail::new(
            exit::BAD_FEATURE,
            format!("{} not supported as output format", self.name()),
        )
    }
}

/// One `endpoint health` result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpHealth {
    pub ep: String,
    pub health: bool,
    pub took: Duration,
    pub error: String,
}

/// One `endpoint status` result.
#[derive(Clone, Debug, PartialEq)]
pub struct EpStatus {
    pub ep: String,
    pub resp: StatusResponse,
}

/// One `endpoint hashkv` result.
#[derive(Clone, Debug, PartialEq)]
pub struct EpHashKv {
    pub ep: String,
    pub resp: HashKvResponse,
}

/// What etcdctl 3.4.23 does where its printer has no method for a response (`member
/// promote` in every format but simple): it calls a method on a nil interface and panics
/// (after the promotion went through).
fn nil_printer_panic() -> Fail {
    Fail::panic(
        "runtime error: invalid memory address or nil pointer dereference\n\
         [signal SIGSEGV: segmentation violation code=0x1 addr=0x78 pc=0xbab2ee]",
    )
}

/// The chosen output format with `--hex` and `--print-value-only`.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub format: Format,
    pub hex: bool,
    pub value_only: bool,
}

/// What a print produced: bytes for stdout and for stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl From<Vec<u8>> for Output {
    fn from(stdout: Vec<u8>) -> Output {
        Output {
            stdout,
            stderr: vec![],
        }
    }
}

/// `printPB`: the response's wire bytes, as they are (no newline).
fn protobuf(m: &impl Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// etcdctl's protobuf printer given one of clientv3's lease structs: it marshals the
/// `*pb.ResponseHeader` they embed, so only the header comes out.
fn header_pb(h: &Option<ResponseHeader>) -> Vec<u8> {
    h.map(|h| h.encode_to_vec()).unwrap_or_default()
}

/// gogo-protobuf's compact text of a header (`cluster_id:1 revision:4 `).
fn header_text(h: &Option<ResponseHeader>) -> String {
    let Some(h) = h else {
        return "<nil>".to_string();
    };
    let mut out = String::new();
    for (name, v) in [
        ("cluster_id", u128::from(h.cluster_id)),
        ("member_id", u128::from(h.member_id)),
    ] {
        if v != 0 {
            out.push_str(&format!("{name}:{v} "));
        }
    }
    for (name, v) in [("revision", h.revision), ("raft_term", h.raft_term as i64)] {
        if v != 0 {
            out.push_str(&format!("{name}:{v} "));
        }
    }
    out
}

impl Printer {
    /// One watch response (`events_nil`: one clientv3 made up, without an event slice).
    /// Like etcdctl, an unsupported format fails only here, at the first response.
    pub fn watch(&self, r: &WatchResponse, events_nil: bool) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::watch(self, r),
            Format::Json => json::line(json::watch(r, events_nil)),
            Format::Fields => fields::watch(r),
            Format::Protobuf => {
                // etcdctl rebuilds a `pb.WatchResponse` without the watch ID.
                let wr = WatchResponse {
                    header: Some(r.header.unwrap_or_default()),
                    events: r.events.clone(),
                    compact_revision: r.compact_revision,
                    canceled: r.canceled,
                    created: r.created,
                    ..Default::default()
                };
                protobuf(&wr)
            }
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn grant(&self, r: &LeaseGrantResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::grant(r),
            Format::Json => json::line(json::grant(r)),
            Format::Fields => fields::grant(r),
            Format::Protobuf => header_pb(&r.header),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn revoke(&self, id: i64, r: &LeaseRevokeResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::revoke(id),
            Format::Json => json::line(json::revoke(r)),
            Format::Fields => fields::revoke(r),
            Format::Protobuf => {
                return Err(Fail::new(
                    exit::BAD_FEATURE,
                    format!(
                        "marshal unsupported for type clientv3.LeaseRevokeResponse ({{{}}})",
                        header_text(&r.header)
                    ),
                ));
            }
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn keep_alive(&self, r: &LeaseKeepAliveResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::keep_alive(r),
            Format::Json => json::line(json::keep_alive(r)),
            Format::Fields => fields::keep_alive(r),
            Format::Protobuf => header_pb(&r.header),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn time_to_live(&self, r: &LeaseTimeToLiveResponse, keys: bool) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::time_to_live(r, keys),
            Format::Json => json::line(json::time_to_live(r)),
            Format::Fields => fields::time_to_live(r),
            Format::Protobuf => header_pb(&r.header),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn leases(&self, r: &LeaseLeasesResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::leases(r),
            Format::Json => json::line(json::leases(r)),
            Format::Fields => fields::leases(r),
            Format::Protobuf => header_pb(&r.header),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn get(&self, r: &RangeResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::get(self, r),
            Format::Json => json::line(json::range(r)),
            Format::Fields => fields::get(r),
            Format::Protobuf => protobuf(r),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn put(&self, r: &PutResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::put(self, r),
            Format::Json => json::line(json::put(r)),
            Format::Fields => fields::put(r),
            Format::Protobuf => protobuf(r),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn del(&self, r: &DeleteRangeResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::del(self, r),
            Format::Json => json::line(json::del(r)),
            Format::Fields => fields::del(r),
            Format::Protobuf => protobuf(r),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn txn(&self, r: &TxnResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::txn(self, r),
            Format::Json => json::line(json::txn(r)),
            Format::Fields => fields::txn(r),
            Format::Protobuf => protobuf(r),
            Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn endpoint_health(&self, hs: &[EpHealth]) -> Result<Output, Fail> {
        Ok(match self.format {
            Format::Simple => Output {
                stdout: vec![],
                stderr: simple::endpoint_health(hs),
            },
            Format::Json => json::line(json::endpoint_health(hs)).into(),
            Format::Fields => fields::endpoint_health(hs).into(),
            Format::Table => table::endpoint_health(hs).into(),
            Format::Protobuf => return Err(self.format.unsupported()),
        })
    }

    pub fn endpoint_hashkv(&self, hs: &[EpHashKv]) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::endpoint_hashkv(hs),
            Format::Json => json::line(json::endpoint_hashkv(hs)),
            Format::Fields => fields::endpoint_hashkv(hs),
            Format::Table => table::endpoint_hashkv(hs),
            Format::Protobuf => return Err(self.format.unsupported()),
        })
    }

    pub fn member_list(&self, r: &MemberListResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::member_list(r),
            Format::Json => json::line(json::member_list(r)),
            Format::Fields => fields::member_list(r),
            Format::Table => table::member_list(r),
            Format::Protobuf => protobuf(r),
        })
    }

    pub fn member_add(&self, r: &MemberAddResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::member_add(r),
            Format::Json => json::line(json::member_add(r)),
            Format::Protobuf => protobuf(r),
            Format::Fields | Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn member_remove(&self, id: u64, r: &MemberRemoveResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::member_changed(id, "removed from", &r.header),
            Format::Json => json::line(json::members(&r.header, &r.members)),
            Format::Protobuf => protobuf(r),
            Format::Fields | Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn member_update(&self, id: u64, r: &MemberUpdateResponse) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::member_changed(id, "updated in", &r.header),
            Format::Json => json::line(json::members(&r.header, &r.members)),
            Format::Protobuf => protobuf(r),
            Format::Fields | Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn member_promote(&self, id: u64, r: &MemberPromoteResponse) -> Result<Vec<u8>, Fail> {
        match self.format {
            Format::Simple => Ok(simple::member_changed(id, "promoted in", &r.header)),
            _ => Err(nil_printer_panic()),
        }
    }

    pub fn move_leader(
        &self,
        leader: u64,
        target: u64,
        r: &MoveLeaderResponse,
    ) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::move_leader(leader, target),
            Format::Json => json::line(json::move_leader(r)),
            Format::Protobuf => protobuf(r),
            Format::Fields | Format::Table => return Err(self.format.unsupported()),
        })
    }

    pub fn endpoint_status(&self, st: &[EpStatus]) -> Result<Vec<u8>, Fail> {
        Ok(match self.format {
            Format::Simple => simple::endpoint_status(st),
            Format::Json => json::line(json::endpoint_status(st)),
            Format::Fields => fields::endpoint_status(st),
            Format::Table => table::endpoint_status(st),
            Format::Protobuf => return Err(self.format.unsupported()),
        })
    }
}

/// `makeEndpointHealthTable`.
fn endpoint_health_rows(hs: &[EpHealth]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let hdr = vec!["endpoint", "health", "took", "error"];
    let rows = hs
        .iter()
        .map(|h| {
            vec![
                h.ep.clone(),
                h.health.to_string(),
                gofmt::duration_string(h.took),
                h.error.clone(),
            ]
        })
        .collect();
    (hdr, rows)
}

/// `makeMemberListTable`.
fn member_list_rows(members: &[Member]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let hdr = vec![
        "ID",
        "Status",
        "Name",
        "Peer Addrs",
        "Client Addrs",
        "Is Learner",
    ];
    let rows = members
        .iter()
        .map(|m| {
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    (hdr, rows)
}

/// `makeEndpointHashKVTable`.
fn endpoint_hashkv_rows(hs: &[EpHashKv]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let hdr = vec!["endpoint", "hash"];
    let rows = hs
        .iter()
        .map(|h| vec![h.ep.clone(), h.resp.hash.to_string()])
        .collect();
    (hdr, rows)
}

/// `makeEndpointStatusTable`.
fn endpoint_status_rows(st: &[EpStatus]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let hdr = vec![
        "endpoint",
        "ID",
        "version",
        "db size",
        "is leader",
        "is learner",
        "raft term",
        "raft index",
        "raft applied index",
        "errors",
    ];
    let rows = st
        .iter()
        .map(|s| {
            let member_id = s.resp.header.map(|h| h.member_id).unwrap_or_default();
            vec![
                s.ep.clone(),
                format!("{member_id:x}"),
                s.resp.version.clone(),
                gofmt::human_bytes(s.resp.db_size.max(0) as u64),
                (s.resp.leader == member_id).to_string(),
                s.resp.is_learner.to_string(),
                s.resp.raft_term.to_string(),
                s.resp.raft_index.to_string(),
                s.resp.raft_applied_index.to_string(),
                s.resp.errors.join(", "),
            ]
        })
        .collect();
    (hdr, rows)
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Responses as real etcd 3.4.23 sent them, for the printer tests.
    use cairn_proto::etcdserverpb::{Member, MemberListResponse, ResponseHeader, StatusResponse};
    use cairn_proto::mvccpb::KeyValue;

    pub fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 324952591200643719,
            member_id: 3319814642761637952,
            revision,
            raft_term: 2,
        })
    }

    pub fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
        }
    }

    /// A started voter and an unstarted learner with two peer URLs.
    pub fn member_list() -> MemberListResponse {
        MemberListResponse {
            header: Some(ResponseHeader {
                cluster_id: 7266900810802666328,
                member_id: 4627081221937520288,
                revision: 0,
                raft_term: 2,
            }),
            members: vec![
                Member {
                    id: 4627081221937520288,
                    name: "m1".into(),
                    peer_ur_ls: vec!["http://127.0.0.1:23801".into()],
                    client_ur_ls: vec!["http://127.0.0.1:23791".into()],
                    is_learner: false,
                },
                Member {
                    id: 13227418286370388827,
                    name: String::new(),
                    peer_ur_ls: vec![
                        "http://127.0.0.1:23804".into(),
                        "http://127.0.0.1:23805".into(),
                    ],
                    client_ur_ls: vec![],
                    is_learner: true,
                },
            ],
        }
    }

    pub fn status() -> StatusResponse {
        StatusResponse {
            header: header(26),
            version: "3.4.23".into(),
            db_size: 24576,
            leader: 3319814642761637952,
            raft_index: 39,
            raft_term: 2,
            raft_applied_index: 39,
            db_size_in_use: 24576,
            ..Default::default()
        }
    }
}
