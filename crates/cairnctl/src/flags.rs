//! Command-line parsing with the semantics (and error texts) of cobra and pflag as etcdctl
//! 3.4 uses them: flags anywhere between arguments, `--` ends them, `--name=value`,
//! `--name value`, `-w json`, `-wjson`, bool flags without a value, and
//! `ETCDCTL_<FLAG>` environment variables for the global flags.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::gofmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Dur,
    Slice,
}

#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: &'static str,
}

const fn def(name: &'static str, kind: Kind, default: &'static str) -> Def {
    Def {
        name,
        short: None,
        kind,
        default,
    }
}

/// The root's persistent flags, inherited by every command.
pub static GLOBAL: &[Def] = &[
    def("cacert", Kind::Str, ""),
    def("cert", Kind::Str, ""),
    def("command-timeout", Kind::Dur, "5s"),
    def("debug", Kind::Bool, "false"),
    def("dial-timeout", Kind::Dur, "2s"),
    Def {
        name: "discovery-srv",
        short: Some('d'),
        kind: Kind::Str,
        default: "",
    },
    def("discovery-srv-name", Kind::Str, ""),
    def("endpoints", Kind::Slice, "127.0.0.1:2379"),
    def("hex", Kind::Bool, "false"),
    def("insecure-discovery", Kind::Bool, "true"),
    def("insecure-skip-tls-verify", Kind::Bool, "false"),
    def("insecure-transport", Kind::Bool, "true"),
    def("keepalive-time", Kind::Dur, "2s"),
    def("keepalive-timeout", Kind::Dur, "6s"),
    def("key", Kind::Str, ""),
    def("password", Kind::Str, ""),
    def("user", Kind::Str, ""),
    Def {
        name: "write-out",
        short: Some('w'),
        kind: Kind::Str,
        default: "simple",
    },
];

static HELP: Def = Def {
    name: "help",
    short: Some('h'),
    kind: Kind::Bool,
    default: "false",
};

pub static GET: &[Def] = &[
    def("consistency", Kind::Str, "l"),
    def("from-key", Kind::Bool, "false"),
    def("keys-only", Kind::Bool, "false"),
    def("limit", Kind::Int, "0"),
    def("order", Kind::Str, ""),
    def("prefix", Kind::Bool, "false"),
    def("print-value-only", Kind::Bool, "false"),
    def("rev", Kind::Int, "0"),
    def("sort-by", Kind::Str, ""),
];

pub static PUT: &[Def] = &[
    def("ignore-lease", Kind::Bool, "false"),
    def("ignore-value", Kind::Bool, "false"),
    def("lease", Kind::Str, "0"),
    def("prev-kv", Kind::Bool, "false"),
];

pub static DEL: &[Def] = &[
    def("from-key", Kind::Bool, "false"),
    def("prefix", Kind::Bool, "false"),
    def("prev-kv", Kind::Bool, "false"),
];

pub static TXN: &[Def] = &[Def {
    name: "interactive",
    short: Some('i'),
    kind: Kind::Bool,
    default: "false",
}];

pub static COMPACTION: &[Def] = &[def("physical", Kind::Bool, "false")];

pub static WATCH: &[Def] = &[
    Def {
        name: "interactive",
        short: Some('i'),
        kind: Kind::Bool,
        default: "false",
    },
    def("prefix", Kind::Bool, "false"),
    def("prev-kv", Kind::Bool, "false"),
    // etcdctl 3.5's; 3.4 refuses it as unknown.
    def("progress-notify", Kind::Bool, "false"),
    def("rev", Kind::Int, "0"),
];

pub static LEASE_TIMETOLIVE: &[Def] = &[def("keys", Kind::Bool, "false")];

pub static LEASE_KEEP_ALIVE: &[Def] = &[def("once", Kind::Bool, "false")];

/// The `endpoint` command's persistent flags.
pub static ENDPOINT: &[Def] = &[def("cluster", Kind::Bool, "false")];

pub static ENDPOINT_HASHKV: &[Def] = &[def("rev", Kind::Int, "0")];

