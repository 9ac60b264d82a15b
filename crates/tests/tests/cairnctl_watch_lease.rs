//! `cairnctl watch` and `cairnctl lease` against the real `etcdctl` 3.4: with the same
//! arguments against the same server and state, both must print the same stdout and stderr
//! and exit with the same status.
//!
//! - One-shot commands run with both tools one after the other; only what differs from run
//!   to run is normalised: lease IDs (each tool grants its own), remaining TTLs (a second
//!   may pass between the runs), timestamps and clientv3's random client UUID.
//! - Long-running commands (`watch`, `lease keep-alive`) run as child processes with their
//!   output piped. Watches start from a revision written beforehand (`--rev`), so what they
//!   print does not depend on when they connect; each is read until its last expected event
//!   arrives (bounded waits), then stopped and compared.
//!
//! Needs the `cairnctl` binary: `cargo build --bins` first. Validate the expectations with
//! `CAIRN_TEST_TARGET=etcd`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_tests::{
    Differences, Server, describe, etcdctl, etcdctl_stdin, replace_after, workspace_bin,
};

/// The longest a child may take to print what it is expected to print, or to exit.
const CHILD_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Cairnctl,
}

const TOOLS: [Tool; 2] = [Tool::Etcdctl, Tool::Cairnctl];

impl Tool {
    fn program(self) -> PathBuf {
        match self {
            Tool::Etcdctl => {
                let usr_bin = Path::new("/usr/bin/etcdctl");
                if usr_bin.exists() {
                    usr_bin.to_path_buf()
                } else {
                    PathBuf::from("etcdctl")
                }
            }
            Tool::Cairnctl => workspace_bin("cairnctl"),
        }
    }

    fn command(self, ep: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(self.program());
        c.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .envs(env.iter().copied())
            .arg(format!("--endpoints={ep}"))
            .args(args);
        c
    }
}

