//! `cairnctl`: an etcdctl-compatible command-line client (etcdctl 3.4's commands, flags,
//! environment variables, output formats, error texts and exit statuses, byte for byte).
//!
//! It speaks to servers only through the wire contract in `cairn-proto`, exactly as etcdctl
//! does, so it works against real etcd too. It must never depend on Cairn's server crates.

mod client;
mod commands;
mod flags;
mod gofmt;
mod peer_urls;
mod printer;
mod txn_syntax;

use flags::{Cmd, ParseError};

/// etcdctl's exit statuses.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const INVALID_INPUT: i32 = 3;
    pub const BAD_FEATURE: i32 = 4;
    pub const BAD_CONNECTION: i32 = 2;
    pub const INTERRUPTED: i32 = 5;
    pub const BAD_ARGS: i32 = 128;
    /// A Go panic.
    pub const PANIC: i32 = 2;
}

/// How a command ends when it does not succeed: etcdctl's `ExitWithError`.
#[derive(Debug, Default)]
pub struct Fail {
    pub code: i32,
    /// Printed as `Error: <msg>` on stderr.
    pub msg: String,
    /// Printed on stderr before the error line.
    pub stderr_before: String,
    /// A Go panic: printed as `panic: <msg>` instead.
    pub panic: bool,
    /// Exit without the `Error:` line (etcdctl's bare `os.Exit`).
    pub silent: bool,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: msg.into(),
            ..Fail::default()
        }
    }

    pub fn panic(msg: &str) -> Fail {
        Fail {
            panic: true,
            ..Fail::new(exit::PANIC, msg)
        }
    }

    fn report(&self) -> i32 {
        let mut err = self.stderr_before.clone();
        if self.panic {
            err.push_str(&format!("panic: {}\n\ngoroutine 1 [running]:\n", self.msg));
        } else if !self.silent {
            err.push_str(&format!("Error: {}\n", self.msg));
        }
        commands::stderr(&gofmt::go_bytes(&err));
        self.code
    }
}

const VERSION: &str = "etcdctl version: 3.4.23\nAPI version: 3.4\n";

fn run(args: Vec<String>, env: Vec<(String, String)>) -> i32 {
    let parsed = match flags::parse(&args) {
        Ok(p) => p,
        Err(ParseError::Flag(cmd, msg)) => {
            // cobra prints the error and the usage (etcdctl's usage goes to stdout), then
            // etcdctl prints the error again.
            commands::stdout(cmd.usage().as_bytes());
            let err = format!("Error: {msg}\n");
            commands::stderr(format!("{err}\n{err}").as_bytes());
            return exit::ERROR;
        }
        Err(ParseError::Unsupported(name)) => {
            return Fail::new(
                exit::ERROR,
                format!("cairnctl does not implement etcdctl's {name:?} command"),
            )
            .report();
        }
        Err(ParseError::UnknownCommand(name)) => {
            let err = flags::unknown_command_error(&name);
            commands::stderr(
                format!("Error: {err}\nRun 'etcdctl --help' for usage.\nError: {err}\n").as_bytes(),
            );
            return exit::ERROR;
        }
    };
    if parsed.cmd == Cmd::Help && !parsed.flags.bool("help") {
        return help(&parsed.args);
    }
    if parsed.flags.bool("help")
        || matches!(
            parsed.cmd,
            Cmd::Root | Cmd::Endpoint | Cmd::Lease | Cmd::Member
        )
    {
        commands::stdout(parsed.cmd.usage().as_bytes());
        return exit::SUCCESS;
    }
    if parsed.cmd == Cmd::Version {
        commands::stdout(VERSION.as_bytes());
        return exit::SUCCESS;
    }
    let cmd = parsed.cmd;
    let mut ctx = commands::Ctx {
        flags: parsed.flags,
        args: parsed.args,
        raw_args: args,
        env,
        env_applied: false,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Fail::new(exit::ERROR, e.to_string()).report(),
    };
    let result = runtime.block_on(async {
        match cmd {
            Cmd::Get => commands::kv::get(&mut ctx).await,
            Cmd::Put => commands::kv::put(&mut ctx).await,
            Cmd::Del => commands::kv::del(&mut ctx).await,
            Cmd::Compaction => commands::kv::compaction(&mut ctx).await,
            Cmd::Txn => commands::txn::txn(&mut ctx).await,
            Cmd::EndpointHealth => commands::endpoint::health(&mut ctx).await,
            Cmd::EndpointStatus => commands::endpoint::status(&mut ctx).await,
            Cmd::EndpointHashKv => commands::endpoint::hashkv(&mut ctx).await,
            Cmd::MoveLeader => commands::move_leader::move_leader(&mut ctx).await,
            Cmd::MemberAdd => commands::member::add(&mut ctx).await,
            Cmd::MemberRemove => commands::member::remove(&mut ctx).await,
            Cmd::MemberUpdate => commands::member::update(&mut ctx).await,
            Cmd::MemberList => commands::member::list(&mut ctx).await,
            Cmd::MemberPromote => commands::member::promote(&mut ctx).await,
            Cmd::Watch => commands::watch::watch(&mut ctx).await,
            Cmd::LeaseGrant => commands::lease::grant(&mut ctx).await,
            Cmd::LeaseRevoke => commands::lease::revoke(&mut ctx).await,
            Cmd::LeaseTimeToLive => commands::lease::timetolive(&mut ctx).await,
            Cmd::LeaseList => commands::lease::list(&mut ctx).await,
            Cmd::LeaseKeepAlive => commands::lease::keep_alive(&mut ctx).await,
            Cmd::Root | Cmd::Endpoint | Cmd::Lease | Cmd::Member | Cmd::Version | Cmd::Help => {
                Ok(())
            }
        }
    });
    // Do not wait for connections still being set up in the background.
    runtime.shutdown_background();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(fail) => fail.report(),
    }
}

/// cobra's `help [command]`: the command's usage, or for an unknown topic a complaint and
/// the root usage as printed before cobra adds its `--help` flag.
fn help(topic: &[String]) -> i32 {
    match flags::help_topic(topic) {
        Some(cmd) => commands::stdout(cmd.usage().as_bytes()),
        None => {
            let quoted: Vec<String> = topic.iter().map(|t| format!("`{t}`")).collect();
            commands::stderr(format!("Unknown help topic [{}]\n", quoted.join(" ")).as_bytes());
            let usage = Cmd::Root
                .usage()
                .replace("  -h, --help[=false]\t\t\t\thelp for etcdctl\n", "");
            commands::stdout(usage.as_bytes());
        }
    }
    exit::SUCCESS
}

/// Ends the process as a Go program ends when stdout or stderr is a closed pipe
/// (`etcdctl watch k | head -1` after `head` exits): killed by SIGPIPE. Rust ignores
/// SIGPIPE (so sockets and other pipes just fail with EPIPE, as in Go), hence this.
pub fn die_of_sigpipe() -> ! {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
        fn raise(sig: i32) -> i32;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: libc's `signal` and `raise` with a valid signal number and SIG_DFL.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
        raise(SIGPIPE);
    }
    std::process::exit(128 + SIGPIPE)
}

fn main() {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| gofmt::go_string(a.as_bytes()))
        .collect();
    // etcdctl reads and unsets ETCDCTL_API before anything else.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k != "ETCDCTL_API")
        .collect();
    std::process::exit(run(args, env));
}