pub static MEMBER_ADD: &[Def] = &[
    def("learner", Kind::Bool, "false"),
    def("peer-urls", Kind::Str, ""),
];

pub static MEMBER_UPDATE: &[Def] = &[def("peer-urls", Kind::Str, "")];

/// The commands cairnctl knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Root,
    Get,
    Put,
    Del,
    Txn,
    Compaction,
    Endpoint,
    EndpointHealth,
    EndpointStatus,
    EndpointHashKv,
    MoveLeader,
    Watch,
    Lease,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseList,
    LeaseKeepAlive,
    Member,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberList,
    MemberPromote,
    Version,
    /// cobra's `help [command]`.
    Help,
}

impl Cmd {
    /// Local flags, then the inherited ones.
    fn flag_sets(self) -> (Vec<&'static [Def]>, Vec<&'static [Def]>) {
        match self {
            Cmd::Root => (vec![GLOBAL], vec![]),
            Cmd::Get => (vec![GET], vec![GLOBAL]),
            Cmd::Put => (vec![PUT], vec![GLOBAL]),
            Cmd::Del => (vec![DEL], vec![GLOBAL]),
            Cmd::Txn => (vec![TXN], vec![GLOBAL]),
            Cmd::Compaction => (vec![COMPACTION], vec![GLOBAL]),
            Cmd::Endpoint => (vec![ENDPOINT], vec![GLOBAL]),
            Cmd::EndpointHealth | Cmd::EndpointStatus => (vec![], vec![ENDPOINT, GLOBAL]),
            Cmd::EndpointHashKv => (vec![ENDPOINT_HASHKV], vec![ENDPOINT, GLOBAL]),
            Cmd::MemberAdd => (vec![MEMBER_ADD], vec![GLOBAL]),
            Cmd::MemberUpdate => (vec![MEMBER_UPDATE], vec![GLOBAL]),
            Cmd::Member
            | Cmd::MemberRemove
            | Cmd::MemberList
            | Cmd::MemberPromote
            | Cmd::MoveLeader => (vec![], vec![GLOBAL]),
            Cmd::Watch => (vec![WATCH], vec![GLOBAL]),
            Cmd::LeaseTimeToLive => (vec![LEASE_TIMETOLIVE], vec![GLOBAL]),
            Cmd::LeaseKeepAlive => (vec![LEASE_KEEP_ALIVE], vec![GLOBAL]),
            Cmd::Lease | Cmd::LeaseGrant | Cmd::LeaseRevoke | Cmd::LeaseList => {
                (vec![], vec![GLOBAL])
            }
            Cmd::Version | Cmd::Help => (vec![], vec![GLOBAL]),
        }
    }

    /// etcdctl's usage text for this command (printed on `--help` and flag errors).
    pub fn usage(self) -> &'static str {
        match self {
            Cmd::Root | Cmd::Help => include_str!("usage/root.txt"),
            Cmd::Get => include_str!("usage/get.txt"),
            Cmd::Put => include_str!("usage/put.txt"),
            Cmd::Del => include_str!("usage/del.txt"),
            Cmd::Txn => include_str!("usage/txn.txt"),
            Cmd::Compaction => include_str!("usage/compaction.txt"),
            Cmd::Endpoint => include_str!("usage/endpoint.txt"),
            Cmd::EndpointHealth => include_str!("usage/endpoint_health.txt"),
            Cmd::EndpointStatus => include_str!("usage/endpoint_status.txt"),
            Cmd::EndpointHashKv => include_str!("usage/endpoint_hashkv.txt"),
            Cmd::MoveLeader => include_str!("usage/move_leader.txt"),
            Cmd::Watch => include_str!("usage/watch.txt"),
            Cmd::Lease => include_str!("usage/lease.txt"),
            Cmd::LeaseGrant => include_str!("usage/lease_grant.txt"),
            Cmd::LeaseRevoke => include_str!("usage/lease_revoke.txt"),
            Cmd::LeaseTimeToLive => include_str!("usage/lease_timetolive.txt"),
            Cmd::LeaseList => include_str!("usage/lease_list.txt"),
            Cmd::LeaseKeepAlive => include_str!("usage/lease_keep_alive.txt"),
            Cmd::Member => include_str!("usage/member.txt"),
            Cmd::MemberAdd => include_str!("usage/member_add.txt"),
            Cmd::MemberRemove => include_str!("usage/member_remove.txt"),
            Cmd::MemberUpdate => include_str!("usage/member_update.txt"),
            Cmd::MemberList => include_str!("usage/member_list.txt"),
            Cmd::MemberPromote => include_str!("usage/member_promote.txt"),
            Cmd::Version => include_str!("usage/version.txt"),
        }
    }
}

