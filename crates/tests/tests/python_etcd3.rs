//! Python's etcd3 client (PyPI `etcd3` 0.12, on grpcio), one of the clients etcd users run,
//! against the target: `python/etcd3_client.py` makes an application's calls (KV, compare-and-
//! set, transactions, leases, watches, etcd3's locks, member list, status, compaction) and
//! checks each answer; it passes against etcd 3.4 too (`CAIRN_TEST_TARGET=etcd`).
//!
//! The interpreter is the virtualenv `scripts/test` prepares in `<target dir>/python-etcd3`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::{Server, describe, target_dir};

/// `<target dir>/python-etcd3/bin/python`, where `scripts/test` puts it.
fn etcd3_python() -> PathBuf {
    let python = target_dir().join("python-etcd3/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test, which creates it with \
         `python3 -m venv` and `pip install etcd3==0.12.0 protobuf==3.20.3 tenacity==6.3.1`",
        python.display()
    );
    python
}

#[test]
fn python_etcd3_client_gets_etcds_answers() {
    let server = Server::start();
    let endpoint = server.endpoint();
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/etcd3_client.py");
    let output = Command::new(etcd3_python())
        .arg(&script)
        .arg(host)
        .arg(port)
        .output()
        .expect("run python");
    assert!(
        output.status.success() && output.stdout == b"ok\n",
        "{}",
        describe(&output)
    );
}
