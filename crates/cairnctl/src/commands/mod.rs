//! The commands, each following its etcdctl 3.4 function step by step (argument checks,
//! then `mustClientFromCmd`, the call, the printer), so that errors come out in the same
//! order with the same exit statuses.

pub mod endpoint;
pub mod kv;
pub mod lease;
pub mod member;
pub mod move_leader;
pub mod txn;
pub mod watch;

use std::io::Write as _;
use std::time::Duration;

use crate::client::Client;
use crate::flags::Flags;
use crate::printer::{Format, Printer};
use crate::{Fail, exit};

/// A parsed command line and the process environment (without `ETCDCTL_API`).
pub struct Ctx {
    pub flags: Flags,
    pub args: Vec<String>,
    /// The whole command line (etcdctl's `watch` looks at `os.Args` for `--`).
    pub raw_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// etcdctl 3.4.23 reads the environment once per command (its warnings appear once
    /// even where the command builds two clients).
    pub env_applied: bool,
}

impl Ctx {
    pub fn command_timeout(&self) -> Option<Duration> {
        Some(self.flags.dur("command-timeout"))
    }

    pub fn dial_timeout(&self) -> Duration {
        self.flags.dur("dial-timeout")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.flags.slice("endpoints")
    }

    /// `flags.SetPflagsFromEnv("ETCDCTL", cmd.InheritedFlags())`, with capnslog's warnings.
    pub fn apply_env(&mut self) -> Result<(), Fail> {
        if std::mem::replace(&mut self.env_applied, true) {
            return Ok(());
        }
        match self.flags.apply_env(&self.env) {
            Ok(lines) => {
                for l in lines {
                    stderr(format!("{l}\n").as_bytes());
                }
                Ok(())
            }
            Err(fatal) => Err(Fail {
                stderr_before: format!("{fatal}\n"),
                silent: true,
                ..Fail::new(exit::ERROR, "")
            }),
        }
    }

    /// `initDisplayFromCmd`.
    pub fn printer(&self) -> Result<Printer, Fail> {
        Ok(Printer {
            format: Format::from_name(self.flags.str("write-out"))?,
            hex: self.flags.bool("hex"),
            value_only: false,
        })
    }

    /// Refuses what cairnctl cannot do as etcdctl would (TLS, authentication, DNS
    /// discovery) rather than silently doing something else.
    pub fn check_supported(&self) -> Result<(), Fail> {
        let unsupported = |what: &str| {
            Err(Fail::new(
                exit::ERROR,
                format!("cairnctl does not support {what} yet"),
            ))
        };
        for flag in ["cacert", "cert", "key"] {
            if !self.flags.str(flag).is_empty() {
                return unsupported("TLS (--cacert, --cert, --key)");
            }
        }
        if !self.flags.bool("insecure-transport")
            || self.endpoints().iter().any(|e| e.starts_with("https://"))
        {
            return unsupported("TLS (https endpoints, --insecure-transport=false)");
        }
        if !self.flags.str("user").is_empty() || !self.flags.str("password").is_empty() {
            return unsupported("authentication (--user, --password)");
        }
        if !self.flags.str("discovery-srv").is_empty() {
            return unsupported("DNS discovery (--discovery-srv)");
        }
        Ok(())
    }

    /// `mustClientFromCmd`: environment, printer, then a (lazily connecting) client.
    pub fn must_client(&mut self) -> Result<(Client, Printer), Fail> {
        self.apply_env()?;
        self.check_supported()?;
        let printer = self.printer()?;
        Ok((Client::new(self.endpoints(), self.dial_timeout()), printer))
    }
}

/// Writes to stdout as etcdctl does (raw bytes: keys and values need not be UTF-8); a
/// closed pipe ends cairnctl as it ends a Go program.
pub fn stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        crate::die_of_sigpipe();
    }
}

/// Writes to stderr, like [`stdout`].
pub fn stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    if let Err(e) = err.write_all(bytes).and_then(|()| err.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        crate::die_of_sigpipe();
    }
}