/// etcdctl's top-level commands in the order it adds them (cobra adds `help` and
/// `completion`); the order of cobra's "Did you mean this?" suggestions.
const ROOT_COMMANDS: &[&str] = &[
    "get",
    "put",
    "del",
    "txn",
    "compaction",
    "alarm",
    "defrag",
    "endpoint",
    "move-leader",
    "watch",
    "version",
    "lease",
    "member",
    "snapshot",
    "make-mirror",
    "migrate",
    "lock",
    "elect",
    "auth",
    "user",
    "role",
    "check",
    "help",
    "completion",
];

/// `endpoint`'s subcommands.
const ENDPOINT_COMMANDS: &[&str] = &["health", "status", "hashkv"];

/// `member`'s subcommands, in the order etcdctl adds them.
const MEMBER_COMMANDS: &[&str] = &["add", "remove", "update", "list", "promote"];

/// `lease`'s subcommands, in the order etcdctl adds them.
const LEASE_COMMANDS: &[&str] = &["grant", "revoke", "timetolive", "list", "keep-alive"];

/// cobra's `findNext` with etcdctl's prefix matching: the command named `word`, or the
/// only one whose name starts with it.
fn find_next(word: &str, commands: &[&'static str]) -> Option<&'static str> {
    if let Some(c) = commands.iter().find(|c| **c == word) {
        return Some(c);
    }
    let mut matches = commands.iter().filter(|c| c.starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The command named by `words` (each possibly a prefix) and how many words name it.
/// `Err` is the (resolved) name of an etcdctl command cairnctl does not implement, or
/// `None` for an unknown command.
fn find(words: &[String]) -> Result<(Cmd, usize), Option<String>> {
    let Some(first) = words.first() else {
        return Ok((Cmd::Root, 0));
    };
    let name = find_next(first, ROOT_COMMANDS).ok_or(None)?;
    Ok(match name {
        "get" => (Cmd::Get, 1),
        "put" => (Cmd::Put, 1),
        "del" => (Cmd::Del, 1),
        "txn" => (Cmd::Txn, 1),
        "compaction" => (Cmd::Compaction, 1),
        "version" => (Cmd::Version, 1),
        "help" => (Cmd::Help, 1),
        "watch" => (Cmd::Watch, 1),
        "lease" => match words.get(1).and_then(|w| find_next(w, LEASE_COMMANDS)) {
            Some("grant") => (Cmd::LeaseGrant, 2),
            Some("revoke") => (Cmd::LeaseRevoke, 2),
            Some("timetolive") => (Cmd::LeaseTimeToLive, 2),
            Some("list") => (Cmd::LeaseList, 2),
            Some("keep-alive") => (Cmd::LeaseKeepAlive, 2),
            _ => (Cmd::Lease, 1),
        },
        "endpoint" => match words.get(1).and_then(|w| find_next(w, ENDPOINT_COMMANDS)) {
            Some("health") => (Cmd::EndpointHealth, 2),
            Some("status") => (Cmd::EndpointStatus, 2),
            Some("hashkv") => (Cmd::EndpointHashKv, 2),
            _ => (Cmd::Endpoint, 1),
        },
        "member" => match words.get(1).and_then(|w| find_next(w, MEMBER_COMMANDS)) {
            Some("add") => (Cmd::MemberAdd, 2),
            Some("remove") => (Cmd::MemberRemove, 2),
            Some("update") => (Cmd::MemberUpdate, 2),
            Some("list") => (Cmd::MemberList, 2),
            Some("promote") => (Cmd::MemberPromote, 2),
            _ => (Cmd::Member, 1),
        },
        "move-leader" => (Cmd::MoveLeader, 1),
        other => return Err(Some(other.to_string())),
    })
}

#[derive(Clone, Debug)]
enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
    Dur(Duration),
    Slice(Vec<String>),
}

/// Parsed flag values of one command.
#[derive(Debug)]
pub struct Flags {
    defs: Vec<&'static Def>,
    inherited: HashSet<&'static str>,
    values: HashMap<&'static str, Value>,
    changed: HashSet<&'static str>,
}

fn parse_value(d: &Def, raw: &str) -> Result<Value, String> {
    match d.kind {
        Kind::Bool => gofmt::parse_bool(raw).map(Value::Bool),
        Kind::Str => Ok(Value::Str(raw.to_string())),
        Kind::Int => gofmt::parse_int(raw, 0).map(Value::Int),
        Kind::Dur => gofmt::parse_duration(raw).map(Value::Dur),
        Kind::Slice => Ok(Value::Slice(if raw.is_empty() {
            vec![]
        } else {
            raw.split(',').map(str::to_string).collect()
        })),
    }
}

impl Flags {
    fn new(sets: &[&'static [Def]], inherited: &[&'static [Def]]) -> Flags {
        let mut flags = Flags {
            defs: Vec::new(),
            inherited: HashSet::new(),
            values: HashMap::new(),
            changed: HashSet::new(),
        };
        for d in sets.iter().flat_map(|s| s.iter()).chain([&HELP]) {
            flags.defs.push(d);
        }
        for d in inherited.iter().flat_map(|s| s.iter()) {
            flags.defs.push(d);
            flags.inherited.insert(d.name);
        }
        for d in &flags.defs {
            let v = parse_value(d, d.default).expect("valid default");
            flags.values.insert(d.name, v);
        }
        flags
    }

    fn lookup(&self, name: &str) -> Option<&'static Def> {
        self.defs.iter().copied().find(|d| d.name == name)
    }

    fn lookup_short(&self, c: char) -> Option<&'static Def> {
        self.defs.iter().copied().find(|d| d.short == Some(c))
    }

    /// pflag's `Set`: the error names the flag as `-w, --write-out` or `--rev`.
    fn set(&mut self, d: &'static Def, raw: &str) -> Result<(), String> {
        let v = parse_value(d, raw).map_err(|e| {
            let name = match d.short {
                Some(c) => format!("-{c}, --{}", d.name),
                None => format!("--{}", d.name),
            };
            format!(
                "invalid argument {} for {} flag: {e}",
                gofmt::quote_str(raw),
                gofmt::quote_str(&name)
            )
        })?;
        let v = match (v, self.changed.contains(d.name), self.values.get(d.name)) {
            (Value::Slice(mut more), true, Some(Value::Slice(old))) => {
                let mut all = old.clone();
                all.append(&mut more);
                Value::Slice(all)
            }
            (v, _, _) => v,
        };
        self.values.insert(d.name, v);
        self.changed.insert(d.name);
        Ok(())
    }

    pub fn changed(&self, name: &str) -> bool {
        self.changed.contains(name)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    pub fn str(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(Value::Str(s)) => s,
            _ => "",
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }

    pub fn dur(&self, name: &str) -> Duration {
        match self.values.get(name) {
            Some(Value::Dur(d)) => *d,
            _ => Duration::ZERO,
        }
    }

    pub fn slice(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(Value::Slice(s)) => s.clone(),
            _ => vec![],
        }
    }

    /// `flags.SetPflagsFromEnv("ETCDCTL", cmd.InheritedFlags())`: sets every inherited flag
    /// not given on the command line from `ETCDCTL_<NAME>`, then returns capnslog's lines
    /// about unknown `ETCDCTL_*` variables, and `Err` with the fatal line when a variable is
    /// shadowed by a flag.
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<Vec<String>, String> {
        let env_name = |name: &str| format!("ETCDCTL_{}", name.to_uppercase().replace('-', "_"));
        let mut used = HashSet::new();
        let mut already = HashSet::new();
        let inherited: Vec<&'static Def> = self
            .defs
            .iter()
            .copied()
            .filter(|d| self.inherited.contains(d.name))
            .collect();
        for d in inherited {
            let key = env_name(d.name);
            if self.changed(d.name) {
                already.insert(key);
                continue;
            }
            if let Some((_, val)) = env.iter().find(|(k, _)| *k == key)
                && !val.is_empty()
            {
                used.insert(key);
                // etcdctl 3.4 ignores a bad value here.
                let _ = self.set(d, val);
            }
        }
        let mut lines = Vec::new();
        for (k, v) in env {
            if used.contains(k) {
                continue;
            }
            if already.contains(k) {
                return Err(format!(
                    "{} C | pkg/flags: conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                    capnslog_now(),
                    gofmt::quote_str(k)
                ));
            }
            if k.starts_with("ETCDCTL_") {
                lines.push(format!(
                    "{} W | pkg/flags: unrecognized environment variable {k}={v}",
                    capnslog_now()
                ));
            }
        }
        Ok(lines)
    }
}

/// Local time as capnslog prints it; cairnctl assumes UTC like the test machines.
fn capnslog_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (date, time) = civil(now.as_secs());
    format!("{date} {time}.{:06}", now.subsec_micros())
}

