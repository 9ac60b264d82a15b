//! `watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]` and
//! `watch -i`, as etcdctl 3.4's `watch_command.go` over clientv3's watcher: one gRPC
//! stream carries every watch, `created` responses are not shown, a canceled watch is
//! reported on stderr, and a lost stream is reopened, resuming after the last revision
//! seen.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::time::Duration;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::kv::prefix_end;
use super::{Ctx, stderr, stdout};
use crate::flags::{self, Flags};
use crate::printer::Printer;
use crate::txn_syntax::argify;
use crate::{Fail, exit, gofmt};

const BAD_ARGS_NUM: &str = "bad number of arguments";
const BAD_ARGS_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_ARGS_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";

fn bad_args(msg: &str) -> Fail {
    Fail::new(exit::BAD_ARGS, msg)
}

/// The options of one watch (`watchPrefix`, `watchRev`, `watchPrevKey`, and etcdctl 3.5's
/// `progressNotify`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opts {
    pub prefix: bool,
    pub rev: i64,
    pub prev_kv: bool,
    pub progress_notify: bool,
}

impl Opts {
    fn from_flags(f: &Flags) -> Opts {
        Opts {
            prefix: f.bool("prefix"),
            rev: f.int("rev"),
            prev_kv: f.bool("prev-kv"),
            progress_notify: f.bool("progress-notify"),
        }
    }
}

/// etcdctl's `parseWatchArgs` for the command line (`os_args` is the whole `os.Args`,
/// `command_args` what cobra left as positional arguments): the watch's key and range end,
/// and the command to run per event.
pub fn parse_watch_args(
    os_args: &[String],
    command_args: &[String],
    env_key: &str,
    env_range: &str,
) -> Result<(Vec<String>, Vec<String>), Fail> {
    let mut raw: &[String] = os_args;
    if let Some(i) = raw.iter().position(|a| a == "watch") {
        raw = &raw[i + 1..];
    }
    let mut watch_args = command_args.to_vec();
    let exec_idx = raw.iter().position(|a| a == "--");
    if let Some(i) = exec_idx
        && i == raw.len() - 1
    {
        return Err(bad_args(BAD_ARGS_SEPARATOR));
    }
    if exec_idx.is_none() && raw.is_empty() && env_key.is_empty() {
        return Err(bad_args(BAD_ARGS_NUM));
    }
    if let Some(exec_idx) = exec_idx
        && !env_key.is_empty()
    {
        // `ETCDCTL_WATCH_KEY=foo watch foo -- echo 1` has one argument too many.
        let mut ridx = raw.len() as isize - 1;
        for w in watch_args.iter().rev() {
            if ridx >= 0 && *w == raw[ridx as usize] {
                ridx -= 1;
                continue;
            }
            if ridx == exec_idx as isize {
                return Err(bad_args(BAD_ARGS_CONFLICT_ENV));
            }
        }
    }
    if exec_idx.is_none() && !watch_args.is_empty() && !env_key.is_empty() {
        return Err(bad_args(BAD_ARGS_CONFLICT_ENV));
    }
    let exec: Vec<String> = match exec_idx {
        Some(i) => raw[i + 1..].to_vec(),
        None => vec![],
    };
    with_env(&mut watch_args, env_key, env_range);
    if let Some(first) = exec.first() {
        let end = watch_args.iter().rposition(|w| w == first).unwrap_or(0);
        watch_args.truncate(end);
    }
    Ok((watch_args, exec))
}

fn with_env(watch_args: &mut Vec<String>, env_key: &str, env_range: &str) {
    if !env_key.is_empty() {
        let mut ranges = vec![env_key.to_string()];
        if !env_range.is_empty() {
            ranges.push(env_range.to_string());
        }
        ranges.append(watch_args);
        *watch_args = ranges;
    }
}

