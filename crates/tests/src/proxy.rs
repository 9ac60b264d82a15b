//! A TCP proxy in front of one member's peer port, so a test can cut peer links (a network
//! partition) without root, iptables or network namespaces.
//!
//! Each member advertises its proxy's address as its peer URL, so every peer connection *to*
//! that member is dialed through the proxy. `block()` closes the proxy's connections and
//! drops new ones as soon as they are accepted. That alone cuts only what flows over
//! connections dialed *to* the member, and in etcd that is not all traffic to it: etcd's
//! raft streams are dialed by the receiver (member A dials B's peer URL to receive B's
//! messages), while its pipeline POSTs are dialed by the sender; with only B's proxy
//! blocked, A→B still flows over A's streams and B→A over B's pipeline, and B keeps its
//! leadership.
//!
//! So the proxy also tells *which member dialed* each connection: everything is on 127.0.0.1,
//! so the address cannot say, but Linux can — the dialing socket's inode is in
//! `/proc/net/tcp` and the process holding it has that inode among `/proc/<pid>/fd`. The
//! cluster gives each proxy an identifier mapping a connection to a member index, and
//! `block_source(i)` cuts connections dialed by member i. Blocking member i's proxy and
//! blocking source i on every other proxy isolates i in both directions. A connection whose
//! dialer cannot be identified (it closed before the lookup, or it is not a member) is only
//! cut by `block()`; the proxy counts those (`unidentified_connections`) so a test can tell.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Maps an accepted connection (the dialer's address, the proxy's port) to the index of the
/// member that dialed it.
pub type SourceIdentifier = Arc<dyn Fn(SocketAddr, u16) -> Option<usize> + Send + Sync>;

/// How long the proxy waits to connect to its target; a member that is down refuses at once.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PUMP_BUFFER_BYTES: usize = 64 * 1024;

/// A TCP proxy listening on 127.0.0.1 (a port of its own) and forwarding to 127.0.0.1:target.
pub struct PartitionProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    identify: Option<SourceIdentifier>,
    state: Mutex<State>,
    unidentified: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Every connection is refused (closed as soon as it is accepted).
    blocked: bool,
    /// Connections dialed by these members are refused.
    blocked_sources: BTreeSet<usize>,
    /// Each chunk forwarded is held back this long.
    delay: Duration,
    connections: HashMap<u64, Connection>,
    next_connection_id: u64,
    stopping: bool,
}

struct Connection {
    /// The member that dialed it, if known.
    source: Option<usize>,
    inbound: TcpStream,
    outbound: TcpStream,
    /// Forwarding threads still running (one per direction); the entry goes when both end.
    pumps_running: u8,
}

impl Connection {
    fn close(&self) {
        let _ = self.inbound.shutdown(Shutdown::Both);
        let _ = self.outbound.shutdown(Shutdown::Both);
    }
}

impl State {
    fn refuses(&self, source: Option<usize>) -> bool {
        self.stopping || self.blocked || source.is_some_and(|s| self.blocked_sources.contains(&s))
    }

    fn close_where(&mut self, refused: impl Fn(&Connection) -> bool) {
        for connection in self.connections.values().filter(|c| refused(c)) {
            connection.close();
        }
    }
}

impl PartitionProxy {
    /// Starts forwarding from a fresh port to `127.0.0.1:target_port`. Without an identifier,
    /// `block_source` has no effect.
    pub fn start(target_port: u16, identify: Option<SourceIdentifier>) -> PartitionProxy {
        // The OS picks the port: the proxy binds it now and holds it for its whole life, so
        // nothing else can take it in between.
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy's listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, target_port)),
            identify,
            state: Mutex::new(State::default()),
            unidentified: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, port, shared))
                .expect("spawn the proxy's accept thread")
        };
        PartitionProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the URL to advertise instead of the target's.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones until `unblock()`.
    pub fn block(&self) {
        let mut state = self.shared.lock();
        state.blocked = true;
        state.close_where(|_| true);
    }

    /// Forwards new connections again (dialers reconnect by themselves).
    pub fn unblock(&self) {
        self.shared.lock().blocked = false;
    }

    /// Closes the connections member `source` dialed and refuses its new ones.
    pub fn block_source(&self, source: usize) {
        let mut state = self.shared.lock();
        state.blocked_sources.insert(source);
        state.close_where(|c| c.source == Some(source));
    }

    pub fn unblock_source(&self, source: usize) {
        self.shared.lock().blocked_sources.remove(&source);
    }

    /// Holds back every chunk forwarded (both directions) by `delay`; zero turns it off.
    /// A chunk waits before it is written, so a busy link is also slowed down.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Connections accepted whose dialing member could not be identified.
    pub fn unidentified_connections(&self) -> u64 {
        self.shared.unidentified.load(Ordering::Relaxed)
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.close_where(|_| true);
        }
        // Wake the accept thread so it sees `stopping`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept_loop(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    for inbound in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(inbound) = inbound else { continue };
        let source = match (&shared.identify, inbound.peer_addr()) {
            (Some(identify), Ok(peer)) => {
                let source = identify(peer, port);
                if source.is_none() {
                    shared.unidentified.fetch_add(1, Ordering::Relaxed);
                }
                source
            }
            _ => None,
        };
        if shared.lock().refuses(source) {
            continue;
        }
        // A target that is down refuses: the dialer sees its connection closed at once.
        let Ok(outbound) = TcpStream::connect_timeout(&shared.target, TARGET_CONNECT_TIMEOUT)
        else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (Ok(inbound_reader), Ok(outbound_reader)) = (inbound.try_clone(), outbound.try_clone())
        else {
            continue;
        };
        let (Ok(inbound_writer), Ok(outbound_writer)) = (inbound.try_clone(), outbound.try_clone())
        else {
            continue;
        };
        let id = {
            let mut state = shared.lock();
            // A block may have come while the target was dialed.
            if state.refuses(source) {
                continue;
            }
            let id = state.next_connection_id;
            state.next_connection_id += 1;
            state.connections.insert(
                id,
                Connection {
                    source,
                    inbound,
                    outbound,
                    pumps_running: 2,
                },
            );
            id
        };
        for (reader, writer) in [
            (inbound_reader, outbound_writer),
            (outbound_reader, inbound_writer),
        ] {
            let pump_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("proxy-{port}-{id}"))
                .spawn(move || pump(reader, writer, id, &pump_shared));
            if spawned.is_err() {
                // Out of threads: this connection cannot be served.
                if let Some(connection) = shared.lock().connections.remove(&id) {
                    connection.close();
                }
            }
        }
    }
}