/// `(YYYY-MM-DD, hh:mm:ss)` of a Unix time in UTC.
pub fn civil(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Why parsing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A flag error: cobra prints `Error: <msg>`, the command's usage, and etcdctl again
    /// `Error: <msg>`; exit status 1.
    Flag(Cmd, String),
    /// `unknown command "x" for "etcdctl"` with suggestions.
    UnknownCommand(String),
    /// An etcdctl command cairnctl does not implement.
    Unsupported(String),
}

/// The command found in `args`, its flags and its positional arguments.
#[derive(Debug)]
pub struct Parsed {
    pub cmd: Cmd,
    pub flags: Flags,
    pub args: Vec<String>,
}

/// cobra's `Find`: the command words among `args`, skipping flags and their values.
fn command_words(args: &[String]) -> Vec<String> {
    let all: Vec<&Def> = GLOBAL
        .iter()
        .chain(ENDPOINT)
        .chain(MEMBER_ADD)
        .chain([&HELP])
        .collect();
    let takes_value = |name: &str| {
        all.iter()
            .find(|d| d.name == name)
            .is_none_or(|d| d.kind != Kind::Bool)
    };
    let short_takes_value = |c: char| {
        all.iter()
            .find(|d| d.short == Some(c))
            .is_none_or(|d| d.kind != Kind::Bool)
    };
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        if s == "--" {
            break;
        }
        if let Some(name) = s.strip_prefix("--") {
            if !name.contains('=') && takes_value(name) {
                i += 1;
            }
        } else if s.len() == 2 && s.starts_with('-') {
            if short_takes_value(s.chars().nth(1).unwrap_or('-')) {
                i += 1;
            }
        } else if !s.is_empty() && !s.starts_with('-') {
            words.push(s.clone());
        }
    }
    words
}

