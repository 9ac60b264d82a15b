//! `cairnctl` against the real `etcdctl` 3.4: for scripted command lines over every output
//! format, both must print the same stdout and stderr and exit with the same status.
//!
//! - Reads (and commands that fail without changing anything) run with both tools against
//!   the same server and state.
//! - Writes run on twin servers with the same history: etcdctl on one, cairnctl on the other,
//!   so revisions stay equal; only the servers' cluster/member IDs and ports are normalised.
//! - Everywhere, only what differs from run to run is normalised: timestamps in etcdctl's
//!   log lines, clientv3's random client UUID, and measured durations.
//!
//! Needs the `cairnctl` binary: `cargo build -p cairnctl` first. Validate the expectations
//! with `CAIRN_TEST_TARGET=etcd`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cairn_tests::{
    Differences, Server, cairnctl, cairnctl_stdin, describe, etcdctl, etcdctl_stdin,
    normalise_durations, replace_after, workspace_bin,
};

/// Replaces the digits after `marker` with `ID`.
fn replace_numbers(s: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let stop = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push_str(if stop > 0 { "ID" } else { "" });
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// Normalises what differs between two runs against the same server.
fn normalise_run(bytes: &[u8]) -> String {
    // Lossless: output that is not UTF-8 is read as Latin-1, one char per byte.
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    let mut lines = Vec::new();
    for line in text.split('\n') {
        let mut line = line.to_string();
        // zap's warn lines from clientv3: time and the random resolver-group UUID.
        line = replace_after(&line, "\"ts\":\"", &['"'], "T");
        line = replace_after(&line, "endpoint://client-", &['/'], "U");
        // capnslog's `2026-11-21 02:14:39.573001 W | ...` prefix.
        if line.len() > 27 && line.as_bytes()[4] == b'-' && line[26..].starts_with(" W |")
            || line.len() > 27 && line.as_bytes()[4] == b'-' && line[26..].starts_with(" C |")
        {
            line = format!("TS{}", &line[26..]);
        }
        lines.push(normalise_durations(&line));
    }
    lines.join("\n")
}

/// Also normalises what differs between two servers: IDs and the endpoint.
fn normalise_twins(bytes: &[u8], endpoint: &str) -> String {
    let mut s = normalise_run(bytes).replace(endpoint, "ENDPOINT");
    for marker in [
        "\"cluster_id\":",
        "\"member_id\":",
        "\"leader\":",
        "\"ClusterID\" : ",
        "\"MemberID\" : ",
        "\"Leader\" : ",
    ] {
        s = replace_numbers(&s, marker);
    }
    s
}

const FORMATS: [&str; 5] = ["simple", "json", "fields", "table", "protobuf"];

/// Both tools, same server, same arguments (and stdin).
fn same_server(report: &mut Differences, ep: &str, args: &[&str], stdin: Option<&str>) {
    let (e, c) = match stdin {
        Some(input) => (
            etcdctl_stdin(ep, args, input),
            cairnctl_stdin(ep, args, input),
        ),
        None => (etcdctl(ep, args), cairnctl(ep, args)),
    };
    let what = format!("{args:?} stdin={stdin:?}");
    report.compare(&what, &e, &c, &normalise_run);
}

fn seed(ep: &str) {
    let puts: &[(&str, &str)] = &[
        ("foo", "bar"),
        ("foo", "bar2"),
        ("foo/a", "1"),
        ("foo/b", "2"),
        ("foo/c", "tab\tand \"quotes\" and <html> & ünïcode"),
        ("zeta", "last"),
        ("multi", "line one\nline two"),
        ("pct", "100%d %% %5.2f %"),
    ];
    for (k, v) in puts {
        let out = etcdctl(ep, &["put", k, v]);
        assert!(out.status.success(), "seed put: {}", describe(&out));
    }
    let out = etcdctl(ep, &["compaction", "3"]);
    assert!(out.status.success(), "seed compaction: {}", describe(&out));
}

#[test]
fn reads_and_failures_match_on_the_same_server() {
    let server = Server::start();
    let ep = server.endpoint();
    let ep = ep.as_str();
    seed(ep);
    let mut report = Differences::default();

    for w in FORMATS {
        for args in [
            vec!["get", "foo"],
            vec!["get", "foo", "--prefix"],
            vec!["get", "", "--prefix"],
            vec!["get", "foo", "--from-key"],
            vec!["get", "foo/a", "foo/c"],
            vec!["get", "foo", "--prefix", "--limit", "2"],
            vec!["get", "foo", "--prefix", "--keys-only"],
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by",
                "value",
                "--order",
                "ascend",
            ],
            vec!["get", "foo", "--prefix", "--sort-by=CREATE"],
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=VERSION",
                "--order=DESCEND",
            ],
            vec!["get", "foo", "--prefix", "--sort-by=KEY", "--order=DESCEND"],
            vec!["get", "foo", "--rev", "4"],
            vec!["get", "foo", "--rev=2"],
            vec!["get", "foo", "--rev=1000"],
            vec!["get", "foo", "--consistency=s"],
            vec!["get", "missing"],
            vec!["get", "foo", "--prefix", "--hex"],
            vec!["get", "foo", "--print-value-only"],
            vec!["get", "multi"],
            vec!["get", "pct"],
            vec!["endpoint", "status"],
            vec!["endpoint", "status", "--cluster"],
            vec!["endpoint", "health"],
            vec!["endpoint", "health", "--cluster"],
            vec!["compaction", "1"],
            vec!["put", "nokey", "--ignore-value"],
            vec!["put", "foo", "v", "--lease=1234"],
        ] {
            let mut args = args.clone();
            args.extend(["-w", w]);
            same_server(&mut report, ep, &args, None);
        }
        // Read-only transactions leave the revision alone.
        let txn = "value(\"foo\") = \"bar2\"\nmod(\"foo/a\") > \"0\"\n\nget foo\nge foo/ --prefix --limit 1\n\nget zeta\n\n";
        same_server(&mut report, ep, &["txn", "-w", w], Some(txn));
        same_server(&mut report, ep, &["txn", "-i", "-w", w], Some(txn));
        let failing = "version(\"foo\") = \"7\"\n\nget foo\n\nget zeta --keys-only\nget foo/b\n\n";
        same_server(&mut report, ep, &["txn", "--write-out", w], Some(failing));
    }

    // Argument, flag and command errors.
    for args in [
        vec![],
        vec!["--help"],
        vec!["help"],
        vec!["help", "get"],
        vec!["help", "endpoint", "status"],
        vec!["help", "nosuchcommand"],
        vec!["--bogus"],
        vec!["gte"],
        vec!["ge", "foo"],
        vec!["de"],
        vec!["e"],
        vec!["comp"],
        vec!["ver"],
        vec!["en", "st"],
        vec!["endpoint", "h"],
        vec!["help", "ge"],
        vec!["help", "de"],
        vec!["nosuchcommand"],
        vec!["version"],
        vec!["version", "-w", "json"],
        vec!["endpoint"],
        vec!["endpoint", "bogus"],
        vec!["endpoint", "status", "--bogus"],
        vec!["endpoint", "health", "-h"],
        vec!["get"],
        vec!["get", "--help"],
        vec!["get", "foo", "--count-only"],
        vec!["get", "foo", "--prefix", "--from-key"],
        vec!["get", "foo", "bar", "--prefix"],
        vec!["get", "foo", "--consistency=x"],
        vec!["get", "foo", "--order=sideways"],
        vec!["get", "foo", "--sort-by=size"],
        vec!["get", "foo", "--rev=zz"],
        vec!["get", "foo", "--rev"],
        vec!["get", "foo", "-x"],
        vec!["get", "foo", "-w"],
        vec!["get", "foo", "-w", "xml"],
        vec!["get", "foo", "-wjson", "--print-value-only"],
        vec!["get", "foo", "--dial-timeout=zz"],
        vec!["get", "--", "--prefix"],
        vec!["put"],
        vec!["put", "k"],
        vec!["put", "k", "v", "--lease=zz"],
        vec!["put", "k", "v", "--ignore-value"],
        vec!["put", "k", "v", "--prev-kv=maybe"],
        vec!["del"],
        vec!["del", "a", "b", "c"],
        vec!["del", "a", "--prefix", "--from-key"],
        vec!["del", "a", "b", "--prefix"],
        vec!["compaction"],
        vec!["compaction", "1", "2"],
        vec!["compaction", "abc"],
        vec!["compaction", "1000"],
        vec!["txn", "extra"],
    ] {
        same_server(&mut report, ep, &args, None);
    }

    // txn syntax errors, all before anything is sent.
    for input in [
        "",
        "\n\n",
        "foo\n",
        "value(\"a\") = 1\n",
        "value(\"a\")=\"1\"\n",
        "ver(\"a\") = \"x\"\n",
        "foo(\"a\") = \"x\"\n",
        "value(\"a) = \"1\"\n\n\n\n",
        "value(\"a\") =\n\n\n\n",
        "\nget\n\n",
        "\n\ndel\n\n",
        "\nbad a\n\n\n",
        "\nget a --foo\n\n\n",
        "\nput a b --foo\n\n\n",
        "\ndel a b --foo\n\n\n",
        "\nput a\n\n\n",
        "\nput a b --lease=zz\n\n\n",
        "\nput a b --ignore-value\n\n\n",
        "\nget x --prefix --from-key\n\n\n",
        "value(\"foo\") = \"bar2\"\n\nget foo",
    ] {
        same_server(&mut report, ep, &["txn"], Some(input));
        same_server(&mut report, ep, &["txn", "-i"], Some(input));
    }
    report.assert_clean();
}

