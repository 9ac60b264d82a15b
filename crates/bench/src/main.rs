//! `cairn-bench`: a load generator for any etcd v3 endpoint, modelled on
//! etcd's `tools/benchmark`, so Cairn and etcd are measured by one client.
//!
//! It must only ever depend on the wire contract (`cairn-proto`) and speak
//! plain gRPC: never on a Cairn server crate, or the comparison is unfair.

mod cli;
mod histogram;
mod lease;
mod report;
mod runner;
mod watch;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;

use cairn_proto::etcdserverpb::PutRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use clap::Parser;

use crate::cli::{Cli, Command, Consistency};
use crate::report::{Extra, Report};
use crate::runner::{Connect, Outcome};
use crate::workload::{Rng, Workload};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        runtime.worker_threads(cli.threads);
    }
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    match runtime.block_on(bench(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one benchmark. Exit code 0 if every request succeeded, 1 if some
/// failed (the report says which), `Err` if it could not run at all.
async fn bench(cli: Cli) -> Result<ExitCode, String> {
    let endpoints = cli::endpoints(&cli.endpoints)?;
    if cli.clients == 0 || cli.conns == 0 {
        return Err("--clients and --conns must be at least 1".into());
    }
    let connect = Connect {
        endpoints: endpoints.clone(),
        conns: cli.conns,
        dial_timeout: cli.dial_timeout,
        request_timeout: cli.request_timeout,
    };
    let out = Out {
        endpoints: &endpoints,
        conns: cli.conns,
        json: cli.json,
    };
    let mut rng = Rng::new(0x00C0_FFEE);
    // An untimed put before the run, so `range` has something to read.
    let mut write_first = None;
    let workload = match cli.command {
        Command::Put(w) => Workload::Put {
            keys: w.keys.keys(w.sequential_keys)?,
            value: rng.bytes(w.keys.val_size),
        },
        Command::TxnPut(w) => {
            let keys = w.keys.keys(true)?;
            if w.txn_ops == 0 || w.txn_ops as u64 > keys.space {
                return Err("--txn-ops must be between 1 and --key-space-size".into());
            }
            Workload::TxnPut {
                keys,
                value: rng.bytes(w.keys.val_size),
                ops: w.txn_ops,
            }
        }
        Command::Range(r) => {
            write_first = r.write_first.map(|size| PutRequest {
                key: r.key.clone().into_bytes(),
                value: rng.bytes(size),
                ..Default::default()
            });
            Workload::Range {
                key: r.key.into_bytes(),
                range_end: r.range_end.unwrap_or_default().into_bytes(),
                serializable: r.consistency == Consistency::S,
            }
        }
        Command::WatchLatency(w) => {
            let cfg = watch::Config {
                watchers: w.watchers,
                streams: w.streams,
                key: w.key.into_bytes(),
                prefix: w.prefix,
                val_size: w.val_size,
                total: cli.total,
                rate: w.rate,
                in_flight: cli.clients,
                timeout: cli.request_timeout,
            };
            cfg.validate()?;
            // One more connection, the writer's own.
            let channels = runner::connect(&Connect {
                conns: cli.conns + 1,
                ..connect
            })
            .await?;
            let m = watch::run(&channels, cfg).await;
            let clients = if w.rate > 0.0 { cli.clients } else { 1 };
            return Ok(out.finish("watch-latency", clients, "events", &m.outcome, &m.extra));
        }
        Command::LeaseKeepalive(l) => {
            let cfg = lease::Config {
                leases: l.leases,
                ttl: l.ttl,
                streams: l.streams,
                clients: cli.clients,
                total: cli.total,
                timeout: cli.request_timeout,
            };
            cfg.validate()?;
            let channels = runner::connect(&connect).await?;
            let m = lease::run(&channels, cfg).await?;
            return Ok(out.finish(
                "lease-keepalive",
                cli.clients,
                "keep-alives",
                &m.outcome,
                &m.extra,
            ));
        }
    };

    let channels = runner::connect(&connect).await?;
    if let Some(put) = write_first {
        KvClient::new(channels[0].clone())
            .put(put)
            .await
            .map_err(|s| format!("--write-first put failed: {:?}: {}", s.code(), s.message()))?;
    }

    let name = workload.name();
    let outcome = runner::run(&channels, cli.clients, cli.total, Arc::new(workload)).await;
    Ok(out.finish(name, cli.clients, "requests", &outcome, &[]))
}

/// The run-wide settings a report shows.
struct Out<'a> {
    endpoints: &'a [String],
    conns: usize,
    json: bool,
}

impl Out<'_> {
    /// Prints the report; exit code 0 if nothing failed, 1 otherwise.
    fn finish(
        &self,
        workload: &str,
        clients: usize,
        unit: &str,
        outcome: &Outcome,
        extra: &[Extra],
    ) -> ExitCode {
        let report = Report {
            workload,
            endpoints: self.endpoints,
            clients,
            conns: self.conns,
            unit,
            outcome,
            extra,
        };
        if self.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.text());
        }
        if outcome.error_count() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