/// Finds the command and parses its flags like cobra would.
pub fn parse(args: &[String]) -> Result<Parsed, ParseError> {
    let words = command_words(args);
    let (cmd, consumed) = find(&words).map_err(|e| match e {
        Some(name) => ParseError::Unsupported(name),
        None => ParseError::UnknownCommand(words[0].clone()),
    })?;
    let (local, inherited) = cmd.flag_sets();
    let mut flags = Flags::new(&local, &inherited);
    let mut positional = parse_flags(&mut flags, args).map_err(|e| ParseError::Flag(cmd, e))?;
    // Drop the command words themselves (the first `consumed` positional words).
    for w in words.iter().take(consumed) {
        if let Some(pos) = positional.iter().position(|p| p == w) {
            positional.remove(pos);
        }
    }
    Ok(Parsed {
        cmd,
        flags,
        args: positional,
    })
}

/// pflag's `Parse` with interspersed flags; returns the positional arguments.
fn parse_flags(flags: &mut Flags, args: &[String]) -> Result<Vec<String>, String> {
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        if s.len() < 2 || !s.starts_with('-') {
            positional.push(s.clone());
            continue;
        }
        if s == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = s.strip_prefix("--") {
            if body.starts_with('-') || body.starts_with('=') {
                return Err(format!("bad flag syntax: {s}"));
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let d = flags
                .lookup(name)
                .ok_or_else(|| format!("unknown flag: --{name}"))?;
            match value {
                Some(v) => flags.set(d, v)?,
                None if d.kind == Kind::Bool => flags.set(d, "true")?,
                None if i < args.len() => {
                    i += 1;
                    flags.set(d, &args[i - 1])?
                }
                None => return Err(format!("flag needs an argument: {s}")),
            }
            continue;
        }
        let shorthands = &s[1..];
        let mut rest = shorthands;
        while let Some(c) = rest.chars().next() {
            let d = flags
                .lookup_short(c)
                .ok_or_else(|| format!("unknown shorthand flag: '{c}' in -{shorthands}"))?;
            let after = &rest[c.len_utf8()..];
            if let Some(v) = after.strip_prefix('=') {
                flags.set(d, v)?;
                rest = "";
            } else if d.kind == Kind::Bool {
                flags.set(d, "true")?;
                rest = after;
            } else if !after.is_empty() {
                flags.set(d, after)?;
                rest = "";
            } else if i < args.len() {
                i += 1;
                flags.set(d, &args[i - 1])?;
                rest = "";
            } else {
                return Err(format!("flag needs an argument: '{c}' in -{shorthands}"));
            }
        }
    }
    Ok(positional)
}