/// `parseWatchArgs` for one interactive line (`args` starts with `watch`). An error here
/// ends etcdctl.
pub fn parse_interactive(
    args: &[String],
    env_key: &str,
    env_range: &str,
) -> Result<(Vec<String>, Vec<String>, Opts), Fail> {
    let words = &args[1..];
    let exec_idx = words.iter().position(|a| a == "--");
    if let Some(i) = exec_idx
        && i == words.len() - 1
    {
        return Err(bad_args(BAD_ARGS_SEPARATOR));
    }
    let (_, p_args) = flags::parse_watch_line(words).map_err(|e| bad_args(&e))?;
    if exec_idx.is_none() && env_key.is_empty() && p_args.is_empty() {
        return Err(bad_args(BAD_ARGS_NUM));
    }
    if exec_idx.is_none() && !p_args.is_empty() && !env_key.is_empty() {
        return Err(bad_args(BAD_ARGS_CONFLICT_ENV));
    }
    let exec: Vec<String> = match exec_idx {
        Some(i) => words[i + 1..].to_vec(),
        None => vec![],
    };
    let (line_flags, mut watch_args) = flags::parse_watch_line(words).map_err(|e| bad_args(&e))?;
    with_env(&mut watch_args, env_key, env_range);
    if let Some(first) = exec.first() {
        let end = watch_args.iter().rposition(|w| w == first).unwrap_or(0);
        watch_args.truncate(end);
    }
    Ok((watch_args, exec, Opts::from_flags(&line_flags)))
}

/// `getWatchChan`'s checks and clientv3's create request.
pub fn create_request(args: &[String], o: Opts) -> Result<WatchCreateRequest, String> {
    let Some(key) = args.first() else {
        return Err(BAD_ARGS_NUM.to_string());
    };
    let mut req = WatchCreateRequest {
        key: gofmt::go_bytes(key),
        start_revision: o.rev,
        prev_kv: o.prev_kv,
        progress_notify: o.progress_notify,
        ..Default::default()
    };
    if args.len() == 2 {
        if o.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".to_string());
        }
        req.range_end = gofmt::go_bytes(&args[1]);
    }
    if o.prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_end(&req.key);
        }
    }
    Ok(req)
}

/// One watch on the shared stream.
struct Watcher {
    req: WatchCreateRequest,
    exec: Vec<String>,
    /// The revision after the last one delivered, for resuming on a new stream.
    next_rev: i64,
}

/// clientv3's `WatchResponse.Err()`.
fn cancel_error(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        "etcdserver: mvcc: required revision has been compacted".to_string()
    } else if !r.cancel_reason.is_empty() {
        // etcdctl 3.4.23 prints the server's reason as it is.
        r.cancel_reason.clone()
    } else {
        "etcdserver: mvcc: required revision is a future revision".to_string()
    }
}

/// `IsProgressNotify`.
fn is_progress_notify(r: &WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.is_some_and(|h| h.revision != 0)
}

/// The exec-command's failure as Go's `exec.Cmd.Run` reports it.
async fn run_exec(exec: &[String], env: &[(String, String)]) -> Result<(), String> {
    let name = &exec[0];
    let program = if name.contains('/') {
        std::path::PathBuf::from(name)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            });
        match found {
            Some(p) => p,
            None => {
                return Err(format!(
                    "exec: {}: executable file not found in $PATH",
                    gofmt::quote_str(name)
                ));
            }
        }
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg0(name)
        .args(&exec[1..])
        .env_remove("ETCDCTL_API")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    let status = match cmd.status().await {
        Ok(s) => s,
        Err(e) => {
            let text = e.to_string();
            let text = text
                .split(" (os error")
                .next()
                .unwrap_or(&text)
                .to_lowercase();
            return Err(format!("fork/exec {}: {text}", program.display()));
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(format!("exit status {c}")),
        (None, Some(sig)) => Err(format!("signal: {}", signal_name(sig))),
        _ => Err("unknown exit status".to_string()),
    }
}

/// Go's `syscall.Signal.String()` for the common signals.
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// The watch stream and its watchers.
struct Hub {
    ch: Channel,
    printer: Printer,
    tx: Option<mpsc::Sender<WatchRequest>>,
    rx: Option<tonic::Streaming<WatchResponse>>,
    /// Creates sent, waiting for their `created` response, in order.
    pending: VecDeque<Watcher>,
    active: HashMap<i64, Watcher>,
}

fn create(req: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    }
}

impl Hub {
    fn new(ch: Channel, printer: Printer) -> Hub {
        Hub {
            ch,
            printer,
            tx: None,
            rx: None,
            pending: VecDeque::new(),
            active: HashMap::new(),
        }
    }

