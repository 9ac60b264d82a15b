//! `cairn-bench`: a load generator for any etcd v3 endpoint, modelled on
//! etcd's `tools/benchmark`, so Cairn and etcd are measured by one client.
//!
//! It must only ever depend on the wire contract (`cairn-proto`) and speak
//! plain gRPC: never on a Cairn server crate, or the comparison is unfair.

mod cli;
mod histogram;
mod report;
mod runner;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;

use cairn_proto::etcdserverpb::PutRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use clap::Parser;

use crate::cli::{Cli, Command, Consistency};
use crate::report::Report;
use crate::runner::Connect;
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
    };

    let channels = runner::connect(&Connect {
        endpoints: endpoints.clone(),
        conns: cli.conns,
        dial_timeout: cli.dial_timeout,
        request_timeout: cli.request_timeout,
    })
    .await?;
    if let Some(put) = write_first {
        KvClient::new(channels[0].clone())
            .put(put)
            .await
            .map_err(|s| format!("--write-first put failed: {:?}: {}", s.code(), s.message()))?;
    }

    let name = workload.name();
    let outcome = runner::run(&channels, cli.clients, cli.total, Arc::new(workload)).await;
    let report = Report {
        workload: name,
        endpoints: &endpoints,
        clients: cli.clients,
        conns: cli.conns,
        outcome: &outcome,
    };
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if outcome.error_count() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