/// Runs etcdctl on `a` and cairnctl on `b` and compares with the servers' differences
/// normalised.
fn twins(report: &mut Differences, a: &Server, b: &Server, args: &[&str], stdin: Option<&str>) {
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let (e, c) = match stdin {
        Some(input) => (
            etcdctl_stdin(&ea, args, input),
            cairnctl_stdin(&eb, args, input),
        ),
        None => (etcdctl(&ea, args), cairnctl(&eb, args)),
    };
    report.compare_each(
        &format!("{args:?} stdin={stdin:?}"),
        (&e, &|bytes| normalise_twins(bytes, &ea)),
        (&c, &|bytes| normalise_twins(bytes, &eb)),
        true,
    );
}

#[test]
fn writes_match_on_twin_servers() {
    let a = Server::start();
    let b = Server::start();
    let mut report = Differences::default();
    let script: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["put", "k1", "v1"], None),
        (vec!["put", "k1", "v2", "--prev-kv"], None),
        (vec!["put", "k1", "v3", "--prev-kv", "-w", "json"], None),
        (vec!["put", "k2", "x", "-w", "json"], None),
        (vec!["put", "k2", "y", "--prev-kv", "-w", "fields"], None),
        (vec!["put", "k2", "z", "-w", "fields"], None),
        (vec!["put", "k3", "t", "-w", "table"], None),
        (vec!["put", "k4"], Some("from stdin\n")),
        (vec!["put", "k1", "--ignore-value", "--prev-kv"], None),
        (
            vec!["put", "k1", "v4", "--ignore-lease", "--hex", "--prev-kv"],
            None,
        ),
        (vec!["put", "--", "k5", "-v"], None),
        (vec!["put", "k6", "ünï <&> \"q\"", "-w", "json"], None),
        (vec!["del", "k5", "--prev-kv"], None),
        (vec!["del", "k5"], None),
        (vec!["del", "k6", "--prev-kv", "-w", "json"], None),
        (vec!["del", "k3", "--prev-kv", "-w", "fields"], None),
        (vec!["del", "k", "--prefix", "--prev-kv", "--hex"], None),
        (vec!["put", "a", "1"], None),
        (vec!["put", "b", "2"], None),
        (vec!["del", "a", "b", "-w", "table"], None),
        (vec!["del", "a", "--from-key", "-w", "json"], None),
        (vec!["put", "a", "1"], None),
        (vec!["put", "b", "2"], None),
        (
            vec!["txn"],
            Some("value(\"a\") = \"1\"\nmod(\"b\") > \"3\"\n\nput a 11\nget b\ndel c\n\nget a\n\n"),
        ),
        (
            vec!["txn", "-w", "json"],
            Some("value(\"a\") = \"1\"\n\nput a 11\nget b\ndel c\n\nget a\n\n"),
        ),
        (
            vec!["txn", "-w", "fields"],
            Some(
                "value(\"a\") = \"11\"\n\nput a 12 --prev-kv\nget a --prefix\ndel c --prev-kv\n\nget a\n\n",
            ),
        ),
        (
            vec!["txn", "-i"],
            Some(
                "ver(\"a\") > \"0\"\ncreate(\"a\") != \"0\"\nversion(\"b\") < \"5\"\nc(\"a\") > \"1\"\nm(\"a\") > \"1\"\nval(\"a\") != \"x\"\n\nput x1 \"hello world\"\nput 'x2' 'abc def'\nput x3 \"a\\tb\"\nput x5 ab\"cd ef\"\nget x --prefix\n\ndel a\n\n",
            ),
        ),
        (vec!["txn", "-w", "table"], Some("\n\nput t 1\n\n\n")),
        (vec!["get", "", "--prefix", "-w", "json"], None),
        (vec!["compaction", "3"], None),
        (vec!["compaction", "3"], None),
        (vec!["compaction", "5", "--physical", "-w", "json"], None),
        (vec!["get", "k1", "--rev", "4"], None),
        (vec!["get", "", "--from-key", "-w", "fields"], None),
        (vec!["del", "", "--prefix", "--prev-kv", "-w", "json"], None),
        (vec!["get", "", "--prefix", "-w", "json"], None),
    ];
    for (args, stdin) in &script {
        twins(&mut report, &a, &b, args, *stdin);
    }
    report.assert_clean();
}

