//! Integration-test harness for Cairn: starts the real `cairn` binary (or, for comparison, the
//! real etcd) as a child process on free 127.0.0.1 ports, and drives it from outside with the
//! real `etcdctl`, our `cairnctl` and (in the tests) the `etcd-client` crate.
//!
//! Multi-member clusters live in [`cluster`] (each member behind a [`proxy`] that can cut its
//! peer links); [`workload`] drives them with concurrent clients whose operations [`history`]
//! records for the linearizability checker.
//!
//! This crate must never depend on Cairn's server crates: it tests the binaries over real
//! sockets, exactly as a user would, so the tests also run unchanged against real etcd
//! (`CAIRN_TEST_TARGET=etcd`). The one Cairn crate it uses is `cairn-linearizability`, a pure
//! checker that knows nothing of Cairn and judges the recorded histories.

pub mod cluster;
pub mod history;
pub mod proxy;
pub mod workload;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to become ready (or to exit after SIGTERM).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a first start is retried on fresh ports when the ports were taken meanwhile.
pub(crate) const START_ATTEMPTS_MAX: usize = 5;
/// How much of the server's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;
/// The member name every test server gets.
const MEMBER_NAME: &str = "cairn-test";
/// Ports are picked below Linux's default ephemeral range (32768..), so outgoing connections
/// of clients never take a port a stopped server is about to listen on again.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// Which server binary the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `target/<profile>/cairn`, built from this workspace.
    Cairn,
    /// The real etcd (`/usr/bin/etcd`), the reference the tests are validated against.
    Etcd,
}

impl Target {
    /// `CAIRN_TEST_TARGET=etcd|cairn`; `cairn` when unset.
    pub fn from_env() -> Target {
        match std::env::var("CAIRN_TEST_TARGET") {
            Err(_) => Target::Cairn,
            Ok(value) => match value.trim() {
                "" | "cairn" => Target::Cairn,
                "etcd" => Target::Etcd,
                other => panic!("CAIRN_TEST_TARGET={other:?}: expected `etcd` or `cairn`"),
            },
        }
    }

    /// The server executable for this target.
    pub fn binary(self) -> PathBuf {
        match self {
            Target::Cairn => workspace_bin("cairn"),
            Target::Etcd => system_program("etcd"),
        }
    }
}

/// A running single-member server. Its process is killed (SIGKILL) when this is dropped.
pub struct Server {
    target: Target,
    binary: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// The temporary directory `start()` made (data dir and log inside); removed on drop
    /// unless `CAIRN_TEST_KEEP=1`.
    temp_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the target from `CAIRN_TEST_TARGET` with a fresh temporary data dir.
    pub fn start() -> Server {
        Self::start_fresh(Target::from_env(), &[])
    }

    /// Starts the target from `CAIRN_TEST_TARGET` with a fresh temporary data dir and extra
    /// flags (e.g. `["--max-txn-ops", "3"]`).
    pub fn start_with_args(extra_args: &[&str]) -> Server {
        Self::start_fresh(Target::from_env(), extra_args)
    }

    fn start_fresh(target: Target, extra_args: &[&str]) -> Server {
        let temp_dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("create a temporary directory");
        let data_dir = temp_dir.path().join("data");
        let mut server = Self::start_with(target, &data_dir, extra_args);
        server.temp_dir = Some(temp_dir);
        server
    }

    /// Starts `target` on `data_dir` (created by the server if missing) with extra flags.
    /// The server's stdout and stderr go to `<name>.log` next to the data dir.
    pub fn start_with(target: Target, data_dir: &Path, extra_args: &[&str]) -> Server {
        let binary = target.binary();
        let parent = data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".to_owned());
        let log_path = parent.join(format!("{dir_name}.log"));
        let data_dir_existed = data_dir.exists();
        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS_MAX {
            let (client_port, peer_port) = pick_port_pair();
            let mut server = Server {
                target,
                binary: binary.clone(),
                data_dir: data_dir.to_path_buf(),
                log_path: log_path.clone(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                client_port,
                peer_port,
                child: None,
                temp_dir: None,
            };
            match server.spawn_and_wait_ready() {
                Ok(()) => return server,
                Err(StartError::PortTaken(log)) => {
                    // Whatever the failed attempt initialised names the old ports: start over.
                    if !data_dir_existed {
                        let _ = fs::remove_dir_all(data_dir);
                    }
                    last_failure = log;
                }
                Err(StartError::Failed(message)) => panic!("{message}"),
            }
        }
        panic!(
            "{target:?} could not start: ports kept being taken ({START_ATTEMPTS_MAX} attempts); \
             last log:\n{last_failure}"
        );
    }

    /// Which binary this server runs.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The peer URL, `http://127.0.0.1:PORT`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the server's stdout and stderr go (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the server and wait for it to be gone. No-op if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data dir and ports (killing it first if it is still
    /// running) and waits until it serves requests.
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(StartError::PortTaken(log) | StartError::Failed(log)) =
            self.spawn_and_wait_ready()
        {
            panic!("{:?} failed to restart:\n{log}", self.target);
        }
    }

