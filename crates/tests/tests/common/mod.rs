//! Helpers shared by the integration tests that use the `etcd-client` crate.
//! (Each test file includes this with `mod common;`, so not every helper is used by each.)
#![allow(dead_code)]

use std::fmt::Debug;
use std::time::Duration;

use cairn_tests::{Server, base64};
use etcd_client::{Client, ConnectOptions, Error, KeyValue, ResponseHeader};

/// A client connected to `server`, with bounded connect and request timeouts so a broken
/// server fails the test instead of hanging it.
pub async fn connect(server: &Server) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect([server.url()], Some(options))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to {}: {e}\nserver log:\n{}",
                server.url(),
                server.log()
            )
        })
}

/// The gRPC status message of a failed call (e.g. `etcdserver: key not found`).
#[track_caller]
pub fn grpc_message(error: &Error) -> String {
    match error {
        Error::GRpcStatus(status) => status.message().to_owned(),
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

/// The gRPC status code name of a failed call (e.g. `InvalidArgument`).
#[track_caller]
pub fn grpc_code(error: &Error) -> String {
    match error {
        Error::GRpcStatus(status) => format!("{:?}", status.code()),
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

/// Asserts the call failed with exactly this gRPC code and message.
#[track_caller]
pub fn assert_grpc_error<T: Debug>(result: Result<T, Error>, code: &str, message: &str) {
    match result {
        Ok(response) => panic!("expected error {code} `{message}`, got {response:?}"),
        Err(error) => {
            assert_eq!(grpc_message(&error), message, "message of {error:?}");
            assert_eq!(grpc_code(&error), code, "code of {error:?}");
        }
    }
}

/// The header every response must carry.
#[track_caller]
pub fn header_of(header: Option<&ResponseHeader>) -> &ResponseHeader {
    header.expect("response has a header")
}

/// A key-value as plain data, for whole-value comparisons.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Kv {
    pub fn new(
        key: &str,
        value: &str,
        create_revision: i64,
        mod_revision: i64,
        version: i64,
    ) -> Kv {
        Kv {
            key: key.to_owned(),
            value: value.to_owned(),
            create_revision,
            mod_revision,
            version,
            lease: 0,
        }
    }

    /// The same key-value as etcdctl's `-w json` prints it.
    pub fn json(&self) -> String {
        let lease = if self.lease == 0 {
            String::new()
        } else {
            format!(",\"lease\":{}", self.lease)
        };
        let value = if self.value.is_empty() {
            String::new()
        } else {
            format!(",\"value\":\"{}\"", base64(self.value.as_bytes()))
        };
        format!(
            "{{\"key\":\"{}\",\"create_revision\":{},\"mod_revision\":{},\"version\":{}{value}{lease}}}",
            base64(self.key.as_bytes()),
            self.create_revision,
            self.mod_revision,
            self.version
        )
    }
}

impl From<&KeyValue> for Kv {
    fn from(kv: &KeyValue) -> Kv {
        Kv {
            key: String::from_utf8(kv.key().to_vec()).expect("UTF-8 key"),
            value: String::from_utf8(kv.value().to_vec()).expect("UTF-8 value"),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}

pub fn kvs(kvs: &[KeyValue]) -> Vec<Kv> {
    kvs.iter().map(Kv::from).collect()
}

pub fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8(kv.key().to_vec()).expect("UTF-8 key"))
        .collect()
}

/// The identity part of every header, to build the JSON etcdctl prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl Ids {
    pub fn of(header: &ResponseHeader) -> Ids {
        Ids {
            cluster_id: header.cluster_id(),
            member_id: header.member_id(),
            raft_term: header.raft_term(),
        }
    }

    /// `"header":{...}` as etcdctl's `-w json` prints it.
    pub fn header_json(&self, revision: i64) -> String {
        format!(
            "\"header\":{{\"cluster_id\":{},\"member_id\":{},\"revision\":{revision},\"raft_term\":{}}}",
            self.cluster_id, self.member_id, self.raft_term
        )
    }
}
