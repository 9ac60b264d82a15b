//! A cluster of real member processes on 127.0.0.1 (etcd or cairn, started with etcd's flags),
//! with the faults the cluster tests need: `kill -9` and restart, SIGSTOP and SIGCONT, a
//! network partition of one member, and membership changes through the real `etcdctl`.
//!
//! Each member's peer URL is the address of a [`PartitionProxy`] owned by the harness, which
//! forwards to the member's real peer listener, so all peer traffic passes through proxies.
//! `isolate(i)` cuts member i off in both directions (see the proxy's header for how a proxy
//! tells which member dialed); client traffic never goes through a proxy, so clients can still
//! reach an isolated member, as clients on the minority side of a real partition can.
//!
//! The cluster kills every process (SIGKILL) when dropped, prints each member's log tail when
//! a test fails, and keeps its temporary directory when `CAIRN_TEST_KEEP=1`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::proxy::{PartitionProxy, SourceIdentifier, dialing_process};
use crate::{
    READY_TIMEOUT, START_ATTEMPTS_MAX, StartError, Target, describe, etcdctl, keep_temp_dirs,
    pick_ports, print_log_tail, read_log, read_log_from, spawn_logged,
};

/// How long a membership change refused as premature is retried: etcd refuses changes until
/// every voter has been connected for 5 s (`etcdserver: unhealthy cluster`), and removals that
/// would leave too few connected voters.
const MEMBERSHIP_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Refusals of a membership change that mean "not yet": nothing was proposed.
const MEMBERSHIP_NOT_YET: [&str; 2] = [
    "etcdserver: unhealthy cluster",
    "etcdserver: re-configuration failed due to not enough started members",
];
/// Bound on each `/health` request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub target: Target,
    pub members: usize,
    /// `--heartbeat-interval`, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout`, in milliseconds.
    pub election_timeout_ms: u64,
    /// Flags added to every member's command line (e.g. `--snapshot-count 100`).
    pub extra_args: Vec<String>,
    /// `--initial-cluster-token` of some members (by index) instead of the cluster's own. Such
    /// a member derives another cluster ID, so it never joins: `start` does not wait for it to
    /// become healthy, and the harness never asks it about the cluster (etcdctl, the leader,
    /// convergence).
    pub token_overrides: BTreeMap<usize, String>,
}

impl Default for ClusterOptions {
    /// Three members of the target from `CAIRN_TEST_TARGET`, etcd's default timing.
    fn default() -> Self {
        ClusterOptions {
            target: Target::from_env(),
            members: 3,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            extra_args: Vec::new(),
            token_overrides: BTreeMap::new(),
        }
    }
}

/// Where a member's process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Added to the cluster (`member add`) but never started.
    NotStarted,
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed with SIGKILL; `restart` brings it back on the same data dir.
    Stopped,
    /// Removed from the cluster; its process is gone.
    Removed,
}

/// One member: its ports, proxy, data dir, log and process.
pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    proxy: PartitionProxy,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `--initial-cluster` and `--initial-cluster-state` it was (or will be) started with.
    initial_cluster: String,
    initial_cluster_state: &'static str,
    child: Option<Child>,
    state: MemberState,
    learner: bool,
    /// The member ID, once known (from `member list` or `member add`).
    id: Option<u64>,
}

impl Member {
    /// `m0`, `m1`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client endpoint, `127.0.0.1:PORT` (etcdctl's `--endpoints` form).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The peer URL the member advertises: its proxy's.
    pub fn peer_url(&self) -> String {
        self.proxy.url()
    }

    /// The peer URL the member listens on (behind its proxy).
    pub fn listen_peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the member's stdout and stderr go (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn state(&self) -> MemberState {
        self.state
    }

    pub fn is_learner(&self) -> bool {
        self.learner
    }

    /// The member ID, once known.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Connections its proxy could not attribute to a member (see the proxy's header).
    pub fn unidentified_peer_connections(&self) -> u64 {
        self.proxy.unidentified_connections()
    }
}

/// One member's answer to `Maintenance.Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub cluster_id: u64,
    pub member_id: u64,
    /// 0 when the member knows no leader.
    pub leader_id: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub is_learner: bool,
}

/// What every member agreed on in [`Cluster::wait_converged`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converged {
    pub revision: i64,
    pub keys: usize,
}

