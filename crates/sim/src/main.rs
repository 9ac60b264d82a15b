//! `cairn-sim`: runs the deterministic cluster simulation over many seeds, or one seed with
//! a trace, and prints a summary. Exits 1 on the first failing seed, printing the command
//! that replays it.

use std::process::ExitCode;
use std::time::Instant;

use cairn_sim::{InjectedBug, Options, Report, reproduce_command, run};

const USAGE: &str = "\
usage: cairn-sim [--seeds N] [--start S] [--seed S] [--nodes 3|5] [--ops N] [--trace] [--keep-going]
                 [--install-crashes] [--known-bug unsynced-membership]
                 [--inject forget-synced|ack-before-sync|stale-reads|diverge|forged-history]

  --seeds N       run seeds S..S+N (default 100), S from --start (default 0)
  --seed S        run seed S only
  --nodes N       members per cluster (default: the seed picks 3 or 5)
  --ops N         client operations per run at most (default 150)
  --trace         print every run's events to stderr
  --keep-going    run every seed even after one fails, then list the failures
  --install-crashes  crash members inside every install of a leader's backend
  --known-bug B   reproduce a bug of Cairn's the simulation found (tests/known_bugs.rs)
  --inject B      plant a bug, to see the checks catch it";

struct Args {
    start: u64,
    count: u64,
    keep_going: bool,
    options: Options,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        start: 0,
        count: 100,
        keep_going: false,
        options: Options::default(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|e| format!("{flag} {text:?}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => args.count = number(value()?)?,
            "--start" => args.start = number(value()?)?,
            "--seed" => {
                args.start = number(value()?)?;
                args.count = 1;
            }
            "--nodes" => {
                let members = number(value()?)? as usize;
                if members != 3 && members != 5 {
                    return Err(format!("--nodes must be 3 or 5, not {members}"));
                }
                args.options.members = Some(members);
            }
            "--ops" => args.options.operations_max = number(value()?)?,
            "--trace" => args.options.trace = true,
            "--keep-going" => args.keep_going = true,
            "--install-crashes" => args.options.crash_inside_installs = true,
            "--known-bug" => match value()?.as_str() {
                "unsynced-membership" => args.options.known_bugs.unsynced_membership = true,
                other => return Err(format!("unknown known bug {other:?}")),
            },
            "--inject" => {
                let name = value()?;
                let bug =
                    InjectedBug::from_name(&name).ok_or_else(|| format!("unknown bug {name:?}"))?;
                args.options.injected_bug = Some(bug);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("cairn-sim: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut total = Report::default();
    let mut failed = 0u64;
    for seed in args.start..args.start + args.count {
        match run(seed, &args.options) {
            Ok(report) => total.accumulate(&report),
            Err(failure) => {
                eprintln!("{failure}");
                eprintln!("reproduce: {}", reproduce_command(seed, &args.options));
                failed += 1;
                if !args.keep_going {
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}), {} failed, in {elapsed:.1} s ({:.1} seeds/s)",
        args.count,
        args.start,
        args.start + args.count,
        failed,
        args.count as f64 / elapsed.max(1e-9)
    );
    println!(
        "simulated {:.0} s in {} steps: {} elections, {} crashes, {} pauses, {} partitions, {} membership changes, {} leader transfers asked, {} snapshots taken, {} installed",
        total.simulated_us as f64 / 1e6,
        total.steps,
        total.elections,
        total.crashes,
        total.pauses,
        total.partitions,
        total.membership_changes,
        total.leader_transfers,
        total.snapshots_taken,
        total.snapshots_installed
    );
    println!(
        "messages: {} sent, {} dropped; client operations: {} issued, {} checked ({} with unknown outcome)",
        total.messages_sent,
        total.messages_dropped,
        total.operations_issued,
        total.operations_checked,
        total.operations_unknown
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
