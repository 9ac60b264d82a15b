//! `cairnctl`'s cluster commands against the real `etcdctl` 3.4 on a 3-member cluster of the
//! target (`CAIRN_TEST_TARGET=etcd|cairn`): `member list|add|remove|update|promote`,
//! `endpoint status|health|hashkv` (with and without `--cluster`), `move-leader`, and the
//! client's failover across `--endpoints`. For every case both tools must print the same
//! stdout and stderr and exit with the same status, in every output format.
//!
//! - Reads and refused requests run with both tools against the same cluster and state.
//! - A change runs once per tool, each on its own subject: a member added for the case (its
//!   ID, peer URLs and place in ID-sorted member lists differ between the two runs), or the
//!   current leader and a follower for `move-leader` (whose IDs and term differ).
//! - Everywhere, only what differs from run to run is normalised: timestamps and clientv3's
//!   random UUID in etcdctl's log lines, measured durations, the order in which concurrent
//!   health checks finish, and in `endpoint status` the raft indexes, revisions and db sizes.
//!
//! Needs the `cairnctl` binary: `cargo build -p cairnctl` first. Validate the expectations
//! with `CAIRN_TEST_TARGET=etcd`.

use std::process::Output;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::{
    Differences, Normalise, cairnctl, describe, etcdctl, normalise_durations, replace_after,
};

const FORMATS: [&str; 5] = ["simple", "json", "fields", "table", "protobuf"];

/// How long a membership change refused as premature (or a promotion of a learner that has
/// not caught up) is retried; the refusal changes nothing.
const NOT_YET_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd's refusals that mean "not yet".
const NOT_YET: [&str; 3] = [
    "Error: etcdserver: unhealthy cluster",
    "Error: etcdserver: re-configuration failed due to not enough started members",
    "Error: etcdserver: can only promote a learner member which is in sync with leader",
];
/// How long a leader transfer may take to show in every member's status.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Cairnctl,
}

impl Tool {
    fn run(self, endpoints: &str, args: &[&str]) -> Output {
        match self {
            Tool::Etcdctl => etcdctl(endpoints, args),
            Tool::Cairnctl => cairnctl(endpoints, args),
        }
    }

