//! The gRPC side: a tonic channel to the first endpoint whose server answers, unary calls
//! bounded by `--command-timeout`, and etcdctl's (clientv3's) way of reporting a failed
//! call: zap's warn line from the retry interceptor, then `Error: <message>`.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::{Fail, exit, flags, gofmt};

/// `host:port` of an endpoint given as `host:port` or `http://host:port`.
pub fn host_port(ep: &str) -> &str {
    ep.strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .unwrap_or(ep)
        .trim_end_matches('/')
}

/// The address Go's dialer reports: the host resolved, IPv4 first.
fn dial_address(hp: &str) -> String {
    use std::net::ToSocketAddrs;
    match hp.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .map(|a| a.to_string())
                .unwrap_or_else(|| hp.to_string())
        }
        Err(_) => hp.to_string(),
    }
}

/// HTTP/2's client connection preface followed by an empty SETTINGS frame.
const HTTP2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// The type of an HTTP/2 SETTINGS frame, the first frame every server sends.
const HTTP2_FRAME_SETTINGS: u8 = 0x4;
/// How long a probe waits for the server to close its side after the handshake.
const PROBE_CLOSE_WAIT: Duration = Duration::from_millis(50);

/// How a server took an HTTP/2 handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Probe {
    /// Its SETTINGS frame came in: the connection can be used (grpc-go's READY).
    Answered(String),
    /// The connection was refused or broken (grpc-go's TRANSIENT_FAILURE).
    Failed,
    /// Nothing came back in time: a member that is paused (SIGSTOP) or hung, whose kernel
    /// still accepts connections (grpc-go keeps CONNECTING).
    NoAnswer,
}

/// How the server at `hp` takes an HTTP/2 handshake within `timeout`. grpc-go (and so
/// etcdctl) uses a connection only once the server's SETTINGS frame came in.
async fn probe(hp: String, timeout: Duration) -> Probe {
    let handshake = async {
        let mut stream = TcpStream::connect(&hp).await?;
        stream.write_all(HTTP2_PREFACE_AND_SETTINGS).await?;
        let mut frame_header = [0u8; 9];
        stream.read_exact(&mut frame_header).await?;
        Ok::<_, std::io::Error>((stream, frame_header[3] == HTTP2_FRAME_SETTINGS))
    };
    let (mut stream, answered) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(handshake)) => handshake,
        Ok(Err(_)) => return Probe::Failed,
        Err(_elapsed) => return Probe::NoAnswer,
    };
    // End the connection cleanly, reading what the server still sends, so that it sees an
    // end of stream rather than a reset.
    let close = async {
        stream.shutdown().await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await
    };
    let _ = tokio::time::timeout(PROBE_CLOSE_WAIT, close).await;
    if answered {
        Probe::Answered(hp)
    } else {
        Probe::Failed
    }
}

/// A random UUID, as clientv3 names its resolver group.
fn uuid() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = (nanos ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// zap's ISO 8601 time with milliseconds, UTC.
fn zap_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (date, time) = flags::civil(now.as_secs());
    format!("{date}T{time}.{:03}Z", now.subsec_millis())
}

/// Go's name of a gRPC status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// What etcdctl prints after `Error: ` for a failed call: etcd's own errors (all
/// `etcdserver: ...`) by their message, anything else as grpc-go formats a status.
pub fn error_text(status: &tonic::Status) -> String {
    if status.message().starts_with("etcdserver: ") {
        status.message().to_string()
    } else {
        format!(
            "rpc error: code = {} desc = {}",
            code_name(status.code()),
            status.message()
        )
    }
}

/// A client of one endpoint list, connected on first use.
pub struct Client {
    endpoints: Vec<String>,
    dial_timeout: Duration,
    channel: Option<Channel>,
    target: String,
    /// Every endpoint failed in the last round of connection attempts: grpc-go's balancer
    /// is then in TRANSIENT_FAILURE and says so when a call times out.
    all_endpoints_failed: bool,
}