/// Copies one direction of a connection until either side closes, then passes the close on:
/// end of stream becomes a half close of the other side, an error closes both.
fn pump(mut reader: TcpStream, mut writer: TcpStream, id: u64, shared: &Shared) {
    let mut buffer = vec![0u8; PUMP_BUFFER_BYTES];
    let clean_end = loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break true,
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break false,
        };
        let delay = shared.lock().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if writer.write_all(&buffer[..read]).is_err() {
            break false;
        }
    };
    if clean_end {
        let _ = writer.shutdown(Shutdown::Write);
    } else {
        let _ = reader.shutdown(Shutdown::Both);
        let _ = writer.shutdown(Shutdown::Both);
    }
    let mut state = shared.lock();
    if let Some(connection) = state.connections.get_mut(&id) {
        connection.pumps_running -= 1;
        if connection.pumps_running == 0 {
            state.connections.remove(&id);
        }
    }
}

/// The index of the process in `candidates` (index, pid) that holds the client side of a
/// loopback TCP connection from `dialer` to local port `accepted_on`, found through
/// `/proc/net/tcp` and `/proc/<pid>/fd` (Linux only; None elsewhere or when not found).
pub fn dialing_process(
    dialer: SocketAddr,
    accepted_on: u16,
    candidates: &[(usize, u32)],
) -> Option<usize> {
    let inode = dialing_socket_inode(dialer.port(), accepted_on)?;
    let wanted = format!("socket:[{inode}]");
    candidates.iter().find_map(|&(index, pid)| {
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.flatten()
            .any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_str() == Some(wanted.as_str()))
            })
            .then_some(index)
    })
}

/// The inode of the socket whose local port is `local_port` and remote port `remote_port`.
fn dialing_socket_inode(local_port: u16, remote_port: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            let port_of = |address: &str| {
                address
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            if port_of(fields[1]) == Some(local_port)
                && port_of(fields[2]) == Some(remote_port)
                && let Ok(inode) = fields[9].parse::<u64>()
                && inode != 0
            {
                return Some(inode);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a fresh port; returns its port.
    fn echo_server() -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo server");
        let port = listener.local_addr().expect("echo address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().expect("clone");
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        port
    }

    fn connect(port: u16) -> TcpStream {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set timeout");
        stream
    }

    /// Sends `message` and reads the echo back; false when the connection is closed.
    fn echoes(stream: &mut TcpStream, message: &[u8]) -> bool {
        if stream.write_all(message).is_err() {
            return false;
        }
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).is_ok() && back == message
    }

    #[test]
    fn forwards_both_ways_until_blocked_and_again_after_unblock() {
        let proxy = PartitionProxy::start(echo_server(), None);
        let mut stream = connect(proxy.port());
        assert!(echoes(&mut stream, b"hello"));

        proxy.block();
        assert!(
            !echoes(&mut stream, b"cut"),
            "an open connection is closed by block()"
        );
        let mut refused = connect(proxy.port());
        assert!(!echoes(&mut refused, b"new"), "new connections are dropped");

        proxy.unblock();
        let mut again = connect(proxy.port());
        assert!(echoes(&mut again, b"back"));
    }

    #[test]
    fn block_source_cuts_only_connections_of_that_source() {
        let this_process = std::process::id();
        // Every connection made by this test process is "member 7".
        let identify: SourceIdentifier = Arc::new(move |dialer, accepted_on| {
            dialing_process(dialer, accepted_on, &[(7, this_process)])
        });
        let proxy = PartitionProxy::start(echo_server(), Some(identify));
        let mut stream = connect(proxy.port());
        assert!(echoes(&mut stream, b"hello"));
        assert_eq!(proxy.unidentified_connections(), 0, "the dialer was found");

        proxy.block_source(3);
        assert!(echoes(&mut stream, b"other sources are untouched"));

        proxy.block_source(7);
        assert!(!echoes(&mut stream, b"cut"));
        assert!(!echoes(&mut connect(proxy.port()), b"refused"));

        proxy.unblock_source(7);
        assert!(echoes(&mut connect(proxy.port()), b"back"));
    }

    #[test]
    fn delay_holds_back_each_chunk() {
        let proxy = PartitionProxy::start(echo_server(), None);
        let mut stream = connect(proxy.port());
        proxy.set_delay(Duration::from_millis(100));
        let started = Instant::now();
        assert!(echoes(&mut stream, b"slow"));
        // Delayed once on the way there and once on the way back.
        assert!(started.elapsed() >= Duration::from_millis(200));
        proxy.set_delay(Duration::ZERO);
        assert!(echoes(&mut stream, b"fast"));
    }
}