/// A child process whose stdout and stderr are collected as they come.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Running {
    fn spawn(tool: Tool, ep: &str, args: &[&str], env: &[(&str, &str)], stdin: bool) -> Running {
        let mut cmd = tool.command(ep, args, env);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), out.clone()),
            collect(child.stderr.take().expect("stderr"), err.clone()),
        ];
        Running {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    fn write(&mut self, input: &str) {
        let pipe = self.stdin.as_mut().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write stdin");
        pipe.flush().expect("flush stdin");
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (at most `CHILD_LIMIT`) until stdout contains `marker` or the child exited,
    /// then until stdout stops growing for a moment.
    fn wait_for(&mut self, marker: &[u8]) {
        let start = Instant::now();
        while start.elapsed() < CHILD_LIMIT && !self.exited() {
            if contains(&self.stdout(), marker) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.settle();
    }

    /// Waits (bounded) until stdout has not grown for 300ms.
    fn settle(&self) {
        let start = Instant::now();
        let mut len = self.stdout().len();
        let mut since = Instant::now();
        while start.elapsed() < Duration::from_secs(3)
            && since.elapsed() < Duration::from_millis(300)
        {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.stdout().len();
            if now != len {
                len = now;
                since = Instant::now();
            }
        }
    }

    /// Closes stdin and waits (at most `limit`) for the child to exit, killing it then.
    fn finish(mut self, limit: Duration) -> Output {
        drop(self.stdin.take());
        let start = Instant::now();
        let status: ExitStatus = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if start.elapsed() >= limit {
                let _ = self.child.kill();
                break self.child.wait().expect("wait for a killed child");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Output {
            status,
            stdout: self.out.lock().unwrap().clone(),
            stderr: self.err.lock().unwrap().clone(),
        }
    }

    /// Stops the child now (after what was awaited has arrived).
    fn kill(mut self) -> Output {
        let _ = self.child.kill();
        self.finish(Duration::from_secs(5))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs a command that is expected to end by itself (killed after `CHILD_LIMIT`).
fn run(tool: Tool, ep: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut r = Running::spawn(tool, ep, args, env, stdin.is_some());
    if let Some(input) = stdin {
        r.write(input);
    }
    r.finish(CHILD_LIMIT)
}

/// What may differ between two runs of one-shot commands against the same server.
#[derive(Default)]
struct Norm {
    /// Lease IDs (each tool grants its own).
    leases: Vec<i64>,
    /// Remaining TTLs tick while the tools run one after the other.
    ttl: bool,
    /// Consecutive equal lines count once (a keep-alive renews as often as time allows).
    dedup: bool,
    /// Lines compared as a set (two watches print concurrently).
    sort: bool,
}

impl Norm {
    fn apply(&self, bytes: &[u8]) -> String {
        // Lossless: output that is not UTF-8 is read as Latin-1, one char per byte.
        let mut s = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
        };
        s = replace_after(&s, "\"ts\":\"", &['"'], "T");
        s = replace_after(&s, "endpoint://client-", &['/'], "U");
        for id in &self.leases {
            s = s.replace(&format!("{id:016x}"), "LEASE");
            s = s.replace(&id.to_string(), "LEASE");
        }
        if self.ttl {
            s = replace_after(&s, "remaining(", &['s'], "T");
            s = replace_after(&s, "\"ttl\":", &[',', '}'], "T");
            s = replace_after(&s, "\"TTL\" : ", &['\n'], "T");
        }
        let mut lines: Vec<String> = Vec::new();
        for line in s.split('\n') {
            // capnslog's `2026-11-21 02:14:39.573001 W | ...` prefix.
            let mut line = line.to_string();
            if line.len() > 27
                && line.as_bytes()[4] == b'-'
                && (line[26..].starts_with(" W |") || line[26..].starts_with(" C |"))
            {
                line = format!("TS{}", &line[26..]);
            }
            if self.dedup && lines.last() == Some(&line) {
                continue;
            }
            lines.push(line);
        }
        if self.sort {
            lines.sort();
        }
        lines.join("\n")
    }
}

/// This file's ways of comparing the two tools, over the shared [`Differences`].
trait WatchLeaseComparisons {
    /// Compares the two tools' outputs under `norm`; exit statuses too when `status`.
    fn compare_normed(&mut self, what: &str, e: &Output, c: &Output, norm: &Norm, status: bool);

    /// Both tools, one after the other, same arguments, environment and stdin.
    fn same(
        &mut self,
        ep: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
        norm: &Norm,
    );

    /// Keeps the comparisons meaningful: etcdctl's output must contain `marker`.
    fn expect(&mut self, what: &str, e: &Output, marker: &[u8], wanted: bool);

    /// Like [`WatchLeaseComparisons::same`] for many commands run all at once, each bounded by `limit`.
    fn same_at_once(&mut self, ep: &str, cases: &[Vec<&str>], norm: &Norm, limit: Duration);
}

impl WatchLeaseComparisons for Differences {
    fn compare_normed(&mut self, what: &str, e: &Output, c: &Output, norm: &Norm, status: bool) {
        let apply = |bytes: &[u8]| norm.apply(bytes);
        self.compare_each(what, (e, &apply), (c, &apply), status);
    }

    fn same(
        &mut self,
        ep: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
        norm: &Norm,
    ) {
        let e = run(Tool::Etcdctl, ep, args, env, stdin);
        let c = run(Tool::Cairnctl, ep, args, env, stdin);
        self.compare_normed(
            &format!("{args:?} env={env:?} stdin={stdin:?}"),
            &e,
            &c,
            norm,
            true,
        );
    }

    fn expect(&mut self, what: &str, e: &Output, marker: &[u8], wanted: bool) {
        if wanted && !contains(&e.stdout, marker) {
            self.note(format!(
                "=== {what}: etcdctl did not print {:?}\n{}",
                String::from_utf8_lossy(marker),
                describe(e)
            ));
        }
    }

    fn same_at_once(&mut self, ep: &str, cases: &[Vec<&str>], norm: &Norm, limit: Duration) {
        let running: Vec<Running> = cases
            .iter()
            .flat_map(|args| TOOLS.map(|t| Running::spawn(t, ep, args, &[], false)))
            .collect();
        let deadline = Instant::now() + limit;
        let outputs: Vec<Output> = running
            .into_iter()
            .map(|r| r.finish(deadline.saturating_duration_since(Instant::now())))
            .collect();
        for (i, args) in cases.iter().enumerate() {
            let what = format!("{args:?}");
            self.compare_normed(&what, &outputs[2 * i], &outputs[2 * i + 1], norm, true);
        }
    }
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "command failed:\n{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Grants a lease with etcdctl and returns its ID.
fn grant(ep: &str, ttl: &str) -> i64 {
    let out = ok(&etcdctl(ep, &["lease", "grant", ttl]));
    // `lease 694d77aa9e38260f granted with TTL(300s)`
    let hex = out.split_whitespace().nth(1).expect("lease ID");
    u64::from_str_radix(hex, 16).expect("hex lease ID") as i64
}

/// Every lease the server has now.
fn all_leases(ep: &str) -> Vec<i64> {
    ok(&etcdctl(ep, &["lease", "list"]))
        .lines()
        .skip(1)
        .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
        .map(|id| id as i64)
        .collect()
}

/// The server's current revision.
fn revision(ep: &str) -> i64 {
    let out = ok(&etcdctl(ep, &["get", "nothing-here", "-w", "json"]));
    let rest = &out[out.find("\"revision\":").expect("revision") + "\"revision\":".len()..];
    rest[..rest.find([',', '}']).unwrap()]
        .parse()
        .expect("revision number")
}

const FORMATS: [&str; 5] = ["simple", "json", "fields", "table", "protobuf"];

#[test]
fn lease_commands_match_etcdctl() {
    let server = Server::start();
    let ep = server.endpoint();
    let ep = ep.as_str();
    let mut report = Differences::default();
    let plain = Norm::default();

    // Argument errors, usage and help.
    for args in [
        vec!["lease"],
        vec!["lease", "foo"],
        vec!["lease", "--help"],
        vec!["help", "lease"],
        vec!["help", "lease", "keep-alive"],
        vec!["lease", "grant"],
        vec!["lease", "grant", "x"],
        vec!["lease", "grant", "10", "20"],
        vec!["lease", "grant", "-5"],
        vec!["lease", "grant", "10", "--keys"],
        vec!["lease", "grant", "--help"],
        vec!["lease", "revoke"],
        vec!["lease", "revoke", "a", "b"],
        vec!["lease", "revoke", "zz"],
        vec!["lease", "timetolive"],
        vec!["lease", "timetolive", "zz"],
        vec!["lease", "timetolive", "--help"],
        vec!["lease", "keep-alive"],
        vec!["lease", "keep-alive", "zz"],
        vec!["lease", "keep-alive", "--once", "--help"],
        vec!["lease", "list", "--bogus"],
        vec!["lease", "timetolive", "--", "-5"],
        vec!["lease", "keep-alive", "--", "-5"],
        vec!["lease", "revoke", "--", "-1"],
        vec!["le", "ti"],
        vec!["put", "k", "v", "--lease=zz"],
    ] {
        report.same(ep, &args, &[], None, &plain);
    }

    // A lease with a key (the server lists several in no fixed order), and one that does
    // not exist.
    let lease = grant(ep, "300");
    let hex = format!("{lease:x}");
    ok(&etcdctl(
        ep,
        &["put", "lk/1", "a", &format!("--lease={hex}")],
    ));
    let ttl = Norm {
        leases: vec![lease],
        ttl: true,
        ..Norm::default()
    };
    for w in FORMATS {
        for args in [
            vec!["lease", "timetolive", &hex],
            vec!["lease", "timetolive", &hex, "--keys"],
            vec!["lease", "timetolive", "1234"],
            vec!["lease", "timetolive", "--keys", "1234"],
            vec!["lease", "list"],
            vec!["lease", "keep-alive", "--once", &hex],
            vec!["lease", "keep-alive", "--once", "1234"],
            vec!["lease", "keep-alive", "1234"],
            vec!["lease", "revoke", "1234"],
        ] {
            let mut args = args.clone();
            args.extend(["-w", w]);
            let norm = Norm {
                leases: all_leases(ep),
                ..ttl
            };
            report.same(ep, &args, &[], None, &norm);
        }
    }
    report.same(ep, &["put", "k", "v", "--lease=1234"], &[], None, &plain);
    report.same(
        ep,
        &["put", "lk/2", "b", &format!("--lease={hex}")],
        &[],
        None,
        &plain,
    );
    report.same(
        ep,
        &["get", "lk/", "--prefix", "-w", "json"],
        &[],
        None,
        &plain,
    );

    // Grants and revokes: each tool its own lease.
    let mut granted = Vec::new();
    for w in FORMATS {
        let args = ["lease", "grant", "100", "-w", w];
        let e = run(Tool::Etcdctl, ep, &args, &[], None);
        let c = run(Tool::Cairnctl, ep, &args, &[], None);
        granted = all_leases(ep);
        let norm = Norm {
            leases: granted.clone(),
            ..Norm::default()
        };
        report.compare_normed(&format!("{args:?}"), &e, &c, &norm, true);
    }
    for w in FORMATS {
        let (le, lc) = (grant(ep, "100"), grant(ep, "100"));
        let (he, hc) = (format!("{le:x}"), format!("{lc:x}"));
        let e = run(
            Tool::Etcdctl,
            ep,
            &["lease", "revoke", &he, "-w", w],
            &[],
            None,
        );
        let c = run(
            Tool::Cairnctl,
            ep,
            &["lease", "revoke", &hc, "-w", w],
            &[],
            None,
        );
        let norm = Norm {
            leases: vec![le, lc],
            ..Norm::default()
        };
        report.compare_normed(&format!("lease revoke -w {w}"), &e, &c, &norm, true);
        let e = run(Tool::Etcdctl, ep, &["lease", "revoke", &he], &[], None);
        let c = run(Tool::Cairnctl, ep, &["lease", "revoke", &hc], &[], None);
        report.compare_normed("lease revoke (again)", &e, &c, &norm, true);
    }
    for id in granted {
        let _ = etcdctl(ep, &["lease", "revoke", &format!("{id:x}")]);
    }

    // keep-alive until the lease is revoked: renewals, then (simple only) a last line.
    let mut children = Vec::new();
    for w in ["simple", "json", "fields", "protobuf"] {
        for tool in TOOLS {
            let id = grant(ep, "6");
            let hex = format!("{id:x}");
            let r = Running::spawn(
                tool,
                ep,
                &["lease", "keep-alive", &hex, "-w", w],
                &[],
                false,
            );
            children.push((w, tool, id, r));
        }
    }
    for (_, _, id, r) in &mut children {
        let start = Instant::now();
        while r.stdout().is_empty() && start.elapsed() < CHILD_LIMIT && !r.exited() {
            std::thread::sleep(Duration::from_millis(20));
        }
        ok(&etcdctl(ep, &["lease", "revoke", &format!("{id:x}")]));
    }
    let mut outputs = Vec::new();
    for (w, tool, id, r) in children {
        outputs.push((w, tool, id, r.finish(CHILD_LIMIT)));
    }
    for pair in outputs.chunks(2) {
        let [(w, Tool::Etcdctl, le, e), (_, Tool::Cairnctl, lc, c)] = pair else {
            unreachable!()
        };
        let norm = Norm {
            leases: vec![*le, *lc],
            dedup: true,
            ..Norm::default()
        };
        report.expect(&format!("lease keep-alive -w {w}"), e, b"", true);
        if e.stdout.is_empty() {
            report.note(format!("lease keep-alive -w {w}: etcdctl printed nothing"));
        }
        report.compare_normed(&format!("lease keep-alive -w {w}"), e, c, &norm, true);
    }
    report.assert_clean();
}

/// Writes a history every watch below replays (from its first revision).
fn write_history(ep: &str) {
    for (k, v) in [
        ("w/a", "1"),
        ("w/b", "two words"),
        ("w/a", "tab\tand \"quotes\" and ünïcode"),
        ("w/c", "3"),
    ] {
        ok(&etcdctl(ep, &["put", k, v]));
    }
    ok(&etcdctl(ep, &["del", "w/c"]));
    // One response with two events.
    ok(&etcdctl_stdin(
        ep,
        &["txn"],
        "\nput w/b x1\nput w/d x2\n\n\n",
    ));
    ok(&etcdctl(ep, &["del", "w/", "--prefix"]));
    ok(&etcdctl(ep, &["put", "w/a", "LAST"]));
}

/// What a watch in format `w` prints for the last event (`put w/a LAST`).
fn last_marker(w: &str, hex: bool) -> Vec<u8> {
    match (w, hex) {
        ("json", _) => b"\"TEFTVA==\"".to_vec(),
        (_, true) => b"\\x4c\\x41\\x53\\x54".to_vec(),
        _ => b"LAST".to_vec(),
    }
}

#[test]
fn watch_matches_etcdctl() {
    let server = Server::start();
    let ep = server.endpoint();
    let ep = ep.as_str();
    let mut report = Differences::default();
    let plain = Norm::default();

    // Argument errors (each ends by itself).
    for (args, env) in [
        (vec!["watch"], vec![]),
        (vec!["watch", "a", "--"], vec![]),
        (vec!["watch", "a", "b", "--prefix"], vec![]),
        (vec!["watch", "--prefix", "a", "b"], vec![]),
        (vec!["watch", "--", "echo", "hi"], vec![]),
        (vec!["watch", "x", "-w", "xx"], vec![]),
        (vec!["watch", "x", "--rev=abc"], vec![]),
        (vec!["watch", "--help"], vec![]),
        (vec!["help", "watch"], vec![]),
        (vec!["watch", "foo"], vec![("ETCDCTL_WATCH_RANGE_END", "z")]),
        (vec!["watch", "foo"], vec![("ETCDCTL_WATCH_KEY", "foo")]),
        (
            vec!["watch", "foo", "--", "echo", "1"],
            vec![("ETCDCTL_WATCH_KEY", "foo")],
        ),
        (
            vec!["watch", "-w", "xx"],
            vec![("ETCDCTL_WATCH_KEY", "foo")],
        ),
        (vec!["watch", "-i", "a"], vec![]),
    ] {
        report.same(ep, &args, &env, None, &plain);
    }

    // Replays of one history, in every format, all running at once.
    let from = (revision(ep) + 1).to_string();
    write_history(ep);
    let mut cases: Vec<(Vec<&str>, Vec<u8>)> = Vec::new();
    for w in FORMATS {
        let marker = last_marker(w, false);
        for args in [
            vec!["watch", "--prefix", "w/"],
            vec!["watch", "w/a", "--prev-kv"],
            vec!["watch", "w/a", "w/c"],
            vec!["watch", "--prefix", "w/", "--prev-kv"],
        ] {
            let mut args = args.clone();
            args.extend(["--rev", &from, "-w", w]);
            cases.push((args, marker.clone()));
        }
    }
    cases.push((
        vec![
            "watch",
            "--rev",
            &from,
            "--prefix",
            "w/",
            "--hex",
            "--prev-kv",
        ],
        last_marker("simple", true),
    ));
    let exec = "printf '%s|%s|%s|%s\\n' \"$ETCD_WATCH_REVISION\" \"$ETCD_WATCH_EVENT_TYPE\" \"$ETCD_WATCH_KEY\" \"$ETCD_WATCH_VALUE\"; env | grep -c ETCDCTL_API || true";
    cases.push((
        vec![
            "watch", "--rev", &from, "--prefix", "w/", "--", "sh", "-c", exec,
        ],
        b"\"LAST\"\n0\n".to_vec(),
    ));
    let mut running = Vec::new();
    for (args, _) in &cases {
        for tool in TOOLS {
            running.push(Running::spawn(tool, ep, args, &[], false));
        }
    }
    let mut outputs = Vec::new();
    for (i, mut r) in running.into_iter().enumerate() {
        r.wait_for(&cases[i / 2].1);
        outputs.push(r.kill());
    }
    for (i, (args, marker)) in cases.iter().enumerate() {
        // A table watch fails at its first event; the others are stopped here.
        let status = args.contains(&"table");
        report.expect(&format!("{args:?}"), &outputs[2 * i], marker, !status);
        report.compare_normed(
            &format!("{args:?}"),
            &outputs[2 * i],
            &outputs[2 * i + 1],
            &plain,
            status,
        );
    }

    // Exec commands that fail end the watch.
    for args in [
        vec!["watch", "--rev", &from, "w/a", "--", "sh", "-c", "exit 3"],
        vec!["watch", "--rev", &from, "w/a", "--", "/nonexistent/cmd"],
        vec!["watch", "--rev", &from, "w/a", "--", "no-such-command-here"],
        vec!["watch", "--rev", &from, "w/a", "--", "sh", "-c", "kill $$"],
    ] {
        report.same(ep, &args, &[], None, &plain);
    }

    // Interactive mode: bad lines are reported, watches start, `progress` is answered;
    // the end of stdin ends etcdctl.
    let input = "\nfoo\nwatch\nget x\nwatch a b --prefix\n";
    let lines = format!("{input}watch --rev {from} w/a --prev-kv\n");
    let mut rs: Vec<Running> = TOOLS
        .iter()
        .map(|&t| Running::spawn(t, ep, &["watch", "-i"], &[], true))
        .collect();
    for r in &mut rs {
        r.write(&lines);
    }
    for r in &mut rs {
        r.wait_for(b"LAST\n");
        r.write("progress\n");
    }
    for r in &mut rs {
        r.wait_for(b"progress notify: ");
    }
    let outs: Vec<Output> = rs.into_iter().map(|r| r.finish(CHILD_LIMIT)).collect();
    report.expect("watch -i (simple)", &outs[0], b"progress notify: ", true);
    report.compare_normed("watch -i (simple)", &outs[0], &outs[1], &plain, true);

    // Two interactive watches print concurrently: compare their JSON lines as a set. A
    // third one fails at its creation, and the others go on.
    let lines = format!(
        "watch --rev {from} --prefix w/ --prev-kv\nwatch --rev {from} w/b -- printenv ETCD_WATCH_VALUE\nwatch w/z w/a\n"
    );
    let mut rs: Vec<Running> = TOOLS
        .iter()
        .map(|&t| Running::spawn(t, ep, &["watch", "-i", "-w", "json"], &[], true))
        .collect();
    for r in &mut rs {
        r.write(&lines);
    }
    for r in &mut rs {
        r.wait_for(b"\"TEFTVA==\"");
    }
    let outs: Vec<Output> = rs.into_iter().map(|r| r.finish(CHILD_LIMIT)).collect();
    let sorted = Norm {
        sort: true,
        ..Norm::default()
    };
    report.compare_normed(
        "watch -i -w json (two watches)",
        &outs[0],
        &outs[1],
        &sorted,
        true,
    );

    // Interactive lines that end etcdctl.
    for line in [
        "watch --foo\n",
        "watch a --\n",
        "watch --prefix\n",
        "watch x",
    ] {
        report.same(ep, &["watch", "-i"], &[], Some(line), &plain);
    }

    // Like any Go program, etcdctl dies of SIGPIPE at its first write once nobody reads its
    // output any more (`etcdctl watch k | head -1`).
    let next = (revision(ep) + 1).to_string();
    ok(&etcdctl(ep, &["put", "pipe/k", "1"]));
    let mut children: Vec<Child> = TOOLS
        .iter()
        .map(|t| {
            let mut cmd = t.command(ep, &["watch", "pipe/k", "--rev", &next], &[]);
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::null())
                .stdin(Stdio::null());
            cmd.spawn().expect("spawn a watch")
        })
        .collect();
    let mut first = Vec::new();
    for child in &mut children {
        // Reads the first event (`PUT\npipe/k\n1\n`), then closes the pipe.
        let mut out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 13];
            let _ = tx.send(out.read_exact(&mut buf).map(|()| buf).ok());
        });
        first.push(rx.recv_timeout(CHILD_LIMIT).ok().flatten());
    }
    ok(&etcdctl(ep, &["put", "pipe/k", "2"]));
    let statuses: Vec<Option<i32>> = children
        .iter_mut()
        .map(|child| {
            let start = Instant::now();
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    use std::os::unix::process::ExitStatusExt;
                    break st.signal();
                }
                if start.elapsed() >= CHILD_LIMIT {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect();
    if first[0] != first[1] || statuses[0] != statuses[1] || statuses[0] != Some(13) {
        report.note(format!(
            "watch | head: first events {first:?}, killed by signals {statuses:?} (from revision {next})"
        ));
    }

    // A watch from a compacted revision is canceled by the server.
    ok(&etcdctl(ep, &["compaction", &revision(ep).to_string()]));
    // An empty range fails at its creation. (All at once: a server that does not end
    // these watches costs the bound once.)
    let mut cases = Vec::new();
    for w in FORMATS {
        cases.push(vec!["watch", "--rev", "2", "w/a", "-w", w]);
        cases.push(vec!["watch", "w/z", "w/a", "-w", w]);
    }
    report.same_at_once(ep, &cases, &plain, Duration::from_secs(5));
    report.assert_clean();
}

/// etcdctl 3.5's `watch --progress-notify` (3.4 lacks the flag): with the server's interval
/// shortened, an idle watch prints `progress notify: <revision>` lines.
#[test]
fn watch_progress_notify_prints_the_servers_periodic_notifications() {
    let server =
        Server::start_with_args(&["--experimental-watch-progress-notify-interval", "200ms"]);
    let mut child = Command::new(workspace_bin("cairnctl"))
        .args([
            "--endpoints",
            &server.endpoint(),
            "watch",
            "idle",
            "--progress-notify",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairnctl watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let _ = tx.send(lines.next());
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line
        .expect("a progress notification within 30s")
        .expect("a line")
        .expect("utf-8");
    assert_eq!(
        line, "progress notify: 1",
        "the idle store is at revision 1"
    );
}
