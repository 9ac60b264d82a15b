//! Cairn's write-ahead log on disk, through the real binary: a torn tail (what a crash in the
//! middle of a write leaves) is cut off on restart and nothing acknowledged is lost; damage in
//! the middle of the log stops the server with an error naming the file and offset, instead
//! of silently serving a store with a hole in its history.
//!
//! These pin Cairn's own WAL format, so they run against Cairn only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{Server, Target, etcdctl, ok_stdout, workspace_bin};

/// A record's header: payload length (u32 LE), kind (u8), payload CRC (u32), header CRC (u32).
const HEADER_LEN: usize = 13;

fn first_segment(data_dir: &Path) -> PathBuf {
    data_dir.join("member/wal/0000000000000001.wal")
}

/// Byte offsets where each record starts, and where the records end.
fn record_offsets(segment: &[u8]) -> (Vec<usize>, usize) {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= segment.len() && segment[at..at + HEADER_LEN].iter().any(|b| *b != 0) {
        starts.push(at);
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().expect("four bytes")) as usize;
        at += HEADER_LEN + len;
    }
    (starts, at)
}

fn write_keys(server: &Server, count: usize) {
    for i in 0..count {
        let key = format!("key-{i:03}");
        assert_eq!(
            ok_stdout(&etcdctl(&server.endpoint(), &["put", &key, "value"])),
            "OK\n"
        );
    }
}

fn count_keys(server: &Server) -> String {
    ok_stdout(&etcdctl(
        &server.endpoint(),
        &["get", "key-", "--prefix", "--keys-only"],
    ))
    .lines()
    .filter(|l| !l.is_empty())
    .count()
    .to_string()
}

fn cairn_only() -> bool {
    if Target::from_env() == Target::Etcd {
        eprintln!("skipped: these tests pin Cairn's own WAL format");
        return false;
    }
    true
}

#[test]
fn a_torn_tail_is_cut_off_on_restart_and_every_acknowledged_write_survives() {
    if !cairn_only() {
        return;
    }
    let mut server = Server::start();
    write_keys(&server, 20);
    server.kill9();

    // A crash in the middle of appending leaves the start of a record and nothing after it.
    let path = first_segment(server.data_dir());
    let mut segment = fs::read(&path).expect("read the WAL segment");
    let (starts, end) = record_offsets(&segment);
    assert!(
        starts.len() > 20,
        "expected a record per write at least, found {}",
        starts.len()
    );
    segment[end..end + 9].copy_from_slice(&[0x30, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
    fs::write(&path, &segment).expect("tear the tail");

    server.restart();
    assert_eq!(
        count_keys(&server),
        "20",
        "every acknowledged write is still there"
    );
    assert!(
        server.log().contains("torn tail"),
        "the repair is logged:\n{}",
        server.log()
    );
    write_keys(&server, 1);
    server.restart();
    assert_eq!(
        count_keys(&server),
        "20",
        "key-000 was overwritten: still 20 keys"
    );
    let (after, _) = record_offsets(&fs::read(&path).expect("read again"));
    assert!(
        after.len() > starts.len(),
        "new records were appended where the torn one was"
    );
}

#[test]
fn damage_in_the_middle_of_the_log_stops_the_server_with_the_file_and_offset() {
    if !cairn_only() {
        return;
    }
    let mut server = Server::start();
    write_keys(&server, 5);
    server.kill9();

    let path = first_segment(server.data_dir());
    let mut segment = fs::read(&path).expect("read the WAL segment");
    let (starts, _) = record_offsets(&segment);
    let second = starts[1];
    segment[second + HEADER_LEN] ^= 0xff; // a payload byte of a record followed by others
    fs::write(&path, &segment).expect("damage a record");

    let mut child = Command::new(workspace_bin("cairn"))
        .args(["--data-dir", &server.data_dir().to_string_lossy()])
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--log-format",
            "console",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn kept running on a corrupt WAL");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("collect stderr");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !status.success(),
        "cairn must refuse a corrupt WAL; stderr:\n{stderr}"
    );
    let expected = format!("corrupt WAL segment 0000000000000001.wal at offset {second}");
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
}
