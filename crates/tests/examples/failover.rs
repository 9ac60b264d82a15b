//! Leader failover time of a 3-member cluster: the leader is killed with SIGKILL again and
//! again, and each time the time from the kill until a write through a surviving member
//! succeeds is measured. Prints every sample, then the median and the 90th percentile in
//! milliseconds and in election timeouts. A measurement, never a test: nothing is asserted.
//!
//! ```sh
//! cargo build --release --bin cairn      # for --target cairn
//! cargo run --release -p cairn-tests --example failover -- --target etcd --kills 10
//! ```
//!
//! Flags: `--target etcd|cairn` (default: `CAIRN_TEST_TARGET`, else cairn), `--kills N`
//! (10), `--heartbeat-interval MS` (100), `--election-timeout MS` (1000).

use std::time::{Duration, Instant};

use cairn_tests::Target;
use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{client_runtime, connect_with_retry};
use etcd_client::Client;

/// A new write attempt starts this often (round-robin over the survivors) until one succeeds:
/// the resolution of the measurement.
const ATTEMPT_INTERVAL: Duration = Duration::from_millis(10);
/// Each attempt's bound; attempts sent before the new leader is known may hang until then.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

struct Arguments {
    target: Target,
    kills: usize,
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
}

fn parse_arguments() -> Arguments {
    let defaults = ClusterOptions::default();
    let mut arguments = Arguments {
        target: defaults.target,
        kills: 10,
        heartbeat_interval_ms: defaults.heartbeat_interval_ms,
        election_timeout_ms: defaults.election_timeout_ms,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag} {value}: not a number")))
        };
        match flag.as_str() {
            "--target" => {
                arguments.target = match value.as_str() {
                    "etcd" => Target::Etcd,
                    "cairn" => Target::Cairn,
                    other => usage(&format!("unknown target {other}")),
                }
            }
            "--kills" => arguments.kills = number() as usize,
            "--heartbeat-interval" => arguments.heartbeat_interval_ms = number(),
            "--election-timeout" => arguments.election_timeout_ms = number(),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    arguments
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: failover [--target etcd|cairn] [--kills N] \
         [--heartbeat-interval MS] [--election-timeout MS]"
    );
    std::process::exit(2);
}

/// Time from `killed_at` until the first write through one of `clients` succeeds.
async fn first_successful_write(clients: &[Client], killed_at: Instant) -> Duration {
    let (succeeded, mut first) = tokio::sync::mpsc::unbounded_channel();
    let mut attempt = 0usize;
    loop {
        let mut client = clients[attempt % clients.len()].clone();
        let succeeded = succeeded.clone();
        tokio::spawn(async move {
            let put = client.put("failover/probe", format!("attempt {attempt}"), None);
            if let Ok(Ok(_)) = tokio::time::timeout(ATTEMPT_TIMEOUT, put).await {
                let _ = succeeded.send(killed_at.elapsed());
            }
        });
        attempt += 1;
        tokio::select! {
            Some(elapsed) = first.recv() => return elapsed,
            () = tokio::time::sleep(ATTEMPT_INTERVAL) => {}
        }
    }
}

/// The value at quantile `q` (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let arguments = parse_arguments();
    let mut cluster = Cluster::start(ClusterOptions {
        target: arguments.target,
        heartbeat_interval_ms: arguments.heartbeat_interval_ms,
        election_timeout_ms: arguments.election_timeout_ms,
        ..ClusterOptions::default()
    });
    let runtime = client_runtime();
    let election_timeout = Duration::from_millis(arguments.election_timeout_ms);
    let mut samples = Vec::with_capacity(arguments.kills);
    for kill in 1..=arguments.kills {
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
        let survivors: Vec<String> = cluster
            .running()
            .into_iter()
            .filter(|&i| i != leader)
            .map(|i| cluster.member(i).url())
            .collect();
        // Connected, and a write through each survivor done, before the kill: the measure
        // is failover, not connection set-up.
        let clients: Vec<Client> = runtime.block_on(async {
            let mut clients = Vec::new();
            for url in &survivors {
                let mut client = connect_with_retry(url, ATTEMPT_TIMEOUT).await;
                client
                    .put("failover/probe", "before the kill", None)
                    .await
                    .unwrap_or_else(|e| panic!("write through {url} before the kill: {e}"));
                clients.push(client);
            }
            clients
        });
        let killed_at = Instant::now();
        cluster.kill9(leader);
        let elapsed = runtime.block_on(first_successful_write(&clients, killed_at));
        println!(
            "kill {kill}: {} was leader; a write succeeded {:.0} ms after the kill",
            cluster.member(leader).name(),
            elapsed.as_secs_f64() * 1e3
        );
        samples.push(elapsed);
        cluster.restart(leader);
        // Let the restarted member catch up before the next leader is killed.
        std::thread::sleep(election_timeout);
    }
    samples.sort();
    let in_timeouts = |d: Duration| d.as_secs_f64() / election_timeout.as_secs_f64();
    let median = quantile(&samples, 0.5);
    let p90 = quantile(&samples, 0.9);
    println!(
        "{:?}, {} kills, heartbeat {} ms, election timeout {} ms: median {:.0} ms \
         ({:.2} election timeouts), p90 {:.0} ms ({:.2} election timeouts)",
        arguments.target,
        samples.len(),
        arguments.heartbeat_interval_ms,
        arguments.election_timeout_ms,
        median.as_secs_f64() * 1e3,
        in_timeouts(median),
        p90.as_secs_f64() * 1e3,
        in_timeouts(p90),
    );
}