    /// SIGTERM the server and wait (bounded) for it to exit: a clean shutdown.
    /// Panics if it is not running or does not exit within the deadline.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate(): server is not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run `kill -TERM`");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} did not exit within {READY_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.target,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The flags both etcd and cairn are started with.
    fn args(&self) -> Vec<String> {
        let client = self.url();
        let peer = self.peer_url();
        let mut args = vec![
            "--name".to_owned(),
            MEMBER_NAME.to_owned(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".to_owned(),
            client.clone(),
            "--advertise-client-urls".to_owned(),
            client,
            "--listen-peer-urls".to_owned(),
            peer.clone(),
            "--initial-advertise-peer-urls".to_owned(),
            peer.clone(),
            "--initial-cluster".to_owned(),
            format!("{MEMBER_NAME}={peer}"),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn_and_wait_ready(&mut self) -> Result<(), StartError> {
        assert!(self.child.is_none(), "server already running");
        let (child, log_start) = spawn_logged(&self.binary, &self.args(), &self.log_path);
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let mut listening = false;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("poll the server process");
            if let Some(status) = exited {
                self.child = None;
                let log = read_log_from(&self.log_path, log_start);
                let message = format!(
                    "{:?} ({}) exited before becoming ready ({status}); its output:\n{log}",
                    self.target,
                    self.binary.display()
                );
                return Err(if log.to_lowercase().contains("address already in use") {
                    StartError::PortTaken(message)
                } else {
                    StartError::Failed(message)
                });
            }
            if !listening {
                listening =
                    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
            }
            if listening && self.serves_a_read() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(StartError::Failed(format!(
                    "{:?} ({}) was not ready within {READY_TIMEOUT:?} (listening: {listening}); \
                     its output:\n{}",
                    self.target,
                    self.binary.display(),
                    read_log_from(&self.log_path, log_start)
                )));
            }
            std::thread::sleep(Duration::from_millis(if listening { 100 } else { 20 }));
        }
    }

    /// A linearizable read through etcdctl succeeds: the member has a leader and applies.
    fn serves_a_read(&self) -> bool {
        etcdctl(
            &self.endpoint(),
            &[
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "get",
                "cairn-tests-readiness-probe",
            ],
        )
        .status
        .success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows the end of the server's log (the temp dir is about to go).
        if std::thread::panicking() {
            print_log_tail(&format!("{:?} server", self.target), &self.log_path);
        }
        if keep_temp_dirs()
            && let Some(dir) = self.temp_dir.take()
        {
            eprintln!("cairn-tests: keeping {}", dir.keep().display());
        }
    }
}

/// Starts `binary` with `args`, its stdout and stderr appended to `log_path` after a line
/// naming the command. Returns the child and where its output starts in the log.
pub(crate) fn spawn_logged(binary: &Path, args: &[String], log_path: &Path) -> (Child, u64) {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", log_path.display()));
    let _ = writeln!(
        log,
        "==== cairn-tests: starting {} {}",
        binary.display(),
        args.join(" ")
    );
    let log_start = fs::metadata(log_path).map(|m| m.len()).unwrap_or(0);
    let stderr = log.try_clone().expect("clone log file handle");
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    (child, log_start)
}

/// Prints the last lines of a server log on stderr, for a failing test.
pub(crate) fn print_log_tail(label: &str, log_path: &Path) {
    let log = read_log(log_path);
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    eprintln!(
        "---- {label} log ({}), last {} lines ----\n{}\n---- end of {label} log ----",
        log_path.display(),
        tail.len(),
        tail.join("\n")
    );
}

/// `CAIRN_TEST_KEEP=1`: temporary directories (data dirs and logs) are kept for inspection.
pub(crate) fn keep_temp_dirs() -> bool {
    std::env::var_os("CAIRN_TEST_KEEP").is_some_and(|v| v == "1")
}

pub(crate) enum StartError {
    /// The server could not bind its ports (another process took them): retry on new ports.
    PortTaken(String),
    Failed(String),
}

pub(crate) fn read_log(path: &Path) -> String {
    read_log_from(path, 0)
}

pub(crate) fn read_log_from(path: &Path, offset: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = (offset as usize).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Ports handed out by this process, never handed out twice.
static PORTS_GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static PORT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Two distinct free ports (client, peer); see [`pick_ports`].
fn pick_port_pair() -> (u16, u16) {
    let ports = pick_ports(2);
    (ports[0], ports[1])
}

/// `count` distinct free ports. Candidates walk the range from an offset that differs per
/// process (pid and clock) and per call (a counter); each must be bindable now and not already
/// given out by this process. A port taken between this check and the server's bind is
/// handled by the caller retrying on new ports.
pub(crate) fn pick_ports(count: usize) -> Vec<u16> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = u64::from(std::process::id()) * 7919 + u64::from(nanos / 1000);
    let mut given = PORTS_GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let mut picked = Vec::with_capacity(count);
    for _ in 0..span {
        let step = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = PORT_RANGE.start + ((seed + step * 37) % span) as u16;
        if given.contains(&port) || picked.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            picked.push(port);
            if picked.len() == count {
                given.extend(picked.iter().copied());
                return picked;
            }
        }
    }
    panic!("no free ports in {PORT_RANGE:?}");
}