    /// Opens the stream (again), re-creating every watch from where it was. Nothing
    /// changes until the stream is open, so this may be dropped while it waits.
    async fn open(&mut self, extra: Option<WatchRequest>) {
        loop {
            let (tx, rx) = mpsc::channel(4096);
            let mut ids: Vec<i64> = self.active.keys().copied().collect();
            ids.sort_unstable();
            let reqs = self
                .pending
                .iter()
                .chain(ids.iter().filter_map(|id| self.active.get(id)))
                .map(|w| {
                    let mut req = w.req.clone();
                    if w.next_rev > 0 {
                        req.start_revision = w.next_rev;
                    }
                    req
                });
            for req in reqs {
                let _ = tx.try_send(create(req));
            }
            // The call returns only once the server answers: something must be queued.
            if let Some(x) = &extra {
                let _ = tx.try_send(x.clone());
            }
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert(
                "hasleader",
                tonic::metadata::MetadataValue::from_static("true"),
            );
            match WatchClient::new(self.ch.clone()).watch(request).await {
                Ok(resp) => {
                    for id in ids {
                        if let Some(w) = self.active.remove(&id) {
                            self.pending.push_back(w);
                        }
                    }
                    self.tx = Some(tx);
                    self.rx = Some(resp.into_inner());
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn send(&mut self, req: WatchRequest) {
        match &self.tx {
            Some(tx) => {
                let _ = tx.send(req).await;
            }
            None => self.open(Some(req)).await,
        }
    }

    async fn add(&mut self, req: WatchCreateRequest, exec: Vec<String>) {
        self.pending.push_back(Watcher {
            req: req.clone(),
            exec,
            next_rev: 0,
        });
        match &self.tx {
            Some(tx) => {
                let _ = tx.send(create(req)).await;
            }
            None => self.open(None).await,
        }
    }

    /// The next response, reopening a lost stream.
    async fn next(&mut self) -> WatchResponse {
        loop {
            if let Some(rx) = self.rx.as_mut() {
                if let Ok(Some(r)) = rx.message().await {
                    return r;
                }
                self.rx = None;
                self.tx = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.open(None).await;
            } else {
                std::future::pending::<()>().await;
            }
        }
    }

    /// `printWatchCh` for one response; `Err` ends etcdctl. Returns whether a watch was
    /// canceled.
    async fn handle(&mut self, r: WatchResponse) -> Result<bool, Fail> {
        if r.created && (r.watch_id == -1 || (r.canceled && !r.cancel_reason.is_empty())) {
            // A create failed: clientv3 hands this watch a made-up canceled response with
            // the reason (and no header or event slice); the other watches go on.
            let Some(w) = self.pending.pop_front() else {
                return Ok(false);
            };
            let closed = WatchResponse {
                canceled: true,
                cancel_reason: r.cancel_reason.clone(),
                ..Default::default()
            };
            self.deliver(&closed, &w, true).await?;
            return Ok(true);
        }
        if r.created {
            let Some(w) = self.pending.pop_front() else {
                return Ok(false);
            };
            if !r.canceled {
                self.active.insert(r.watch_id, w);
                return Ok(false);
            }
            self.deliver(&r, &w, false).await?;
            return Ok(true);
        }
        if r.watch_id == -1 {
            // A progress response to `progress`: every watcher gets it.
            let mut ids: Vec<i64> = self.active.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(w) = self.active.remove(&id) {
                    let res = self.deliver(&r, &w, false).await;
                    self.active.insert(id, w);
                    res?;
                }
            }
            return Ok(false);
        }
        let Some(mut w) = self.active.remove(&r.watch_id) else {
            return Ok(false);
        };
        if r.canceled && r.compact_revision == 0 {
            // clientv3 closes the watch's channel without handing this response on: the
            // watch just ends.
            return Ok(true);
        }
        if let Some(last) = r.events.last().and_then(|e| e.kv.as_ref()) {
            w.next_rev = last.mod_revision + 1;
        }
        let res = self.deliver(&r, &w, false).await;
        let canceled = r.canceled;
        if !canceled {
            self.active.insert(r.watch_id, w);
        }
        res.map(|()| canceled)
    }

    async fn deliver(&self, r: &WatchResponse, w: &Watcher, events_nil: bool) -> Result<(), Fail> {
        if r.canceled {
            stderr(format!("watch was canceled ({})\n", cancel_error(r)).as_bytes());
        }
        if is_progress_notify(r) {
            let rev = r.header.map(|h| h.revision).unwrap_or_default();
            stdout(format!("progress notify: {rev}\n").as_bytes());
        }
        stdout(&self.printer.watch(r, events_nil)?);
        if w.exec.is_empty() {
            return Ok(());
        }
        let rev = r.header.map(|h| h.revision).unwrap_or_default();
        for ev in &r.events {
            let kv = ev.kv.clone().unwrap_or_default();
            let mut vars = Vec::new();
            vars.push(("ETCD_WATCH_REVISION".into(), rev.to_string()));
            vars.push((
                "ETCD_WATCH_EVENT_TYPE".into(),
                gofmt::quote_str(&crate::printer::event_type(ev.r#type)),
            ));
            vars.push(("ETCD_WATCH_KEY".into(), gofmt::quote(&kv.key)));
            vars.push(("ETCD_WATCH_VALUE".into(), gofmt::quote(&kv.value)));
            if let Err(e) = run_exec(&w.exec, &vars).await {
                let quoted: Vec<String> = w.exec.iter().map(|a| gofmt::quote_str(a)).collect();
                return Err(Fail {
                    stderr_before: format!("command [{}] error ({e})\n", quoted.join(" ")),
                    silent: true,
                    ..Fail::new(exit::ERROR, "")
                });
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.active.is_empty()
    }
}

fn env_var(ctx: &Ctx, name: &str) -> String {
    ctx.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub async fn watch(ctx: &mut Ctx) -> Result<(), Fail> {
    let env_key = env_var(ctx, "ETCDCTL_WATCH_KEY");
    let env_range = env_var(ctx, "ETCDCTL_WATCH_RANGE_END");
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(bad_args(&format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            gofmt::quote_str(&env_range)
        )));
    }
    // The watch command's own variables are not "unrecognized" for it.
    ctx.env
        .retain(|(k, _)| k != "ETCDCTL_WATCH_KEY" && k != "ETCDCTL_WATCH_RANGE_END");
    if ctx.flags.bool("interactive") {
        return interactive(ctx, &env_key, &env_range).await;
    }
    let mut os_args = vec!["etcdctl".to_string()];
    os_args.extend(ctx.raw_args.iter().cloned());
    let (watch_args, exec) = parse_watch_args(&os_args, &ctx.args, &env_key, &env_range)?;
    let (mut client, printer) = ctx.must_client()?;
    let req =
        create_request(&watch_args, Opts::from_flags(&ctx.flags)).map_err(|e| bad_args(&e))?;
    let ch = client.channel().await;
    let mut hub = Hub::new(ch, printer);
    hub.add(req, exec).await;
    loop {
        let r = hub.next().await;
        hub.handle(r).await?;
        if hub.is_empty() {
            return Err(Fail::new(
                exit::INTERRUPTED,
                "watch is canceled by the server",
            ));
        }
    }
}

/// Lines of stdin, read on a thread; `None` at the end (or on a read error).
fn stdin_lines() -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut buf = Vec::new();
            match input.read_until(b'\n', &mut buf) {
                Ok(_) if buf.ends_with(b"\n") => {
                    buf.pop();
                    if tx.blocking_send(Some(gofmt::go_string(&buf))).is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = tx.blocking_send(None);
                    return;
                }
            }
        }
    });
    rx
}

/// What the interactive loop asks of the watch stream.
enum HubCmd {
    Watch(WatchCreateRequest, Vec<String>),
    Progress,
}

async fn interactive(ctx: &mut Ctx, env_key: &str, env_range: &str) -> Result<(), Fail> {
    let (mut client, printer) = ctx.must_client()?;
    // The watches live in their own task, as clientv3's watcher goroutines: reading stdin
    // goes on while they connect, and its end ends cairnctl whatever they are doing.
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<HubCmd>();
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<Fail>(1);
    tokio::spawn(async move {
        let ch = client.channel().await;
        let mut hub = Hub::new(ch, printer);
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(HubCmd::Watch(req, exec)) => hub.add(req, exec).await,
                    Some(HubCmd::Progress) => {
                        hub.send(WatchRequest {
                            request_union: Some(RequestUnion::ProgressRequest(
                                WatchProgressRequest {},
                            )),
                        })
                        .await
                    }
                    None => return,
                },
                r = hub.next() => {
                    if let Err(fail) = hub.handle(r).await {
                        let _ = fatal_tx.send(fail).await;
                        return;
                    }
                }
            }
        }
    });
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(Some(line)) = line else {
                    return Err(Fail::new(
                        exit::INVALID_INPUT,
                        "Error reading watch request line: EOF",
                    ));
                };
                if let Some(cmd) = interactive_line(&line, env_key, env_range)? {
                    let _ = cmd_tx.send(cmd);
                }
            }
            Some(fail) = fatal_rx.recv() => return Err(fail),
        }
    }
}