/// Parses one txn request line's words (`get`/`put`/`del` and its flags) as the ad-hoc
/// cobra root etcdctl builds for it. `Err(Some(usage))` is a flag error (cobra prints
/// that usage), `Err(None)` an unknown command.
pub fn parse_txn_op(words: &[String]) -> Result<(Cmd, Flags, Vec<String>), Option<&'static str>> {
    // cobra's prefix matching holds here too (`g k` is `get k`); cobra's own `help` is
    // left out: etcdctl waits forever for the request it never gets.
    let name = words
        .first()
        .and_then(|w| find_next(w, &["put", "get", "del"]));
    let (cmd, defs, usage) = match name {
        Some("get") => (Cmd::Get, GET, include_str!("usage/txn_op_get.txt")),
        Some("put") => (Cmd::Put, PUT, include_str!("usage/txn_op_put.txt")),
        Some("del") => (Cmd::Del, DEL, include_str!("usage/txn_op_del.txt")),
        _ => return Err(None),
    };
    let mut flags = Flags::new(&[defs], &[]);
    let args = parse_flags(&mut flags, &words[1..]).map_err(|_| Some(usage))?;
    Ok((cmd, flags, args))
}

/// Parses the words of an interactive `watch` line (after `watch`) with a fresh flag set
/// of the `watch` command's own flags, as etcdctl's `NewWatchCommand().Flags()`.
pub fn parse_watch_line(words: &[String]) -> Result<(Flags, Vec<String>), String> {
    let mut flags = Flags::new(&[WATCH], &[]);
    let args = parse_flags(&mut flags, words)?;
    Ok((flags, args))
}

/// The command a `help` topic names, if cairnctl knows it.
pub fn help_topic(words: &[String]) -> Option<Cmd> {
    match find(words) {
        Ok((Cmd::Help, _)) => None,
        Ok((cmd, _)) => Some(cmd),
        Err(_) => None,
    }
}