/// A program installed on the system: `/usr/bin/<name>` if present, else `<name>` from PATH.
pub(crate) fn system_program(name: &str) -> PathBuf {
    let usr_bin = Path::new("/usr/bin").join(name);
    if usr_bin.exists() {
        usr_bin
    } else {
        PathBuf::from(name)
    }
}

/// `target/<profile>/<name>`, found from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`) or example (`target/<profile>/examples/<name>`).
/// Panics if it has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --bins` first",
            path.display()
        );
    }
    path
}

/// `target/<profile>`, found from the running test executable or example.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir
}

/// The target directory (`target`, or `CARGO_TARGET_DIR`) the tests were built in.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the profile directory is inside the target directory")
        .to_path_buf()
}

fn ctl_command(program: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    command
}

fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for the command")
}

/// Runs the real etcdctl (v3 API) against `endpoint` and returns its output.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    run(
        ctl_command(&system_program("etcdctl"), endpoint, args),
        None,
    )
}

/// Like [`etcdctl`], with `stdin` fed to the command (e.g. for `txn`).
pub fn etcdctl_stdin(endpoint: &str, args: &[&str], stdin: &str) -> Output {
    run(
        ctl_command(&system_program("etcdctl"), endpoint, args),
        Some(stdin),
    )
}

/// Runs our `cairnctl` (same global flags as etcdctl) against `endpoint`.
pub fn cairnctl(endpoint: &str, args: &[&str]) -> Output {
    run(
        ctl_command(&workspace_bin("cairnctl"), endpoint, args),
        None,
    )
}

/// Like [`cairnctl`], with `stdin` fed to the command.
pub fn cairnctl_stdin(endpoint: &str, args: &[&str], stdin: &str) -> Output {
    run(
        ctl_command(&workspace_bin("cairnctl"), endpoint, args),
        Some(stdin),
    )
}

/// Renders a command's output for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the command succeeded and returns its stdout.
#[track_caller]
pub fn ok_stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed:\n{}",
        describe(output)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// Asserts the command succeeded and printed exactly `expected` on stdout.
#[track_caller]
pub fn assert_stdout(output: &Output, expected: &str) {
    let stdout = ok_stdout(output);
    assert_eq!(stdout, expected, "unexpected stdout:\n{}", describe(output));
}