/// One line of `watch -i`: complaints go to stderr, errors end cairnctl.
fn interactive_line(line: &str, env_key: &str, env_range: &str) -> Result<Option<HubCmd>, Fail> {
    let args = argify(line)?;
    let say = |msg: String| stderr(gofmt::go_bytes(&msg).as_slice());
    match args.first().map(String::as_str) {
        None => say(format!(
            "Invalid command: {line} (watch and progress supported)\n"
        )),
        Some("watch") => {
            if args.len() < 2 && env_key.is_empty() {
                say(format!(
                    "Invalid command {line} (command type or key is not provided)\n"
                ));
                return Ok(None);
            }
            let (watch_args, exec, opts) = parse_interactive(&args, env_key, env_range)?;
            match create_request(&watch_args, opts) {
                Ok(req) => return Ok(Some(HubCmd::Watch(req, exec))),
                Err(e) => say(format!("Invalid command {line} ({e})\n")),
            }
        }
        Some("progress") => return Ok(Some(HubCmd::Progress)),
        Some(_) => say(format!("Invalid command {line} (only support watch)\n")),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn watch_args_like_etcdctl() {
        let os = s(&["etcdctl", "watch", "foo", "--", "echo", "hi"]);
        let (w, e) = parse_watch_args(&os, &s(&["foo", "echo", "hi"]), "", "").unwrap();
        assert_eq!((w, e), (s(&["foo"]), s(&["echo", "hi"])));
        let os = s(&["etcdctl", "watch", "foo", "--"]);
        let err = parse_watch_args(&os, &s(&["foo"]), "", "").unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (128, BAD_ARGS_SEPARATOR));
        let os = s(&["etcdctl", "watch", "foo"]);
        let err = parse_watch_args(&os, &s(&["foo"]), "k", "").unwrap_err();
        assert_eq!(err.msg, BAD_ARGS_CONFLICT_ENV);
        let os = s(&["etcdctl", "watch", "foo", "--", "echo"]);
        let err = parse_watch_args(&os, &s(&["foo", "echo"]), "k", "").unwrap_err();
        assert_eq!(err.msg, BAD_ARGS_CONFLICT_ENV);
        let os = s(&["etcdctl", "watch", "--", "echo"]);
        let (w, e) = parse_watch_args(&os, &s(&["echo"]), "k", "z").unwrap();
        assert_eq!((w, e), (s(&["k", "z"]), s(&["echo"])));
        let os = s(&["etcdctl", "watch", "--", "echo"]);
        let (w, _) = parse_watch_args(&os, &s(&["echo"]), "", "").unwrap();
        assert_eq!(
            create_request(&w, Opts::default()).unwrap_err(),
            BAD_ARGS_NUM
        );
    }

    #[test]
    fn interactive_lines() {
        let (w, e, o) =
            parse_interactive(&s(&["watch", "--prefix", "a", "--rev", "3"]), "", "").unwrap();
        assert_eq!((w, e), (s(&["a"]), vec![]));
        assert_eq!(
            o,
            Opts {
                prefix: true,
                rev: 3,
                prev_kv: false,
                progress_notify: false,
            }
        );
        let (w, e, _) = parse_interactive(&s(&["watch", "a", "--", "echo", "x"]), "", "").unwrap();
        assert_eq!((w, e), (s(&["a"]), s(&["echo", "x"])));
        let err = parse_interactive(&s(&["watch", "--foo"]), "", "").unwrap_err();
        assert_eq!(err.msg, "unknown flag: --foo");
        let r = create_request(
            &s(&[""]),
            Opts {
                prefix: true,
                ..Opts::default()
            },
        )
        .unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
    }
}
