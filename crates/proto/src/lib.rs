//! `cairn-proto`: the etcd v3 wire contract, as Rust code generated from our
//! own `.proto` files (names and field numbers are etcd's exactly).
//!
//! This crate must never depend on anything else in the workspace: every
//! other crate depends on it, and it is only generated types and stubs.

/// etcd's KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `KeyValue` and `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The Lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The Election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Cairn-internal messages, e.g. the payload of a Raft log entry.
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

#[cfg(test)]
mod tests {
    //! The field numbers are the contract with etcd clients: these tests pin
    //! the exact bytes, computed by hand from etcd's numbering.

    use super::*;
    use prost::Message;

    #[test]
    fn range_request_wire_bytes() {
        let req = etcdserverpb::RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 10,
            revision: 5,
            sort_order: etcdserverpb::range_request::SortOrder::Descend as i32,
            sort_target: etcdserverpb::range_request::SortTarget::Mod as i32,
            serializable: true,
            count_only: true,
            min_mod_revision: 300,
            max_create_revision: 7,
            ..Default::default()
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 3, b'f', b'o', b'o', // 1: key
            0x12, 3, b'f', b'o', b'p', // 2: range_end
            0x18, 10,                  // 3: limit
            0x20, 5,                   // 4: revision
            0x28, 2,                   // 5: sort_order = DESCEND
            0x30, 3,                   // 6: sort_target = MOD
            0x38, 1,                   // 7: serializable
            0x48, 1,                   // 9: count_only
            0x50, 0xac, 0x02,          // 10: min_mod_revision = 300
            0x68, 7,                   // 13: max_create_revision
        ];
        assert_eq!(req.encode_to_vec(), expected);
        assert_eq!(etcdserverpb::RangeRequest::decode(expected).unwrap(), req);
    }

    #[test]
    fn key_value_wire_bytes() {
        let kv = mvccpb::KeyValue {
            key: b"a".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: b"v".to_vec(),
            lease: 0x1234,
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 1, b'a',    // 1: key
            0x10, 2,          // 2: create_revision
            0x18, 3,          // 3: mod_revision
            0x20, 1,          // 4: version
            0x2a, 1, b'v',    // 5: value
            0x30, 0xb4, 0x24, // 6: lease = 0x1234
        ];
        assert_eq!(kv.encode_to_vec(), expected);
        assert_eq!(mvccpb::KeyValue::decode(expected).unwrap(), kv);
    }

    #[test]
    fn compare_oneof_and_tag_64() {
        use etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
        let cmp = etcdserverpb::Compare {
            result: CompareResult::NotEqual as i32,
            target: CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::Lease(7)),
            range_end: b"l".to_vec(),
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x08, 3,             // 1: result = NOT_EQUAL
            0x10, 4,             // 2: target = LEASE
            0x1a, 1, b'k',       // 3: key
            0x40, 7,             // 8: lease (oneof target_union)
            0x82, 0x04, 1, b'l', // 64: range_end
        ];
        assert_eq!(cmp.encode_to_vec(), expected);
        assert_eq!(etcdserverpb::Compare::decode(expected).unwrap(), cmp);
    }

    #[test]
    fn watch_response_events_is_tag_11() {
        let resp = etcdserverpb::WatchResponse {
            events: vec![mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        // 11 << 3 | 2 = 0x5a; the event is { 1: type = DELETE }.
        assert_eq!(resp.encode_to_vec(), [0x5a, 2, 0x08, 1]);
    }

    #[test]
    fn service_names_match_etcd() {
        assert_eq!(etcdserverpb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
        assert_eq!(
            etcdserverpb::watch_server::SERVICE_NAME,
            "etcdserverpb.Watch"
        );
        assert_eq!(
            etcdserverpb::lease_server::SERVICE_NAME,
            "etcdserverpb.Lease"
        );
        assert_eq!(
            etcdserverpb::cluster_server::SERVICE_NAME,
            "etcdserverpb.Cluster"
        );
        assert_eq!(
            etcdserverpb::maintenance_server::SERVICE_NAME,
            "etcdserverpb.Maintenance"
        );
        assert_eq!(etcdserverpb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
        assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
        assert_eq!(
            v3electionpb::election_server::SERVICE_NAME,
            "v3electionpb.Election"
        );
    }

    #[test]
    fn internal_request_round_trip() {
        let req = cairnpb::InternalRequest {
            id: 42,
            request: Some(cairnpb::internal_request::Request::Put(
                etcdserverpb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                },
            )),
        };
        // { 1: 42, 2: PutRequest { 1: "k", 2: "v" } }
        let expected: &[u8] = &[0x08, 42, 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v'];
        assert_eq!(req.encode_to_vec(), expected);
        assert_eq!(cairnpb::InternalRequest::decode(expected).unwrap(), req);
    }
}
