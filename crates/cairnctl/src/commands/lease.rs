//! `lease grant|revoke|timetolive|list|keep-alive`, as etcdctl 3.4's `lease_command.go`.

use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest,
};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::{Ctx, stdout};
use crate::client::error_text;
use crate::printer::{Format, Printer};
use crate::{Fail, exit, gofmt};

fn bad_args(msg: &str) -> Fail {
    Fail::new(exit::BAD_ARGS, msg)
}

/// `leaseFromArgs`: a lease ID in hex.
pub fn lease_from_arg(arg: &str) -> Result<i64, Fail> {
    gofmt::parse_int(arg, 16).map_err(|e| {
        Fail::new(
            exit::BAD_ARGS,
            format!("bad lease ID arg ({e}), expecting ID in Hex"),
        )
    })
}

/// A failed call's `Fail` with etcdctl's wrapping of the message and its exit status.
fn rewrap(f: Fail, code: i32, wrap: impl Fn(&str) -> String) -> Fail {
    Fail {
        code,
        msg: wrap(&f.msg),
        ..f
    }
}

pub async fn grant(ctx: &mut Ctx) -> Result<(), Fail> {
    if ctx.args.len() != 1 {
        return Err(bad_args("lease grant command needs TTL argument"));
    }
    let ttl = gofmt::parse_int(&ctx.args[0], 10)
        .map_err(|e| Fail::new(exit::BAD_ARGS, format!("bad TTL ({e})")))?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            LeaseClient::new(ch)
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
        })
        .await
        .map_err(|f| rewrap(f, exit::ERROR, |m| format!("failed to grant lease ({m})")))?;
    stdout(&printer.grant(&resp)?);
    Ok(())
}

pub async fn revoke(ctx: &mut Ctx) -> Result<(), Fail> {
    if ctx.args.len() != 1 {
        return Err(bad_args("lease revoke command needs 1 argument"));
    }
    let id = lease_from_arg(&ctx.args[0])?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            LeaseClient::new(ch)
                .lease_revoke(LeaseRevokeRequest { id })
                .await
        })
        .await
        .map_err(|f| rewrap(f, exit::ERROR, |m| format!("failed to revoke lease ({m})")))?;
    stdout(&printer.revoke(id, &resp)?);
    Ok(())
}

pub async fn timetolive(ctx: &mut Ctx) -> Result<(), Fail> {
    if ctx.args.len() != 1 {
        return Err(bad_args(
            "lease timetolive command needs lease ID as argument",
        ));
    }
    let keys = ctx.flags.bool("keys");
    let (mut client, printer) = ctx.must_client()?;
    let id = lease_from_arg(&ctx.args[0])?;
    let resp = client
        .unary(None, |ch| async move {
            LeaseClient::new(ch)
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await
        })
        .await
        .map_err(|f| rewrap(f, exit::BAD_CONNECTION, str::to_string))?;
    stdout(&printer.time_to_live(&resp, keys)?);
    Ok(())
}

pub async fn list(ctx: &mut Ctx) -> Result<(), Fail> {
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(None, |ch| async move {
            LeaseClient::new(ch)
                .lease_leases(LeaseLeasesRequest {})
                .await
        })
        .await
        .map_err(|f| rewrap(f, exit::BAD_CONNECTION, str::to_string))?;
    stdout(&printer.leases(&resp)?);
    Ok(())
}

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// A keep-alive stream: requests go in through `tx`.
struct KeepAliveStream {
    tx: tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
    rx: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl KeepAliveStream {
    /// Opens the stream with its first request already queued (the call returns only
    /// once the server answers).
    async fn open(
        ch: tonic::transport::Channel,
        id: i64,
    ) -> Result<KeepAliveStream, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.try_send(LeaseKeepAliveRequest { id });
        let rx = LeaseClient::new(ch)
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(KeepAliveStream { tx, rx })
    }

    async fn send(&mut self, id: i64) {
        let _ = self.tx.send(LeaseKeepAliveRequest { id }).await;
    }

    /// The next response; `Ok(None)` when the stream ended.
    async fn recv(&mut self) -> Result<Option<LeaseKeepAliveResponse>, tonic::Status> {
        self.rx.message().await
    }
}

pub async fn keep_alive(ctx: &mut Ctx) -> Result<(), Fail> {
    if ctx.args.len() != 1 {
        return Err(bad_args(
            "lease keep-alive command needs lease ID as argument",
        ));
    }
    let id = lease_from_arg(&ctx.args[0])?;
    let (mut client, printer) = ctx.must_client()?;
    let bad_connection = |msg: String| Fail::new(exit::BAD_CONNECTION, msg);
    if ctx.flags.bool("once") {
        // clientv3's KeepAliveOnce: one round trip; a TTL <= 0 means the lease is gone.
        let ch = client.channel().await;
        let mut stream = KeepAliveStream::open(ch, id)
            .await
            .map_err(|s| bad_connection(error_text(&s)))?;
        let resp = match stream.recv().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(bad_connection(
                    "rpc error: code = Canceled desc = context canceled".into(),
                ));
            }
            Err(s) => return Err(bad_connection(error_text(&s))),
        };
        if resp.ttl <= 0 {
            return Err(bad_connection(LEASE_NOT_FOUND.into()));
        }
        stdout(&printer.keep_alive(&resp)?);
        return Ok(());
    }
    // clientv3's KeepAlive: renew every TTL/3 until the lease is gone (a response with
    // TTL <= 0) or no response came in time: the lease's TTL, or at first the dial
    // timeout and a second.
    let mut deadline = tokio::time::Instant::now() + ctx.dial_timeout() + Duration::from_secs(1);
    let ch = match tokio::time::timeout_at(deadline, client.channel()).await {
        Ok(ch) => ch,
        Err(_) => return expired(&printer, id),
    };
    let opened = tokio::time::timeout_at(deadline, KeepAliveStream::open(ch.clone(), id)).await;
    let mut stream = opened.ok().and_then(Result::ok);
    let mut first = true;
    loop {
        let Some(s) = stream.as_mut() else {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let opened =
                tokio::time::timeout_at(deadline, KeepAliveStream::open(ch.clone(), id)).await;
            stream = opened.ok().and_then(Result::ok);
            first = true;
            continue;
        };
        if !first {
            s.send(id).await;
        }
        first = false;
        match tokio::time::timeout_at(deadline, s.recv()).await {
            Ok(Ok(Some(resp))) => {
                if resp.ttl <= 0 {
                    break;
                }
                stdout(&printer.keep_alive(&resp)?);
                let ttl = Duration::from_secs(resp.ttl as u64);
                deadline = tokio::time::Instant::now() + ttl;
                tokio::time::sleep(ttl / 3).await;
            }
            Ok(Ok(None)) | Ok(Err(_)) => stream = None,
            Err(_elapsed) => break,
        }
    }
    expired(&printer, id)
}

/// The end of `lease keep-alive`: a last line in the simple format only.
fn expired(printer: &Printer, id: i64) -> Result<(), Fail> {
    if printer.format == Format::Simple {
        stdout(format!("lease {} expired or revoked.\n", gofmt::hex016(id)).as_bytes());
    }
    Ok(())
}