/// cobra's unknown-command error text, with its "Did you mean this?" suggestions.
pub fn unknown_command_error(name: &str) -> String {
    let mut err = format!("unknown command {} for \"etcdctl\"", gofmt::quote_str(name));
    let suggestions: Vec<&str> = ROOT_COMMANDS
        .iter()
        .copied()
        .filter(|c| *c != "help")
        .filter(|c| levenshtein(name, c) <= 2 || c.starts_with(&name.to_lowercase()))
        .collect();
    if !suggestions.is_empty() {
        err.push_str("\n\nDid you mean this?\n");
        for s in suggestions {
            err.push_str(&format!("\t{s}\n"));
        }
    }
    err
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_command_and_flags_anywhere() {
        let p = parse(&strings(&[
            "--endpoints=a:1,b:2",
            "get",
            "k",
            "--prefix",
            "-w",
            "json",
            "--rev=0x10",
        ]))
        .unwrap();
        assert_eq!(p.cmd, Cmd::Get);
        assert_eq!(p.args, strings(&["k"]));
        assert!(p.flags.bool("prefix"));
        assert_eq!(p.flags.str("write-out"), "json");
        assert_eq!(p.flags.int("rev"), 16);
        assert_eq!(p.flags.slice("endpoints"), strings(&["a:1", "b:2"]));
    }

    #[test]
    fn command_prefixes() {
        let cmd = |v: &[&str]| parse(&strings(v)).map(|p| (p.cmd, p.args));
        assert_eq!(cmd(&["ge", "k"]).unwrap(), (Cmd::Get, strings(&["k"])));
        assert_eq!(cmd(&["t"]).unwrap().0, Cmd::Txn);
        assert_eq!(cmd(&["endpoint", "st"]).unwrap().0, Cmd::EndpointStatus);
        assert_eq!(cmd(&["endpoint", "h"]).unwrap().0, Cmd::Endpoint);
        assert_eq!(cmd(&["endpoint", "ha"]).unwrap().0, Cmd::EndpointHashKv);
        assert_eq!(cmd(&["member", "p", "1"]).unwrap().0, Cmd::MemberPromote);
        assert_eq!(cmd(&["member", "bogus"]).unwrap().0, Cmd::Member);
        assert_eq!(cmd(&["mo", "1"]).unwrap().0, Cmd::MoveLeader);
        assert_eq!(
            cmd(&["de"]).unwrap_err(),
            ParseError::UnknownCommand("de".into())
        );
        assert_eq!(
            cmd(&["s"]).unwrap_err(),
            ParseError::Unsupported("snapshot".into())
        );
        assert_eq!(
            unknown_command_error("e"),
            "unknown command \"e\" for \"etcdctl\"\n\nDid you mean this?\n\tget\n\tdel\n\tendpoint\n\telect\n"
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = parse(&strings(&["put", "--", "k", "-v"])).unwrap();
        assert_eq!(p.args, strings(&["k", "-v"]));
        let p = parse(&strings(&["endpoint", "status", "-wtable"])).unwrap();
        assert_eq!(p.cmd, Cmd::EndpointStatus);
        assert_eq!(p.flags.str("write-out"), "table");
    }

    #[test]
    fn pflag_error_texts() {
        let err = |v: &[&str]| match parse(&strings(v)) {
            Err(ParseError::Flag(_, e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(&["get", "a", "--count-only"]),
            "unknown flag: --count-only"
        );
        assert_eq!(
            err(&["get", "a", "--dial-timeout=zz"]),
            r#"invalid argument "zz" for "--dial-timeout" flag: time: invalid duration "zz""#
        );
        assert_eq!(err(&["get", "a", "--rev"]), "flag needs an argument: --rev");
        assert_eq!(
            err(&["get", "a", "-x"]),
            "unknown shorthand flag: 'x' in -x"
        );
        assert_eq!(
            err(&["get", "a", "-w"]),
            "flag needs an argument: 'w' in -w"
        );
    }

    #[test]
    fn env_sets_unchanged_global_flags() {
        let mut p = parse(&strings(&["get", "a"])).unwrap();
        let env = vec![
            ("ETCDCTL_WRITE_OUT".to_string(), "json".to_string()),
            ("ETCDCTL_PREFIX".to_string(), "true".to_string()),
        ];
        let lines = p.flags.apply_env(&env).unwrap();
        assert_eq!(p.flags.str("write-out"), "json");
        assert!(!p.flags.bool("prefix"));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .ends_with(" W | pkg/flags: unrecognized environment variable ETCDCTL_PREFIX=true")
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(civil(1_795_230_000).0, "2026-11-21");
        assert_eq!(civil(951_782_400).0, "2000-02-29");
    }
}
