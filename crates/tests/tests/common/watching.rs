//! Helpers for the Watch and Lease tests: a client for long-lived streams, bounded waits on
//! watch streams, and watch events as plain data for whole-value comparisons.
//! (Included with `#[path = "common/watching.rs"] mod watching;` next to `mod common;`.)
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use cairn_tests::Server;
use etcd_client::{Client, ConnectOptions, EventType, WatchResponse, WatchStream};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::common::Kv;

/// The longest any single step (a response, a line of output) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// A client for watch and keep-alive streams: a bounded connect but no per-request timeout
/// (which would cut long-lived streams). Every wait on it is bounded by the caller instead.
pub async fn connect_streaming(server: &Server) -> Client {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Client::connect([server.url()], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()))
}

/// The next response on a watch stream, within [`STEP`]; panics if the stream ends or fails.
pub async fn next_response(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(STEP, stream.message()).await {
        Err(_) => panic!("no watch response within {STEP:?}"),
        Ok(Err(e)) => panic!("watch stream failed: {e:?}"),
        Ok(Ok(None)) => panic!("watch stream ended"),
        Ok(Ok(Some(response))) => response,
    }
}

/// Whether the response is a non-final fragment of a split revision. etcd-client 0.17 has no
/// accessor for the `fragment` field (only behind its `pub-response-field` feature, which
/// needs a crate we do not have), so this reads the field from the message's `Debug` form.
pub fn is_fragment(response: &WatchResponse) -> bool {
    let debug = format!("{response:?}");
    if debug.contains("fragment: true") {
        true
    } else {
        assert!(
            debug.contains("fragment: false"),
            "Debug form of a WatchResponse no longer shows `fragment`: {debug}"
        );
        false
    }
}

/// The revision of a response's header.
#[track_caller]
pub fn header_revision(response: &WatchResponse) -> i64 {
    response
        .header()
        .expect("watch response has a header")
        .revision()
}

/// A watch event as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    pub put: bool,
    pub kv: Kv,
    pub prev: Option<Kv>,
}

impl Ev {
    /// A PUT event with this key-value (lease 0) and no prev_kv.
    pub fn put(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Ev {
        Ev {
            put: true,
            kv: Kv::new(key, value, create, modified, version),
            prev: None,
        }
    }

    /// A DELETE event: etcd's delete events carry only the key and the deleting revision.
    pub fn delete(key: &str, revision: i64) -> Ev {
        Ev {
            put: false,
            kv: Kv::new(key, "", 0, revision, 0),
            prev: None,
        }
    }

    pub fn with_prev(mut self, prev: Kv) -> Ev {
        self.prev = Some(prev);
        self
    }

    pub fn with_lease(mut self, lease: i64) -> Ev {
        self.kv.lease = lease;
        self
    }

    pub fn key(&self) -> &str {
        &self.kv.key
    }

    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The events of a response as plain data.
pub fn events(response: &WatchResponse) -> Vec<Ev> {
    response
        .events()
        .iter()
        .map(|event| Ev {
            put: event.event_type() == EventType::Put,
            kv: Kv::from(event.kv().expect("an event has a kv")),
            prev: event.prev_kv().map(Kv::from),
        })
        .collect()
}

/// Reads responses until `count` events have arrived for `watch_id` (panicking on responses
/// for other watchers, on cancellation, and on timeouts); returns them grouped by response.
pub async fn collect(stream: &mut WatchStream, watch_id: i64, count: usize) -> Vec<Vec<Ev>> {
    let mut groups = Vec::new();
    let mut seen = 0;
    while seen < count {
        let response = next_response(stream).await;
        assert_eq!(
            response.watch_id(),
            watch_id,
            "response for another watcher: {response:?}"
        );
        assert!(
            !response.canceled() && !response.created(),
            "unexpected {response:?}"
        );
        let group = events(&response);
        assert!(!group.is_empty(), "an event-free response: {response:?}");
        seen += group.len();
        groups.push(group);
    }
    assert_eq!(seen, count, "more events than expected: {groups:#?}");
    groups
}

/// A running etcdctl (e.g. `watch`, `lease keep-alive`) whose standard output is read line by
/// line.
pub struct CtlProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far, each with its `\n`.
    pub output: String,
}

impl CtlProcess {
    /// Starts the real etcdctl (API v3) with `--endpoints=<endpoint>` and `args`.
    pub fn spawn(endpoint: &str, args: &[&str]) -> CtlProcess {
        let usr_bin = std::path::Path::new("/usr/bin/etcdctl");
        let program = if usr_bin.exists() {
            usr_bin
        } else {
            std::path::Path::new("etcdctl")
        };
        let mut child = tokio::process::Command::new(program)
            .env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout pipe");
        CtlProcess {
            child,
            lines: BufReader::new(stdout).lines(),
            output: String::new(),
        }
    }

    /// Reads lines until one equal to `last` has been read (bounded by [`STEP`] per line) and
    /// returns everything read so far.
    pub async fn read_through(&mut self, last: &str) -> &str {
        loop {
            let line = match tokio::time::timeout(STEP, self.lines.next_line()).await {
                Err(_) => panic!(
                    "etcdctl printed no line within {STEP:?} (waiting for {last:?}); so far:\n{}",
                    self.output
                ),
                Ok(Err(e)) => panic!("read etcdctl's stdout: {e}"),
                Ok(Ok(None)) => panic!(
                    "etcdctl exited before printing {last:?}; so far:\n{}",
                    self.output
                ),
                Ok(Ok(Some(line))) => line,
            };
            self.output.push_str(&line);
            self.output.push('\n');
            if line == last {
                return &self.output;
            }
        }
    }

    /// Reads to the end of the output (bounded by [`STEP`]): etcdctl exited on its own.
    /// Returns the output and the exit status.
    pub async fn read_to_end(&mut self) -> (&str, std::process::ExitStatus) {
        loop {
            match tokio::time::timeout(STEP, self.lines.next_line()).await {
                Err(_) => panic!(
                    "etcdctl did not exit within {STEP:?}; so far:\n{}",
                    self.output
                ),
                Ok(Err(e)) => panic!("read etcdctl's stdout: {e}"),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(line))) => {
                    self.output.push_str(&line);
                    self.output.push('\n');
                }
            }
        }
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("etcdctl exits after closing its output")
            .expect("wait for etcdctl");
        (&self.output, status)
    }

    /// Kills etcdctl and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