impl Client {
    /// A clientv3-style client over `endpoints` (its calls log the target
    /// `endpoint://client-<uuid>/<first endpoint>`).
    pub fn new(endpoints: Vec<String>, dial_timeout: Duration) -> Client {
        let first = endpoints.first().map(|e| host_port(e)).unwrap_or("");
        let target = format!("endpoint://client-{}/{first}", uuid());
        Client {
            endpoints,
            dial_timeout,
            channel: None,
            target,
            all_endpoints_failed: false,
        }
    }

    /// A client of the single endpoint `ep` as `Maintenance.Status` dials it.
    pub fn passthrough(ep: &str, dial_timeout: Duration) -> Client {
        Client {
            endpoints: vec![ep.to_string()],
            dial_timeout,
            channel: None,
            target: format!("passthrough:///{ep}"),
            all_endpoints_failed: false,
        }
    }

    /// The channel to the first endpoint whose server answers an HTTP/2 handshake. Like
    /// clientv3's balancer, which connects to every endpoint and uses whichever is ready,
    /// it tries all at once (a paused first endpoint costs nothing), and again, until the
    /// caller's deadline, while none answers.
    pub async fn channel(&mut self) -> Channel {
        if let Some(ch) = &self.channel {
            return ch.clone();
        }
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for ep in &self.endpoints {
                let (hp, tx) = (host_port(ep).to_string(), tx.clone());
                let timeout = self.dial_timeout;
                // Probes still running when one has answered finish in the background.
                tokio::spawn(async move {
                    let _ = tx.send(probe(hp, timeout).await);
                });
            }
            drop(tx);
            let mut failed = 0;
            while let Some(probed) = rx.recv().await {
                let hp = match probed {
                    Probe::Answered(hp) => hp,
                    Probe::Failed => {
                        failed += 1;
                        continue;
                    }
                    Probe::NoAnswer => continue,
                };
                if let Ok(endpoint) = Endpoint::from_shared(format!("http://{hp}"))
                    && let Ok(ch) = endpoint
                        .connect_timeout(self.dial_timeout)
                        .tcp_nodelay(true)
                        .connect()
                        .await
                {
                    self.channel = Some(ch.clone());
                    return ch;
                }
                failed += 1;
            }
            self.all_endpoints_failed = failed == self.endpoints.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn warn(&self, code: &str, desc: &str) {
        crate::commands::stderr(format!(
            "{{\"level\":\"warn\",\"ts\":\"{}\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":0,\"error\":{}}}\n",
            zap_now(),
            gofmt::zap_string(&self.target),
            gofmt::zap_string(&format!("rpc error: code = {code} desc = {desc}"))
        ).as_bytes());
    }

    /// One unary call, bounded by `timeout` (none for `txn`, as in etcdctl). A failure is
    /// logged like clientv3 and returned as etcdctl's `Error:` text with exit status 1.
    pub async fn unary<T, F, Fut>(&mut self, timeout: Option<Duration>, call: F) -> Result<T, Fail>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let work = async {
            let ch = self.channel().await;
            call(ch).await
        };
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, work).await,
            None => Ok(work.await),
        };
        match result {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => {
                self.warn(code_name(status.code()), status.message());
                Err(Fail::new(exit::ERROR, error_text(&status)))
            }
            Err(_elapsed) => {
                let desc = if self.channel.is_some() || !self.all_endpoints_failed {
                    "context deadline exceeded".to_string()
                } else if self.target.starts_with("passthrough") {
                    let hp = dial_address(host_port(&self.endpoints[0]));
                    format!(
                        "latest balancer error: connection error: desc = \"transport: Error while dialing dial tcp {hp}: connect: connection refused\""
                    )
                } else {
                    "latest balancer error: all SubConns are in TransientFailure".to_string()
                };
                self.warn("DeadlineExceeded", &desc);
                Err(Fail::new(exit::ERROR, "context deadline exceeded"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(host_port("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(host_port("127.0.0.1:2379"), "127.0.0.1:2379");
        let st =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(
            error_text(&st),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let st = tonic::Status::unavailable("boom");
        assert_eq!(error_text(&st), "rpc error: code = Unavailable desc = boom");
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(zap_now().len(), "2026-11-21T02:13:04.132Z".len());
    }
}