/// etcdctl with `ETCDCTL_*` variables (the harness's runners do not take an environment).
fn with_env(program: PathBuf, ep: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            command.env_remove(k);
        }
    }
    command
        .env("ETCDCTL_API", "3")
        .envs(env.iter().copied())
        .arg(format!("--endpoints={ep}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.output().expect("run")
}

fn system_etcdctl() -> PathBuf {
    let usr_bin = PathBuf::from("/usr/bin/etcdctl");
    if usr_bin.exists() {
        usr_bin
    } else {
        PathBuf::from("etcdctl")
    }
}

/// Arguments and the `ETCDCTL_*` variables to run them with.
type EnvCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[test]
fn environment_variables_match() {
    let server = Server::start();
    let ep = server.endpoint();
    seed(&ep);
    let mut report = Differences::default();
    let cases: &[EnvCase] = &[
        (&["get", "foo"], &[("ETCDCTL_WRITE_OUT", "json")]),
        (
            &["get", "foo", "-w", "fields"],
            &[("ETCDCTL_WRITE_OUT", "json")],
        ),
        (&["get", "foo"], &[("ETCDCTL_HEX", "true")]),
        (&["get", "foo"], &[("ETCDCTL_HEX", "maybe")]),
        (&["get", "foo"], &[("ETCDCTL_DIAL_TIMEOUT", "zz")]),
        (&["get", "foo"], &[("ETCDCTL_COMMAND_TIMEOUT", "3s")]),
        (&["get", "foo"], &[("ETCDCTL_PREFIX", "true")]),
        (&["get", "foo"], &[("ETCDCTL_ENDPOINTS", "127.0.0.1:1")]),
        (&["get", "foo"], &[("ETCDCTL_WRITE_OUT", "xml")]),
        (&["endpoint", "status"], &[("ETCDCTL_WRITE_OUT", "table")]),
        (&["version"], &[("ETCDCTL_FOO", "1")]),
        (&["endpoint", "status"], &[("ETCDCTL_CLUSTER", "true")]),
        (
            &["endpoint", "status", "--cluster"],
            &[("ETCDCTL_CLUSTER", "true")],
        ),
        (
            &["endpoint", "health", "--cluster"],
            &[("ETCDCTL_FOO", "1")],
        ),
        (&["get", "foo"], &[("ETCDCTL_CLUSTER", "true")]),
    ];
    for (args, env) in cases {
        let e = with_env(system_etcdctl(), &ep, args, env);
        let c = with_env(workspace_bin("cairnctl"), &ep, args, env);
        report.compare(&format!("{args:?} env={env:?}"), &e, &c, &normalise_run);
    }
    report.assert_clean();
}

#[test]
fn unreachable_endpoints_match() {
    let server = Server::start();
    let good = server.endpoint();
    seed(&good);
    let dead = "127.0.0.1:1";
    let mut report = Differences::default();
    let both = format!("{dead},{good}");
    let good_first = format!("{good},{dead}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (dead, vec!["get", "foo", "--command-timeout=1s"]),
        (
            "http://127.0.0.1:1",
            vec!["get", "foo", "--command-timeout=1s"],
        ),
        (
            "http://127.0.0.1:1",
            vec!["endpoint", "status", "--command-timeout=1s"],
        ),
        (dead, vec!["put", "foo", "x", "--command-timeout=1s"]),
        (
            dead,
            vec!["endpoint", "health", "-w", "json", "--command-timeout=1s"],
        ),
        (&both, vec!["get", "foo"]),
        (
            &good_first,
            vec!["endpoint", "health", "--command-timeout=1s"],
        ),
        (
            &good_first,
            vec!["endpoint", "status", "--command-timeout=1s"],
        ),
        (
            &good_first,
            vec!["endpoint", "status", "-w", "json", "--command-timeout=1s"],
        ),
    ];
    for (ep, args) in &cases {
        let e = etcdctl(ep, args);
        let c = cairnctl(ep, args);
        report.compare(
            &format!("--endpoints={ep} {args:?}"),
            &e,
            &c,
            &normalise_run,
        );
    }
    report.assert_clean();
}

/// Runs `program` with byte-string arguments (not valid UTF-8 in general) and stdin.
fn raw(program: PathBuf, ep: &str, args: &[&[u8]], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut child = Command::new(program)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={ep}"))
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn bytes_that_are_not_utf8_match() {
    let server = Server::start();
    let ep = server.endpoint();
    let put = raw(
        system_etcdctl(),
        &ep,
        &[b"put", b"k\xff\xc3", b"v\xfe%d"],
        b"",
    );
    assert!(put.status.success(), "{}", describe(&put));
    let mut report = Differences::default();
    let cases: &[(&[&[u8]], &[u8])] = &[
        (&[b"get", b"k\xff\xc3"], b""),
        (&[b"get", b"k\xff", b"--prefix", b"-w", b"fields"], b""),
        (&[b"get", b"k\xff", b"--prefix", b"-w", b"json"], b""),
        (&[b"get", b"k\xff", b"--prefix", b"-w", b"protobuf"], b""),
        (&[b"get", b"k", b"--prefix", b"--hex"], b""),
        (&[b"get", b"k", b"--consistency=\xff"], b""),
        (&[b"get", b"k", b"--rev=\xff"], b""),
        (
            &[b"txn", b"-w", b"fields"],
            b"value(\"k\\xff\\xc3\") = \"v\\xfe%d\"\n\nget k\xff\xc3\nget \"k\xff\xc3\"\n\n\n",
        ),
        (&[b"txn"], b"value(\"k\xff\xc3\") = v\xfe\n\n\n\n"),
    ];
    for (args, stdin) in cases {
        let e = raw(system_etcdctl(), &ep, args, stdin);
        let c = raw(workspace_bin("cairnctl"), &ep, args, stdin);
        let what = format!(
            "{:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
        report.compare(&what, &e, &c, &normalise_run);
    }
    report.assert_clean();
}

#[test]
fn normalisation_only_touches_what_varies() {
    let line = br#"{"level":"warn","ts":"2026-11-21T02:13:04.132Z","caller":"x","target":"endpoint://client-b9ec2a39-fee0-426f-ac19-34974ac52bbe/127.0.0.1:2379","attempt":0}"#;
    assert_eq!(
        normalise_run(line),
        r#"{"level":"warn","ts":"T","caller":"x","target":"endpoint://client-U/127.0.0.1:2379","attempt":0}"#
    );
    assert_eq!(
        normalise_run(
            b"127.0.0.1:1 is healthy: successfully committed proposal: took = 1.206405ms\n"
        ),
        "127.0.0.1:1 is healthy: successfully committed proposal: took = D\n"
    );
    assert_eq!(
        normalise_run(b"2026-11-21 02:14:39.573001 W | pkg/flags: unrecognized environment variable ETCDCTL_FOO=1"),
        "TS W | pkg/flags: unrecognized environment variable ETCDCTL_FOO=1"
    );
    assert_eq!(normalise_run(b"3.4.23, 25 kB, 5s"), "3.4.23, 25 kB, D");
    assert_eq!(
        normalise_twins(br#"{"cluster_id":1234,"member_id":5,"revision":3}"#, "x"),
        r#"{"cluster_id":ID,"member_id":ID,"revision":3}"#
    );
}