/// A running cluster; see the module header.
pub struct Cluster {
    options: ClusterOptions,
    binary: PathBuf,
    token: String,
    members: Vec<Member>,
    /// Each member's pid while it runs, for the proxies to tell who dialed.
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    started: Instant,
    temp_dir: Option<tempfile::TempDir>,
}

static CLUSTER_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// Starts `options.members` members concurrently (they wait for each other) and waits
    /// until each reports `/health` true.
    pub fn start(options: ClusterOptions) -> Cluster {
        assert!(options.members > 0, "a cluster has members");
        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS_MAX {
            let mut cluster = Cluster::prepare(options.clone());
            match cluster.start_all() {
                Ok(()) => {
                    cluster.learn_member_ids();
                    cluster.event(format!(
                        "started {} members of {:?}: {}",
                        cluster.members.len(),
                        cluster.options.target,
                        cluster.endpoints_joined()
                    ));
                    return cluster;
                }
                // Dropping the cluster kills what did start; the next attempt takes new ports.
                Err(StartError::PortTaken(log)) => last_failure = log,
                Err(StartError::Failed(message)) => panic!("{message}"),
            }
        }
        panic!(
            "the cluster could not start: ports kept being taken ({START_ATTEMPTS_MAX} \
             attempts); last failure:\n{last_failure}"
        );
    }

    /// Picks ports, starts the proxies and lays out directories; starts no process.
    fn prepare(options: ClusterOptions) -> Cluster {
        let binary = options.target.binary();
        let temp_dir = tempfile::Builder::new()
            .prefix("cairn-cluster-")
            .tempdir()
            .expect("create a temporary directory");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!(
            "cairn-test-{}-{}-{nanos}",
            std::process::id(),
            CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = Cluster {
            options,
            binary,
            token,
            members: Vec::new(),
            pids: Arc::new(Mutex::new(Vec::new())),
            started: Instant::now(),
            temp_dir: Some(temp_dir),
        };
        for _ in 0..cluster.options.members {
            let member = cluster.new_member(String::new(), "new");
            cluster.members.push(member);
        }
        let initial_cluster = cluster
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut cluster.members {
            member.initial_cluster = initial_cluster.clone();
        }
        cluster
    }

    /// A member with fresh ports and a proxy, named after its index; not started.
    fn new_member(&mut self, initial_cluster: String, state: &'static str) -> Member {
        let index = self.members.len();
        let ports = pick_ports(2);
        let (client_port, peer_port) = (ports[0], ports[1]);
        self.lock_pids().push(None);
        let pids = Arc::clone(&self.pids);
        let identify: SourceIdentifier = Arc::new(move |dialer: SocketAddr, accepted_on: u16| {
            let candidates: Vec<(usize, u32)> = pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .enumerate()
                .filter_map(|(i, pid)| pid.map(|pid| (i, pid)))
                .collect();
            dialing_process(dialer, accepted_on, &candidates)
        });
        let name = format!("m{index}");
        let dir = self.temp_dir.as_ref().expect("temp dir").path();
        Member {
            data_dir: dir.join(&name),
            log_path: dir.join(format!("{name}.log")),
            name,
            client_port,
            peer_port,
            proxy: PartitionProxy::start(peer_port, Some(identify)),
            initial_cluster,
            initial_cluster_state: state,
            child: None,
            state: MemberState::NotStarted,
            learner: false,
            id: None,
        }
    }

    fn lock_pids(&self) -> std::sync::MutexGuard<'_, Vec<Option<u32>>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_all(&mut self) -> Result<(), StartError> {
        let mut indices = Vec::new();
        let mut log_starts = Vec::new();
        for index in 0..self.members.len() {
            let log_start = self.spawn(index);
            if self.in_cluster(index) {
                indices.push(index);
                log_starts.push(log_start);
            }
        }
        self.wait_ready(&indices, &log_starts)
    }

    /// Whether member `index` has the cluster's token (see `ClusterOptions::token_overrides`).
    fn in_cluster(&self, index: usize) -> bool {
        !self.options.token_overrides.contains_key(&index)
    }

    /// The flags both etcd and cairn are started with.
    fn args(&self, index: usize) -> Vec<String> {
        let member = &self.members[index];
        let mut args: Vec<String> = [
            "--name",
            &member.name,
            "--data-dir",
            &member.data_dir.display().to_string(),
            "--listen-client-urls",
            &member.url(),
            "--advertise-client-urls",
            &member.url(),
            "--listen-peer-urls",
            &member.listen_peer_url(),
            "--initial-advertise-peer-urls",
            &member.peer_url(),
            "--initial-cluster",
            &member.initial_cluster,
            "--initial-cluster-token",
            self.options
                .token_overrides
                .get(&index)
                .unwrap_or(&self.token),
            "--initial-cluster-state",
            member.initial_cluster_state,
            "--heartbeat-interval",
            &self.options.heartbeat_interval_ms.to_string(),
            "--election-timeout",
            &self.options.election_timeout_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    /// Spawns member `index`; returns where its output starts in its log.
    fn spawn(&mut self, index: usize) -> u64 {
        let args = self.args(index);
        let member = &mut self.members[index];
        assert!(member.child.is_none(), "{} is already running", member.name);
        let (child, log_start) = spawn_logged(&self.binary, &args, &member.log_path);
        self.pids.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(child.id());
        member.child = Some(child);
        member.state = MemberState::Running;
        log_start
    }

    /// Waits until every member in `indices` reports `/health` true.
    fn wait_ready(&mut self, indices: &[usize], log_starts: &[u64]) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = vec![false; indices.len()];
        loop {
            for (k, &index) in indices.iter().enumerate() {
                if ready[k] {
                    continue;
                }
                let member = &mut self.members[index];
                let child = member.child.as_mut().expect("member was spawned");
                if let Some(status) = child.try_wait().expect("poll a member process") {
                    member.child = None;
                    member.state = MemberState::Stopped;
                    let log = read_log_from(&member.log_path, log_starts[k]);
                    let message = format!(
                        "{:?} member {} exited before becoming ready ({status}); its output:\n{log}",
                        self.options.target, member.name
                    );
                    return Err(if log.to_lowercase().contains("address already in use") {
                        StartError::PortTaken(message)
                    } else {
                        StartError::Failed(message)
                    });
                }
                ready[k] = self.is_healthy(index);
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut message = format!(
                    "{:?} cluster not ready within {READY_TIMEOUT:?}:",
                    self.options.target
                );
                for (k, &index) in indices.iter().enumerate() {
                    let member = &self.members[index];
                    message.push_str(&format!(
                        "\n--- {} (ready: {}) output ---\n{}",
                        member.name,
                        ready[k],
                        read_log_from(&member.log_path, log_starts[k])
                    ));
                }
                return Err(StartError::Failed(message));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `/health` on the member's client URL says `{"health":"true"}`.
    pub fn is_healthy(&self, index: usize) -> bool {
        http_get(self.members[index].client_port, "/health", HEALTH_TIMEOUT)
            .is_some_and(|response| response.contains(r#""health":"true""#))
    }

    /// Fills in each member's ID from `member list`, by name.
    fn learn_member_ids(&mut self) {
        let list = self.member_list_json();
        for entry in list["members"].as_array().expect("members array") {
            let id = entry["ID"].as_u64().expect("member ID");
            let name = entry["name"].as_str().unwrap_or_default();
            if let Some(member) = self.members.iter_mut().find(|m| m.name == name) {
                member.id = Some(id);
            }
        }
        for member in &self.members {
            assert!(
                member.id.is_some(),
                "{} missing from member list",
                member.name
            );
        }
    }

    fn member_list_json(&self) -> Value {
        let output = self.etcdctl(&["member", "list", "-w", "json"]);
        assert!(
            output.status.success(),
            "member list failed:\n{}",
            describe(&output)
        );
        serde_json::from_slice(&output.stdout).expect("member list JSON")
    }

    fn event(&self, what: String) {
        eprintln!(
            "cairn-tests cluster [{:>8.3}s]: {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    pub fn target(&self) -> Target {
        self.options.target
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// How many members were ever created (indices are never reused).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// Indices of the members whose process runs (not paused, stopped or removed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].state == MemberState::Running)
            .collect()
    }

    /// Client URLs of every member that was started and not removed.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !matches!(m.state, MemberState::NotStarted | MemberState::Removed))
            .map(Member::url)
            .collect()
    }

    /// The same, comma-joined (etcdctl's `--endpoints`).
    pub fn endpoints_joined(&self) -> String {
        self.endpoints().join(",")
    }

    /// Runs etcdctl against every running voter.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let endpoints: Vec<String> = self
            .running()
            .into_iter()
            .filter(|&i| !self.members[i].learner && self.in_cluster(i))
            .map(|i| self.members[i].endpoint())
            .collect();
        etcdctl(&endpoints.join(","), args)
    }

    /// `Maintenance.Status` of every running member (through `etcdctl endpoint status`);
    /// members that do not answer within a second are left out.
    pub fn statuses(&self) -> BTreeMap<usize, MemberStatus> {
        let running = self.running();
        if running.is_empty() {
            return BTreeMap::new();
        }
        let endpoints: Vec<String> = running
            .iter()
            .map(|&i| self.members[i].endpoint())
            .collect();
        let output = etcdctl(
            &endpoints.join(","),
            &[
                "--dial-timeout=1s",
                "--command-timeout=1s",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
        );
        // etcdctl exits 1 when some endpoint failed but still prints the others.
        let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(&output.stdout) else {
            return BTreeMap::new();
        };
        let mut statuses = BTreeMap::new();
        for entry in entries {
            let endpoint = entry["Endpoint"].as_str().unwrap_or_default();
            let Some(&index) = running
                .iter()
                .find(|&&i| self.members[i].endpoint() == endpoint)
            else {
                continue;
            };
            let status = &entry["Status"];
            statuses.insert(
                index,
                MemberStatus {
                    cluster_id: status["header"]["cluster_id"].as_u64().unwrap_or(0),
                    member_id: status["header"]["member_id"].as_u64().unwrap_or(0),
                    leader_id: status["leader"].as_u64().unwrap_or(0),
                    raft_term: status["raftTerm"].as_u64().unwrap_or(0),
                    raft_index: status["raftIndex"].as_u64().unwrap_or(0),
                    raft_applied_index: status["raftAppliedIndex"].as_u64().unwrap_or(0),
                    revision: status["header"]["revision"].as_i64().unwrap_or(0),
                    is_learner: status["isLearner"].as_bool().unwrap_or(false),
                },
            );
        }
        statuses
    }

    /// The leader, as the running members at the highest term see it, if it is itself running
    /// and agrees that it leads.
    pub fn leader(&self) -> Option<usize> {
        let mut statuses = self.statuses();
        statuses.retain(|&index, _| self.in_cluster(index));
        let term = statuses.values().map(|s| s.raft_term).max()?;
        let leader_id = statuses
            .values()
            .filter(|s| s.raft_term == term && s.leader_id != 0)
            .map(|s| s.leader_id)
            .next()?;
        statuses
            .iter()
            .find(|(_, s)| s.member_id == leader_id && s.leader_id == leader_id)
            .map(|(&index, _)| index)
    }

    /// Waits for a leader; panics after `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        self.wait_for_leader_where(timeout, |_| true)
    }

    /// Waits for a leader other than `old`; panics after `timeout`.
    pub fn wait_for_new_leader(&self, old: usize, timeout: Duration) -> usize {
        self.wait_for_leader_where(timeout, |leader| leader != old)
    }

    fn wait_for_leader_where(&self, timeout: Duration, wanted: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().filter(|&l| wanted(l)) {
                return leader;
            }
            if Instant::now() > deadline {
                panic!(
                    "no (new) leader within {timeout:?}; statuses: {:?}",
                    self.statuses()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A running member that is not `leader` and not a learner.
    pub fn follower_of(&self, leader: usize) -> usize {
        self.running()
            .into_iter()
            .find(|&i| i != leader && !self.members[i].learner && self.in_cluster(i))
            .expect("a running follower")
    }

    /// SIGKILL member `index` and wait until it is gone.
    pub fn kill9(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        member.state = MemberState::Stopped;
        self.lock_pids()[index] = None;
        self.event(format!("kill -9 {}", self.members[index].name));
    }

    /// Starts member `index` again on its data dir and ports (killing it first if needed)
    /// and waits until it is healthy. The flags are unchanged: etcd ignores
    /// `--initial-cluster-state` once its data dir is initialised.
    pub fn restart(&mut self, index: usize) {
        if self.members[index].child.is_some() {
            self.kill9(index);
        }
        self.start_member(index);
    }

    /// Starts a member that is not running (a new one after `announce_member`, or one that
    /// was killed) and waits until it is healthy.
    pub fn start_member(&mut self, index: usize) {
        let log_start = self.spawn(index);
        self.event(format!("starting {}", self.members[index].name));
        if let Err(StartError::PortTaken(log) | StartError::Failed(log)) =
            self.wait_ready(&[index], &[log_start])
        {
            panic!(
                "{:?} member {} failed to start:\n{log}",
                self.options.target, self.members[index].name
            );
        }
        self.event(format!("{} is healthy", self.members[index].name));
    }

    /// Starts member `index`, which is expected to stop by itself (a removed member on its
    /// old data dir), and waits until it exits; panics if it still runs after `timeout`.
    /// Returns its exit status and what it wrote. The member keeps its state (e.g. Removed).
    pub fn run_until_exit(&mut self, index: usize, timeout: Duration) -> (ExitStatus, String) {
        let state = self.members[index].state;
        let log_start = self.spawn(index);
        self.event(format!(
            "starting {}, expecting it to exit",
            self.members[index].name
        ));
        let deadline = Instant::now() + timeout;
        loop {
            let member = &mut self.members[index];
            let child = member.child.as_mut().expect("member was spawned");
            if let Some(status) = child.try_wait().expect("poll a member process") {
                member.child = None;
                member.state = state;
                self.lock_pids()[index] = None;
                self.event(format!("{} exited ({status})", self.members[index].name));
                let log = read_log_from(&self.members[index].log_path, log_start);
                return (status, log);
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} member {} still runs {timeout:?} after it was started; its output:\n{}",
                    self.options.target,
                    member.name,
                    read_log_from(&member.log_path, log_start)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP member `index`.
    pub fn pause(&mut self, index: usize) {
        self.signal(index, "-STOP");
        self.members[index].state = MemberState::Paused;
        self.event(format!("SIGSTOP {}", self.members[index].name));
    }

    /// SIGCONT member `index`.
    pub fn resume(&mut self, index: usize) {
        self.signal(index, "-CONT");
        self.members[index].state = MemberState::Running;
        self.event(format!("SIGCONT {}", self.members[index].name));
    }

    fn signal(&self, index: usize, signal: &str) {
        let pid = self.members[index].pid().expect("member is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run `kill`");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Cuts member `index` off from every other member, both directions: its proxy drops all
    /// connections, and every other proxy drops the connections it dialed.
    pub fn isolate(&mut self, index: usize) {
        self.members[index].proxy.block();
        for (other, member) in self.members.iter().enumerate() {
            if other != index {
                member.proxy.block_source(index);
            }
        }
        self.event(format!("isolated {}", self.members[index].name));
    }

    /// Undoes `isolate(index)`.
    pub fn heal(&mut self, index: usize) {
        for (other, member) in self.members.iter().enumerate() {
            if other != index {
                member.proxy.unblock_source(index);
            }
        }
        self.members[index].proxy.unblock();
        self.event(format!("healed {}", self.members[index].name));
    }

    /// `etcdctl member add <name> --peer-urls=<its proxy> [--learner]` for a new member,
    /// retried while etcd refuses it as premature; the member is registered but not started
    /// (see `start_member`). Returns its index and etcdctl's stdout.
    pub fn announce_member(&mut self, learner: bool) -> (usize, String) {
        let mut member = self.new_member(String::new(), "existing");
        let index = self.members.len();
        let peer_urls = format!("--peer-urls={}", member.peer_url());
        let mut args = vec!["member", "add", &member.name, &peer_urls];
        if learner {
            args.push("--learner");
        }
        let stdout = self.membership_change(&args);
        member.initial_cluster = quoted_value(&stdout, "ETCD_INITIAL_CLUSTER=")
            .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in:\n{stdout}"));
        let id = stdout
            .strip_prefix("Member ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no member ID in:\n{stdout}"));
        member.id = Some(id);
        member.learner = learner;
        self.event(format!(
            "added {} ({id:x}{})",
            member.name,
            if learner { ", learner" } else { "" }
        ));
        self.members.push(member);
        (index, stdout)
    }

    /// `announce_member`, then `start_member`. Returns the new member's index.
    pub fn add_member(&mut self, learner: bool) -> usize {
        let (index, _) = self.announce_member(learner);
        self.start_member(index);
        index
    }

    /// `etcdctl member promote <id>`, once; returns etcdctl's output.
    pub fn promote_member(&mut self, index: usize) -> Output {
        let id = format!("{:x}", self.member_id(index));
        let output = self.etcdctl(&["member", "promote", &id]);
        if output.status.success() {
            self.members[index].learner = false;
            self.event(format!("promoted {}", self.members[index].name));
        }
        output
    }

    /// `etcdctl member remove <id>` (retried while refused as premature), then kills the
    /// member's process. Returns etcdctl's stdout.
    pub fn remove_member(&mut self, index: usize) -> String {
        let id = format!("{:x}", self.member_id(index));
        let stdout = self.membership_change(&["member", "remove", &id]);
        if self.members[index].child.is_some() {
            self.kill9(index);
        }
        self.members[index].state = MemberState::Removed;
        self.event(format!("removed {}", self.members[index].name));
        stdout
    }

    fn member_id(&self, index: usize) -> u64 {
        self.members[index]
            .id
            .unwrap_or_else(|| panic!("ID of {} unknown", self.members[index].name))
    }

    /// Runs a membership command, retrying while etcd says "not yet"; panics on any other
    /// failure. Returns stdout.
    fn membership_change(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + MEMBERSHIP_RETRY_TIMEOUT;
        loop {
            let output = self.etcdctl(args);
            if output.status.success() {
                return String::from_utf8(output.stdout).expect("etcdctl prints UTF-8");
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let not_yet = MEMBERSHIP_NOT_YET.iter().any(|m| {
                stderr
                    .lines()
                    .any(|line| line.trim() == format!("Error: {m}"))
            });
            if !not_yet || Instant::now() > deadline {
                panic!("etcdctl {} failed:\n{}", args.join(" "), describe(&output));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until every running member serves the same revision and the same keys and
    /// values (serializable reads of the whole keyspace, so each answers from its own state).
    pub fn wait_converged(&self, timeout: Duration) -> Result<Converged, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut views: Vec<(usize, Option<(i64, Value)>)> = Vec::new();
            for index in self.running().into_iter().filter(|&i| self.in_cluster(i)) {
                views.push((index, self.serializable_keyspace(index)));
            }
            if let Some((_, Some((revision, kvs)))) = views.first()
                && views.iter().all(|(_, view)| {
                    view.as_ref()
                        .is_some_and(|(r, k)| r == revision && k == kvs)
                })
            {
                return Ok(Converged {
                    revision: *revision,
                    keys: kvs.as_array().map_or(0, Vec::len),
                });
            }
            if Instant::now() > deadline {
                let described: Vec<String> = views
                    .iter()
                    .map(|(index, view)| match view {
                        Some((revision, kvs)) => format!(
                            "{}: revision {revision}, {} keys",
                            self.members[*index].name,
                            kvs.as_array().map_or(0, Vec::len)
                        ),
                        None => format!("{}: no answer", self.members[*index].name),
                    })
                    .collect();
                return Err(format!(
                    "members did not converge within {timeout:?}: {}",
                    described.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The member's revision and every key-value (etcdctl's JSON), read serializably.
    fn serializable_keyspace(&self, index: usize) -> Option<(i64, Value)> {
        let output = etcdctl(
            &self.members[index].endpoint(),
            &[
                "--command-timeout=5s",
                "get",
                "",
                "--from-key",
                "--consistency=s",
                "-w",
                "json",
            ],
        );
        if !output.status.success() {
            return None;
        }
        let response: Value = serde_json::from_slice(&output.stdout).ok()?;
        let revision = response["header"]["revision"].as_i64()?;
        let kvs = response
            .get("kvs")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        Some((revision, kvs))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for member in &self.members {
                if member.log_path.exists() {
                    print_log_tail(
                        &format!("{:?} member {}", self.options.target, member.name),
                        &member.log_path,
                    );
                }
            }
        }
        if keep_temp_dirs()
            && let Some(dir) = self.temp_dir.take()
        {
            eprintln!("cairn-tests: keeping {}", dir.keep().display());
        }
    }
}

/// The text between the quotes after `marker` on one of `text`'s lines (etcdctl prints
/// `ETCD_INITIAL_CLUSTER="..."`).
fn quoted_value(text: &str, marker: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(marker)?;
        Some(rest.trim_matches('"').to_owned())
    })
}

/// A plain HTTP/1.1 GET on 127.0.0.1:port; the whole response, or None on any failure.
fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_cluster_etcdctl_prints_is_found() {
        let stdout = "Member 304a321290e91af7 added to cluster c729c6d117190371\n\n\
                      ETCD_NAME=\"m3\"\n\
                      ETCD_INITIAL_CLUSTER=\"m3=http://127.0.0.1:3,m0=http://127.0.0.1:1\"\n\
                      ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n";
        assert_eq!(
            quoted_value(stdout, "ETCD_INITIAL_CLUSTER="),
            Some("m3=http://127.0.0.1:3,m0=http://127.0.0.1:1".to_owned())
        );
        assert_eq!(
            quoted_value(stdout, "ETCD_INITIAL_CLUSTER_STATE="),
            Some("existing".to_owned())
        );
    }
}