    /// Runs the command again while it is refused as "not yet".
    fn run_when_ready(self, endpoints: &str, args: &[&str]) -> Output {
        let deadline = Instant::now() + NOT_YET_RETRY_TIMEOUT;
        loop {
            let output = self.run(endpoints, args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let not_yet = stderr.lines().any(|l| NOT_YET.contains(&l.trim()));
            if !not_yet || Instant::now() > deadline {
                return output;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// This file's way of comparing the two tools, over the shared [`Differences`].
trait ClusterComparisons {
    /// Both tools, same endpoints and arguments, one normalisation (each run repeated while
    /// refused as "not yet").
    fn same_cluster(&mut self, endpoints: &str, args: &[&str], norm: Normalise);
}

impl ClusterComparisons for Differences {
    fn same_cluster(&mut self, endpoints: &str, args: &[&str], norm: Normalise) {
        let e = Tool::Etcdctl.run_when_ready(endpoints, args);
        let c = Tool::Cairnctl.run_when_ready(endpoints, args);
        self.compare(&format!("--endpoints={endpoints} {args:?}"), &e, &c, norm);
    }
}

/// Output as text; output that is not UTF-8 (protobuf) is read as Latin-1, one char per byte.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Normalises what differs between any two runs: zap's timestamp and clientv3's random
/// client UUID in etcdctl's log lines, measured durations (whose width moves table
/// borders, so runs of spaces and dashes in table lines are squeezed), and the goroutine
/// dump after a Go panic (cairnctl prints only its first line).
fn normalise_run(bytes: &[u8]) -> String {
    let mut lines = Vec::new();
    for line in text(bytes).split('\n') {
        if lines
            .last()
            .is_some_and(|l: &String| l.starts_with("goroutine ") && l.ends_with(" [running]:"))
        {
            lines.push(String::new());
            break;
        }
        let mut line = replace_after(line, "\"ts\":\"", &['"'], "T");
        line = replace_after(&line, "endpoint://client-", &['/'], "U");
        lines.push(normalise_durations(&line));
    }
    lines.join("\n")
}

/// `normalise_run`, plus what moves in `endpoint status` while the cluster stands still:
/// raft indexes, revisions and db sizes, in every format.
fn normalise_status(bytes: &[u8]) -> String {
    let mut s = text(bytes);
    for marker in [
        "\"revision\":",
        "\"raftIndex\":",
        "\"raftAppliedIndex\":",
        "\"dbSize\":",
        "\"dbSizeInUse\":",
    ] {
        s = replace_after(&s, marker, &[',', '}'], "N");
    }
    for marker in [
        "\"Revision\" : ",
        "\"RaftIndex\" : ",
        "\"RaftAppliedIndex\" : ",
        "\"DBSize\" : ",
    ] {
        s = replace_after(&s, marker, &['\n'], "N");
    }
    let lines: Vec<String> = s
        .split('\n')
        .map(|line| {
            // Simple: endpoint, ID, version, db size, is leader, is learner, raft term,
            // raft index, raft applied index, errors.
            let cells: Vec<&str> = line.split(", ").collect();
            if cells.len() >= 10 && !line.starts_with('{') {
                let mut cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
                for i in [3, 7, 8] {
                    cells[i] = "N".into();
                }
                return cells.join(", ");
            }
            // Table rows: the same columns between `|`s.
            if line.starts_with("| ") && !line.contains("ENDPOINT") {
                let mut cells: Vec<String> = line.split('|').map(str::to_string).collect();
                if cells.len() >= 11 {
                    for i in [4, 8, 9] {
                        cells[i] = " N ".into();
                    }
                }
                return cells.join("|");
            }
            line.to_string()
        })
        .collect();
    normalise_run(lines.join("\n").as_bytes())
}

/// `normalise_run` with the records of concurrent checks (`endpoint health`) sorted, as
/// they come out in the order the checks finish: lines, table rows, JSON array elements and
/// `fields` blocks.
fn normalise_unordered(bytes: &[u8]) -> String {
    let s = normalise_run(bytes);
    if let Some(inner) = s.strip_prefix("[{").and_then(|r| r.strip_suffix("}]\n")) {
        let mut items: Vec<&str> = inner.split("},{").collect();
        items.sort_unstable();
        return format!("[{{{}}}]\n", items.join("},{"));
    }
    if s.contains("\n\n") {
        let mut blocks: Vec<&str> = s.split("\n\n").collect();
        blocks.sort_unstable();
        return blocks.join("\n\n");
    }
    let mut lines: Vec<&str> = s.split('\n').collect();
    let rows = lines
        .iter()
        .position(|l| l.starts_with("| ") && !l.contains("ENDPOINT"));
    match rows {
        Some(first) => {
            let last = lines.len() - 2;
            lines[first..last].sort_unstable();
        }
        None => lines.sort_unstable(),
    }
    lines.join("\n")
}

/// A protobuf field: its number and a varint or the bytes of a length-delimited value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a protobuf message, in order; `None` if it does not decode.
fn decode_fields(bytes: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let field = match key & 7 {
            0 => Field::Varint(read_varint(bytes, &mut at)?),
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let value = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                Field::Bytes(value)
            }
            _ => return None,
        };
        fields.push((key >> 3, field));
    }
    Some(fields)
}

/// A `ResponseHeader` as etcdctl's JSON prints it.
fn header_json(bytes: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    for (number, field) in decode_fields(bytes)? {
        let names = ["cluster_id", "member_id", "revision", "raft_term"];
        let name = names.get(usize::try_from(number).ok()?.checked_sub(1)?)?;
        match field {
            Field::Varint(v) if number == 3 => parts.push(format!("\"{name}\":{}", v as i64)),
            Field::Varint(v) => parts.push(format!("\"{name}\":{v}")),
            Field::Bytes(_) => return None,
        }
    }
    Some(format!("{{{}}}", parts.join(",")))
}

/// A `Member` as etcdctl's JSON prints it.
fn member_json(bytes: &[u8]) -> Option<String> {
    let (mut id, mut name, mut peers, mut clients, mut learner) =
        (None, None, Vec::new(), Vec::new(), false);
    for (number, field) in decode_fields(bytes)? {
        match (number, field) {
            (1, Field::Varint(v)) => id = Some(format!("\"ID\":{v}")),
            (2, Field::Bytes(b)) => name = Some(format!("\"name\":{:?}", text(b))),
            (3, Field::Bytes(b)) => peers.push(format!("{:?}", text(b))),
            (4, Field::Bytes(b)) => clients.push(format!("{:?}", text(b))),
            (5, Field::Varint(v)) => learner = v != 0,
            _ => return None,
        }
    }
    let mut parts: Vec<String> = id.into_iter().chain(name).collect();
    if !peers.is_empty() {
        parts.push(format!("\"peerURLs\":[{}]", peers.join(",")));
    }
    if !clients.is_empty() {
        parts.push(format!("\"clientURLs\":[{}]", clients.join(",")));
    }
    if learner {
        parts.push("\"isLearner\":true".into());
    }
    Some(format!("{{{}}}", parts.join(",")))
}

/// The JSON etcdctl would print for a `-w protobuf` membership or move-leader response
/// (`header` = 1, `member` = 2 in `MemberAddResponse`, `members` = `members_field`), so the
/// members it lists can be normalised and sorted like JSON output. `None` if the bytes are
/// not such a response.
fn protobuf_as_json(bytes: &[u8], members_field: u64) -> Option<String> {
    let mut parts = Vec::new();
    let mut members = Vec::new();
    for (number, field) in decode_fields(bytes)? {
        let Field::Bytes(b) = field else { return None };
        match number {
            1 => parts.push(format!("\"header\":{}", header_json(b)?)),
            n if n == members_field => members.push(member_json(b)?),
            2 => parts.push(format!("\"member\":{}", member_json(b)?)),
            _ => return None,
        }
    }
    if !members.is_empty() {
        parts.push(format!("\"members\":[{}]", members.join(",")));
    }
    Some(format!("protobuf {{{}}}", parts.join(",")))
}

/// Sorts the elements of every `"members":[...]` array in JSON text (members are listed by
/// ID, and the IDs of the members a case adds differ between runs).
fn sort_member_arrays(s: &str) -> String {
    const MARKER: &str = "\"members\":[";
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find(MARKER) {
        let body_start = start + MARKER.len();
        out.push_str(&rest[..body_start]);
        let body = &rest[body_start..];
        let (mut depth, mut in_string, mut end) = (0i32, false, body.len());
        for (i, c) in body.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '[' | '{' if !in_string => depth += 1,
                ']' | '}' if !in_string && depth == 0 => {
                    end = i;
                    break;
                }
                ']' | '}' if !in_string => depth -= 1,
                _ => {}
            }
        }
        let elements = &body[..end];
        match elements.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
            Some(inner) => {
                let mut members: Vec<&str> = inner.split("},{").collect();
                members.sort_unstable();
                out.push_str(&format!("{{{}}}", members.join("},{")));
            }
            None => out.push_str(elements),
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Sorts the comma-separated `name=url` entries of `ETCD_INITIAL_CLUSTER="..."`.
fn sort_initial_cluster(s: &str) -> String {
    const MARKER: &str = "ETCD_INITIAL_CLUSTER=\"";
    let Some(start) = s.find(MARKER) else {
        return s.to_string();
    };
    let body_start = start + MARKER.len();
    // Up to the closing quote at the end of the line (names may contain `\"`).
    let Some(len) = s[body_start..].find("\"\n") else {
        return s.to_string();
    };
    let mut entries: Vec<&str> = s[body_start..body_start + len].split(',').collect();
    entries.sort_unstable();
    format!(
        "{}{}{}",
        &s[..body_start],
        entries.join(","),
        &s[body_start + len..]
    )
}

/// What one run of a change acted on: replaced by role names in its output.
#[derive(Default)]
struct Subject {
    /// `(member ID, name)`: the ID in decimal, in hex and in etcdctl's `%16x`.
    ids: Vec<(u64, &'static str)>,
    /// `(text, name)`: peer URLs made up for the case.
    texts: Vec<(String, &'static str)>,
    /// The raft term changes with every leader transfer.
    term: bool,
}

impl Subject {
    fn normalise(&self, bytes: &[u8], members_field: u64) -> String {
        let mut s = match protobuf_as_json(bytes, members_field) {
            Some(json) if !bytes.is_empty() && !bytes.is_ascii() => json,
            _ => normalise_run(bytes),
        };
        for (id, name) in &self.ids {
            // `Member %16x ...`: the ID padded to 16 columns, whatever its length.
            s = s.replace(&format!("Member {id:16x} "), &format!("Member {name:>16} "));
            for form in [format!("{id:x}"), id.to_string()] {
                s = s.replace(&form, name);
            }
        }
        for (from, name) in &self.texts {
            s = s.replace(from, name);
        }
        if self.term {
            s = replace_after(&s, "\"raft_term\":", &[',', '}'], "TERM");
        }
        sort_initial_cluster(&sort_member_arrays(&s))
    }
}

/// `member list -w json` through etcdctl.
fn member_list(ep: &str) -> serde_json::Value {
    let output = etcdctl(ep, &["member", "list", "-w", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    serde_json::from_slice(&output.stdout).expect("member list JSON")
}

/// The ID of the member with `peer_url`, from `member list`.
fn member_id_by_peer_url(ep: &str, peer_url: &str) -> Option<u64> {
    member_list(ep)["members"]
        .as_array()?
        .iter()
        .find(|m| {
            m["peerURLs"]
                .as_array()
                .is_some_and(|urls| urls.iter().any(|u| u == peer_url))
        })
        .and_then(|m| m["ID"].as_u64())
}

/// Runs a setup or clean-up change through etcdctl (retried while refused as premature)
/// and returns its stdout; panics if it fails.
fn change(ep: &str, args: &[&str]) -> String {
    let output = Tool::Etcdctl.run_when_ready(ep, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed:\n{}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// Peer URLs for members that are added but never started: nothing listens there.
struct UnusedPeerUrls(u16);

impl UnusedPeerUrls {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("http://127.0.0.1:{}", self.0)
    }
}

/// A 3-member cluster of the target, etcd's timing.
fn start_cluster() -> Cluster {
    Cluster::start(ClusterOptions::default())
}

#[test]
fn reads_and_refusals_match_on_the_same_cluster() {
    let cluster = start_cluster();
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let ep0 = cluster.member(0).endpoint();
    let all: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    let all = all.join(",");
    let mut report = Differences::default();

    for w in FORMATS {
        // One endpoint: the header names the member that answered.
        report.same_cluster(&ep0, &["member", "list", "-w", w], &normalise_run);
        report.same_cluster(&ep0, &["endpoint", "status", "-w", w], &normalise_status);
        report.same_cluster(&all, &["endpoint", "status", "-w", w], &normalise_status);
        report.same_cluster(&all, &["endpoint", "health", "-w", w], &normalise_unordered);
        report.same_cluster(&all, &["endpoint", "hashkv", "-w", w], &normalise_run);
        report.same_cluster(
            &ep0,
            &["endpoint", "hashkv", "--rev=1", "-w", w],
            &normalise_run,
        );
        report.same_cluster(
            &ep0,
            &["endpoint", "hashkv", "--rev", "1000000", "-w", w],
            &normalise_run,
        );
        for (args, norm) in [
            (
                ["endpoint", "status", "--cluster", "-w", w],
                &normalise_status as &dyn Fn(&[u8]) -> String,
            ),
            (
                ["endpoint", "health", "--cluster", "-w", w],
                &normalise_unordered,
            ),
            (["endpoint", "hashkv", "--cluster", "-w", w], &normalise_run),
        ] {
            report.same_cluster(&ep0, &args, norm);
        }
    }

    // Refused before anything is sent: arguments, flags, help.
    for args in [
        vec!["member"],
        vec!["member", "--help"],
        vec!["member", "bogus"],
        vec!["help", "member", "add"],
        vec!["member", "add", "-h"],
        vec!["member", "list", "--help"],
        vec!["member", "promote", "--help"],
        vec!["member", "remove", "--help"],
        vec!["member", "update", "--help"],
        vec!["move-leader", "--help"],
        vec!["endpoint", "hashkv", "--help"],
        vec!["member", "l"],
        vec!["member", "list", "extra", "-w", "xml"],
        vec!["member", "add"],
        vec!["member", "add", "a", "b"],
        vec!["member", "add", "a", "http://x:1", "HTTPS://y"],
        vec!["member", "add", "a"],
        vec!["member", "add", "a", "--peer-urls="],
        vec!["member", "add", "a", "--peer-urls"],
        vec!["member", "add", "a", "--learner=maybe"],
        vec!["member", "add", "a", "--peer-urls=ftp://x:1", "-w", "xml"],
        vec!["member", "remove"],
        vec!["member", "remove", "zz"],
        vec!["member", "remove", "1", "2"],
        vec!["member", "remove", "0x10"],
        vec!["member", "remove", "10000000000000000000"],
        vec!["member", "rem", "--", "-5"],
        vec!["member", "update"],
        vec!["member", "update", "12"],
        vec!["member", "update", "zz", "--peer-urls=http://x:1"],
        vec!["member", "p"],
        vec!["member", "promote", "g"],
        vec!["move-leader"],
        vec!["move-leader", "zz"],
        vec!["move-leader", "1", "2"],
        vec!["endpoint", "hashkv", "--rev=zz"],
    ] {
        report.same_cluster(&ep0, &args, &normalise_run);
    }
    // Peer URLs are checked by the client before it sends them.
    for urls in [
        "127.0.0.1:2380",
        "ftp://x:1",
        "http://x",
        "http://x:1/p",
        "://x",
        "http://[::1",
        "http://x:abc",
        "http://a b:1",
        "http:x:1",
        "%zz",
        "http://127.0.0.1:1,,",
        "http://127.0.0.1:1,mailto:a@b",
    ] {
        let flag = format!("--peer-urls={urls}");
        report.same_cluster(&ep0, &["member", "add", "a", &flag], &normalise_run);
        report.same_cluster(&ep0, &["member", "update", "1234", &flag], &normalise_run);
    }

    // Refused by the server, so nothing changes.
    let voter = format!("{:x}", cluster.member(1).id().expect("member ID"));
    let taken = format!("--peer-urls={}", cluster.member(1).peer_url());
    for args in [
        vec!["member", "remove", "1234"],
        vec!["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
        vec!["member", "promote", "1234"],
        vec!["member", "promote", voter.as_str()],
        vec!["member", "add", "again", taken.as_str()],
        vec![
            "member",
            "update",
            voter.as_str(),
            taken.as_str(),
            "-w",
            "json",
        ],
    ] {
        report.same_cluster(&ep0, &args, &normalise_run);
    }
    report.assert_clean();
}

/// Runs a change once per tool: `run` sets up a subject, runs the tool on it, cleans up, and
/// returns the tool's output and the subject to normalise it by.
fn compare_change(
    report: &mut Differences,
    what: &str,
    members_field: u64,
    mut run: impl FnMut(Tool) -> (Output, Subject),
) {
    let (e, e_subject) = run(Tool::Etcdctl);
    let (c, c_subject) = run(Tool::Cairnctl);
    report.compare_each(
        what,
        (&e, &|b| e_subject.normalise(b, members_field)),
        (&c, &|b| c_subject.normalise(b, members_field)),
        true,
    );
}

#[test]
fn membership_changes_match() {
    let mut cluster = start_cluster();
    cluster.wait_for_leader(LEADER_TIMEOUT);
    let ep0 = cluster.member(0).endpoint();
    let mut urls = UnusedPeerUrls(10000);
    let mut report = Differences::default();

    // member add: a learner in every format, a voter in two; removed again after each run
    // (etcd takes one learner at a time).
    let mut adds: Vec<(&str, bool)> = FORMATS.iter().map(|w| (*w, true)).collect();
    adds.extend([("simple", false), ("json", false)]);
    for (w, learner) in adds {
        let args_for = |peer_urls: &str| {
            let mut args = vec![
                "member".to_string(),
                "add".into(),
                "new\"name".into(),
                format!("--peer-urls={peer_urls}"),
                "-w".into(),
                w.into(),
            ];
            if learner {
                args.push("--learner".into());
            }
            args
        };
        compare_change(
            &mut report,
            &format!("member add --learner={learner} -w {w}"),
            3,
            |tool| {
                let (first, second) = (urls.next(), urls.next());
                let peer_urls = format!("{first},{second}");
                let args = args_for(&peer_urls);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = tool.run_when_ready(&ep0, &args);
                let added = member_id_by_peer_url(&ep0, &first);
                if let Some(id) = added {
                    change(&ep0, &["member", "remove", &format!("{id:x}")]);
                }
                let subject = Subject {
                    ids: added.map(|id| (id, "NEW_ID")).into_iter().collect(),
                    texts: vec![(first, "PEER_URL_1"), (second, "PEER_URL_2")],
                    term: false,
                };
                (output, subject)
            },
        );
    }

    // member update and member remove of an unstarted learner added for the run.
    for w in FORMATS {
        compare_change(&mut report, &format!("member update -w {w}"), 2, |tool| {
            let (old, new) = (urls.next(), urls.next());
            change(
                &ep0,
                &[
                    "member",
                    "add",
                    "up",
                    &format!("--peer-urls={old}"),
                    "--learner",
                ],
            );
            let id = member_id_by_peer_url(&ep0, &old).expect("added member");
            let hex = format!("{id:x}");
            let new_flag = format!("--peer-urls={new}");
            let output = tool.run_when_ready(&ep0, &["member", "update", &hex, &new_flag, "-w", w]);
            change(&ep0, &["member", "remove", &hex]);
            let subject = Subject {
                ids: vec![(id, "NEW_ID")],
                texts: vec![(old, "OLD_PEER_URL"), (new, "NEW_PEER_URL")],
                term: false,
            };
            (output, subject)
        });
        compare_change(&mut report, &format!("member remove -w {w}"), 2, |tool| {
            let url = urls.next();
            change(
                &ep0,
                &[
                    "member",
                    "add",
                    "gone",
                    &format!("--peer-urls={url}"),
                    "--learner",
                ],
            );
            let id = member_id_by_peer_url(&ep0, &url).expect("added member");
            let output =
                tool.run_when_ready(&ep0, &["member", "remove", &format!("{id:x}"), "-w", w]);
            // Every format removes it (fields and table fail only when printing).
            assert_eq!(member_id_by_peer_url(&ep0, &url), None, "{tool:?} -w {w}");
            let subject = Subject {
                ids: vec![(id, "NEW_ID")],
                texts: vec![(url, "PEER_URL")],
                term: false,
            };
            (output, subject)
        });
    }
    // An unstarted learner cannot be promoted; a second learner is refused.
    let url = urls.next();
    change(
        &ep0,
        &[
            "member",
            "add",
            "idle",
            &format!("--peer-urls={url}"),
            "--learner",
        ],
    );
    let idle = format!(
        "{:x}",
        member_id_by_peer_url(&ep0, &url).expect("added member")
    );
    let promote_idle = ["member", "promote", idle.as_str()];
    report.compare(
        &format!("{promote_idle:?} of a learner that never started"),
        &Tool::Etcdctl.run(&ep0, &promote_idle),
        &Tool::Cairnctl.run(&ep0, &promote_idle),
        &normalise_run,
    );
    let another = format!("--peer-urls={}", urls.next());
    report.same_cluster(
        &ep0,
        &["member", "add", "another", &another, "--learner"],
        &normalise_run,
    );
    change(&ep0, &["member", "remove", &idle]);

    // member promote of a started learner that has caught up; promoted, it is removed.
    for w in FORMATS {
        compare_change(&mut report, &format!("member promote -w {w}"), 2, |tool| {
            let index = cluster.add_member(true);
            let id = cluster.member(index).id().expect("member ID");
            let output =
                tool.run_when_ready(&ep0, &["member", "promote", &format!("{id:x}"), "-w", w]);
            cluster.remove_member(index);
            let subject = Subject {
                ids: vec![(id, "NEW_ID")],
                texts: vec![],
                term: false,
            };
            (output, subject)
        });
    }
    report.assert_clean();
}

#[test]
fn move_leader_matches() {
    let cluster = start_cluster();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let all: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    let all = all.join(",");
    let mut report = Differences::default();

    // Refusals, with the leader where it is.
    let follower = cluster.follower_of(leader);
    let follower_ep = cluster.member(follower).endpoint();
    let leader_ep = cluster.member(leader).endpoint();
    let follower_id = format!("{:x}", cluster.member(follower).id().expect("ID"));
    let leader_id = format!("{:x}", cluster.member(leader).id().expect("ID"));
    report.same_cluster(&follower_ep, &["move-leader", &follower_id], &normalise_run);
    report.same_cluster(&all, &["move-leader", "1"], &normalise_run);
    report.same_cluster(
        &all,
        &["move-leader", &follower_id, "-w", "xml"],
        &normalise_run,
    );
    let dead_first = format!("127.0.0.1:1,{leader_ep}");
    report.same_cluster(
        &dead_first,
        &["move-leader", &follower_id, "--command-timeout=1s"],
        &normalise_run,
    );
    // To itself: nothing moves.
    report.same_cluster(&all, &["move-leader", &leader_id], &normalise_run);

    // A transfer per tool and format, from the leader of the moment to a follower.
    for w in FORMATS {
        compare_change(&mut report, &format!("move-leader -w {w}"), 2, |tool| {
            let from = cluster.wait_for_leader(LEADER_TIMEOUT);
            let to = cluster.follower_of(from);
            let (from_id, to_id) = (
                cluster.member(from).id().expect("ID"),
                cluster.member(to).id().expect("ID"),
            );
            let output = tool.run(&all, &["move-leader", &format!("{to_id:x}"), "-w", w]);
            if output.status.success() || w == "fields" || w == "table" {
                let now = cluster.wait_for_new_leader(from, LEADER_TIMEOUT);
                assert_eq!(now, to, "{tool:?} -w {w} moved the leader elsewhere");
            }
            let subject = Subject {
                ids: vec![(from_id, "FROM_ID"), (to_id, "TO_ID")],
                texts: vec![],
                term: true,
            };
            (output, subject)
        });
    }
    report.assert_clean();
}

#[test]
fn failover_across_endpoints_matches() {
    let mut cluster = start_cluster();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    // A follower goes down; the leader stays, so the others keep serving at once.
    let victim = cluster.follower_of(leader);
    let survivor = (0..3).find(|&i| i != victim).expect("a survivor");
    let victim_ep = cluster.member(victim).endpoint();
    let survivor_ep = cluster.member(survivor).endpoint();
    let all: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    let all = all.join(",");
    let victim_first = format!("{victim_ep},{survivor_ep}");
    let timeout = "--command-timeout=1s";
    let mut report = Differences::default();

    // An endpoint nobody listens on, first.
    let nobody_first = format!("127.0.0.1:1,{survivor_ep}");
    report.same_cluster(&nobody_first, &["member", "list"], &normalise_run);
    report.same_cluster(&nobody_first, &["get", "k"], &normalise_run);

    // A paused member first: etcdctl's balancer never uses a connection whose server did
    // not answer the HTTP/2 handshake.
    cluster.pause(victim);
    report.same_cluster(&victim_first, &["member", "list"], &normalise_run);
    report.same_cluster(&victim_first, &["get", "k"], &normalise_run);
    for args in [
        vec!["endpoint", "status", timeout],
        vec!["endpoint", "hashkv", timeout],
        vec!["get", "k", timeout],
    ] {
        report.same_cluster(&victim_ep, &args, &normalise_run);
    }
    report.same_cluster(
        &all,
        &["endpoint", "health", timeout, "-w", "json"],
        &normalise_unordered,
    );
    cluster.resume(victim);

    // A killed member first.
    cluster.kill9(victim);
    report.same_cluster(
        &victim_first,
        &["member", "list", "-w", "table"],
        &normalise_run,
    );
    report.same_cluster(&victim_first, &["get", "k"], &normalise_run);
    for w in FORMATS {
        report.same_cluster(
            &all,
            &["endpoint", "status", timeout, "-w", w],
            &normalise_status,
        );
        report.same_cluster(
            &all,
            &["endpoint", "health", timeout, "-w", w],
            &normalise_unordered,
        );
        report.same_cluster(
            &all,
            &["endpoint", "hashkv", timeout, "-w", w],
            &normalise_run,
        );
        report.same_cluster(
            &survivor_ep,
            &["endpoint", "health", "--cluster", timeout, "-w", w],
            &normalise_unordered,
        );
        report.same_cluster(
            &survivor_ep,
            &["endpoint", "status", "--cluster", timeout, "-w", w],
            &normalise_status,
        );
    }
    let victim_id = format!("{:x}", cluster.member(victim).id().expect("ID"));
    report.same_cluster(
        &victim_first,
        &["move-leader", &victim_id, timeout],
        &normalise_run,
    );
    report.assert_clean();
}

#[test]
fn normalisation_only_touches_what_varies() {
    assert_eq!(
        normalise_status(b"127.0.0.1:1, 2e12, 3.4.23, 25 kB, true, false, 2, 39, 40, \n"),
        "127.0.0.1:1, 2e12, 3.4.23, N, true, false, 2, N, N, \n"
    );
    assert_eq!(
        normalise_status(br#"{"header":{"revision":3},"dbSize":24576,"raftIndex":9}"#),
        r#"{"header":{"revision":N},"dbSize":N,"raftIndex":N}"#
    );
    assert_eq!(
        normalise_unordered(b"b took = 1ms\na took = 2.5ms\n"),
        "\na took = D\nb took = D"
    );
    assert_eq!(
        normalise_unordered(
            b"[{\"endpoint\":\"b\",\"took\":\"1ms\"},{\"endpoint\":\"a\",\"took\":\"2s\"}]\n"
        ),
        "[{\"endpoint\":\"a\",\"took\":\"D\"},{\"endpoint\":\"b\",\"took\":\"D\"}]\n"
    );
    assert_eq!(
        sort_member_arrays(r#"{"members":[{"ID":2,"peerURLs":["b"]},{"ID":1}],"x":[3,1]}"#),
        r#"{"members":[{"ID":1},{"ID":2,"peerURLs":["b"]}],"x":[3,1]}"#
    );
    assert_eq!(
        sort_initial_cluster("ETCD_INITIAL_CLUSTER=\"m2=b,m1=a\"\n"),
        "ETCD_INITIAL_CLUSTER=\"m1=a,m2=b\"\n"
    );
    // MemberListResponse{header{cluster_id:1 raft_term:2}, members[{ID:5 name:"m" isLearner}]}
    let pb = [
        0x0a, 0x04, 0x08, 0x01, 0x20, 0x02, 0x12, 0x07, 0x08, 0x05, 0x12, 0x01, b'm', 0x28, 0x01,
    ];
    assert_eq!(
        protobuf_as_json(&pb, 2).as_deref(),
        Some(
            r#"protobuf {"header":{"cluster_id":1,"raft_term":2},"members":[{"ID":5,"name":"m","isLearner":true}]}"#
        )
    );
    let subject = Subject {
        ids: vec![(0x14b0fb79d3ce6e5, "NEW_ID")],
        texts: vec![],
        term: false,
    };
    assert_eq!(
        subject.normalise(b"Member  14b0fb79d3ce6e5 added to cluster 1\n", 3),
        "Member           NEW_ID added to cluster 1\n"
    );
    assert_eq!(
        subject.normalise(b"Leadership transferred from 14b0fb79d3ce6e5 to 1\n", 3),
        "Leadership transferred from NEW_ID to 1\n"
    );
    assert_eq!(
        normalise_run(b"panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\tx.go:1\n"),
        "panic: boom\n\ngoroutine 1 [running]:\n"
    );
}
