//! etcd's plain-HTTP endpoints, which Kubernetes probes and Prometheus scrape: `/health`,
//! `/version` and `/metrics` on the client URL and on `--listen-metrics-urls`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cairn_tests::{Server, etcdctl, ok_stdout};

/// GET over HTTP/1.0; returns the status code and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

#[test]
fn health_version_and_metrics_answer_on_the_client_and_metrics_urls() {
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let metrics_url = format!("http://{metrics_address}");
    let server = Server::start_with_args(&["--listen-metrics-urls", &metrics_url]);
    for (key, value) in [("a", "1"), ("b", "2")] {
        assert_eq!(
            ok_stdout(&etcdctl(&server.endpoint(), &["put", key, value])),
            "OK\n"
        );
    }

    for address in [server.endpoint(), metrics_address.clone()] {
        assert_eq!(
            get(&address, "/health"),
            (200, r#"{"health":"true"}"#.to_string())
        );
        assert_eq!(
            get(&address, "/health?serializable=true"),
            (200, r#"{"health":"true"}"#.to_string())
        );
    }
    let (status, version) = get(&server.endpoint(), "/version");
    assert_eq!(status, 200);
    assert!(
        version.starts_with(r#"{"etcdserver":"3."#) && version.contains(r#","etcdcluster":"3."#),
        "{version}"
    );
    assert_eq!(
        get(&metrics_address, "/version").0,
        404,
        "the metrics URL serves no /version"
    );

    let (status, metrics) = get(&metrics_address, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "etcd_server_has_leader"), 1.0);
    assert_eq!(metric(&metrics, "etcd_server_is_leader"), 1.0);
    assert_eq!(metric(&metrics, "etcd_debugging_mvcc_keys_total"), 2.0);
    assert_eq!(
        metric(&metrics, "etcd_debugging_mvcc_current_revision"),
        3.0
    );
    assert!(metric(&metrics, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(metric(&metrics, "process_resident_memory_bytes") > 0.0);
    assert!(
        metrics.contains("# TYPE etcd_server_has_leader gauge"),
        "{metrics}"
    );
}