/// Asserts the command failed, printed nothing on stdout, and printed the line
/// `Error: <message>` on stderr (etcdctl also logs client retries there; those are ignored).
#[track_caller]
pub fn assert_error(output: &Output, message: &str) {
    assert!(
        !output.status.success(),
        "expected failure `{message}`:\n{}",
        describe(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let wanted = format!("Error: {message}");
    assert!(
        stderr.lines().any(|line| line.trim_end() == wanted),
        "expected the stderr line `{wanted}`:\n{}",
        describe(output)
    );
    assert!(
        output.stdout.is_empty(),
        "expected no stdout:\n{}",
        describe(output)
    );
}

/// Replaces, after each `marker`, the text up to the next of the `end` characters with
/// `with`: for normalising output that differs between runs for good reason (times, IDs).
pub fn replace_after(s: &str, marker: &str, end: &[char], with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let stop = rest.find(end).unwrap_or(rest.len());
        out.push_str(with);
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// Whether `token` is a Go `time.Duration` as printed (`1.2ms`, `3m4.5s`).
fn is_go_duration(token: &str) -> bool {
    let mut rest = token;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[digits..];
        match ["ns", "µs", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
        parts += 1;
    }
    parts > 0
}

/// Replaces measured durations in one line of etcdctl-style output with `D` (`took = 1.2ms`,
/// `"took":"1.2ms"`, table cells), and squeezes runs of spaces and dashes in table lines,
/// whose column borders move with a duration's width.
pub fn normalise_durations(line: &str) -> String {
    let words = line
        .split(' ')
        .map(|word| {
            let core = word.trim_matches(|c| c == '"' || c == ',');
            if is_go_duration(core) {
                word.replace(core, "D")
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let line = replace_after(&words, "\"took\":\"", &['"'], "D");
    if !(line.starts_with('+') || line.starts_with('|')) {
        return line;
    }
    let mut squeezed = String::with_capacity(line.len());
    for c in line.chars() {
        if (c == ' ' || c == '-') && squeezed.ends_with(c) {
            continue;
        }
        squeezed.push(c);
    }
    squeezed
}

/// How a tool's stdout or stderr is turned into the text compared.
pub type Normalise<'a> = &'a dyn Fn(&[u8]) -> String;

/// The command lines where etcdctl and cairnctl answered differently, collected so that one
/// run reports all of them.
#[derive(Default)]
pub struct Differences {
    failures: Vec<String>,
    compared: usize,
}

impl Differences {
    /// Compares the two tools' runs of one command line: stdout, stderr and exit status, all
    /// normalised by `norm`.
    pub fn compare(&mut self, what: &str, etcdctl: &Output, cairnctl: &Output, norm: Normalise) {
        self.compare_each(what, (etcdctl, norm), (cairnctl, norm), true);
    }

    /// Compares stdout and stderr, each tool's normalised by its own function, and the exit
    /// statuses when `statuses` (not for a child the test stopped itself).
    pub fn compare_each(
        &mut self,
        what: &str,
        (etcdctl, norm_etcdctl): (&Output, Normalise),
        (cairnctl, norm_cairnctl): (&Output, Normalise),
        statuses: bool,
    ) {
        self.compared += 1;
        let same = norm_etcdctl(&etcdctl.stdout) == norm_cairnctl(&cairnctl.stdout)
            && norm_etcdctl(&etcdctl.stderr) == norm_cairnctl(&cairnctl.stderr)
            && (!statuses || etcdctl.status.code() == cairnctl.status.code());
        if !same {
            self.failures.push(format!(
                "=== {what}\n--- etcdctl: {}\n--- cairnctl: {}\n--- normalised etcdctl:\n{}\n{}\n--- normalised cairnctl:\n{}\n{}",
                describe(etcdctl),
                describe(cairnctl),
                norm_etcdctl(&etcdctl.stdout),
                norm_etcdctl(&etcdctl.stderr),
                norm_cairnctl(&cairnctl.stdout),
                norm_cairnctl(&cairnctl.stderr),
            ));
        }
    }

    /// Records a failure found some other way.
    pub fn note(&mut self, failure: String) {
        self.failures.push(failure);
    }

    #[track_caller]
    pub fn assert_clean(self) {
        eprintln!("compared {} command lines", self.compared);
        assert!(
            self.failures.is_empty(),
            "{} of {} command lines differ:\n{}",
            self.failures.len(),
            self.compared,
            self.failures.join("\n")
        );
    }
}

/// The first event on a watch stream, skipping responses without one (the creation, progress
/// notifications); panics if none arrives within `timeout` or the stream ends.
pub async fn first_watch_event(
    stream: &mut etcd_client::WatchStream,
    timeout: Duration,
) -> etcd_client::Event {
    let event = tokio::time::timeout(timeout, async {
        loop {
            let response = stream
                .message()
                .await
                .expect("watch stream")
                .expect("open stream");
            if let Some(event) = response.events().first() {
                return event.clone();
            }
        }
    })
    .await;
    event.unwrap_or_else(|_| panic!("no watch event within {timeout:?}"))
}

/// Standard base64 with padding, as Go's encoding/json prints `[]byte` (etcdctl `-w json`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn target_defaults_to_cairn() {
        // Only meaningful when the variable is unset; otherwise check it parses.
        let target = Target::from_env();
        match std::env::var("CAIRN_TEST_TARGET").as_deref() {
            Ok("etcd") => assert_eq!(target, Target::Etcd),
            _ => assert_eq!(target, Target::Cairn),
        }
    }

    #[test]
    fn port_pairs_are_distinct_and_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let (client, peer) = pick_port_pair();
            assert_ne!(client, peer);
            assert!(PORT_RANGE.contains(&client) && PORT_RANGE.contains(&peer));
            assert!(seen.insert(client), "port {client} handed out twice");
            assert!(seen.insert(peer), "port {peer} handed out twice");
        }
    }
}
