//! `endpoint health`, `endpoint status` and `endpoint hashkv` (with `--cluster`: every
//! member's client URLs).

use std::time::Instant;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, MemberListRequest, RangeRequest, StatusRequest};

use super::{Ctx, stderr, stdout};
use crate::client::Client;
use crate::printer::{EpHashKv, EpHealth, EpStatus};
use crate::{Fail, exit};

/// etcdctl's `endpointsFromCluster`.
async fn endpoints_from_cluster(ctx: &mut Ctx) -> Result<Vec<String>, Fail> {
    if !ctx.flags.bool("cluster") {
        return Ok(ctx.endpoints());
    }
    let (mut client, _) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch)
                .member_list(MemberListRequest::default())
                .await
        })
        .await
        .map_err(|f| {
            Fail::new(
                exit::ERROR,
                format!(
                    "failed to fetch endpoints from etcd cluster member list: {}",
                    f.msg
                ),
            )
        })?;
    Ok(resp
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

/// One endpoint's health: a linearizable `get health` (etcdctl 3.4.23 does not look at
/// alarms; an error from a server without the Alarm RPC would not show there either).
async fn check(mut client: Client, ep: String, timeout: Option<std::time::Duration>) -> EpHealth {
    let start = Instant::now();
    let got = client
        .unary(timeout, |ch| async move {
            KvClient::new(ch)
                .range(RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                })
                .await
        })
        .await;
    let mut h = EpHealth {
        ep,
        health: false,
        took: start.elapsed(),
        error: String::new(),
    };
    match got {
        // Permission denied is fine: the request went through consensus.
        Ok(_) => h.health = true,
        Err(f) if f.msg == "etcdserver: permission denied" => h.health = true,
        Err(f) => h.error = f.msg,
    }
    h
}

pub async fn health(ctx: &mut Ctx) -> Result<(), Fail> {
    ctx.apply_env()?;
    ctx.check_supported()?;
    let printer = ctx.printer()?;
    let endpoints = endpoints_from_cluster(ctx).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for ep in endpoints {
        let client = Client::new(vec![ep.clone()], ctx.dial_timeout());
        let timeout = ctx.command_timeout();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(check(client, ep, timeout).await);
        });
    }
    drop(tx);
    let mut hs = Vec::new();
    while let Some(h) = rx.recv().await {
        hs.push(h);
    }
    let out = printer.endpoint_health(&hs)?;
    stdout(&out.stdout);
    stderr(&out.stderr);
    if hs.iter().any(|h| !h.error.is_empty()) {
        return Err(Fail::new(exit::ERROR, "unhealthy cluster"));
    }
    Ok(())
}

pub async fn status(ctx: &mut Ctx) -> Result<(), Fail> {
    let (_client, printer) = ctx.must_client()?;
    let endpoints = endpoints_from_cluster(ctx).await?;
    let mut list = Vec::new();
    let mut failed = false;
    for ep in endpoints {
        let mut client = Client::passthrough(&ep, ctx.dial_timeout());
        let resp = client
            .unary(ctx.command_timeout(), |ch| async move {
                MaintenanceClient::new(ch).status(StatusRequest {}).await
            })
            .await;
        match resp {
            Ok(resp) => list.push(EpStatus { ep, resp }),
            Err(f) => {
                failed = true;
                stderr(
                    format!("Failed to get the status of endpoint {ep} ({})\n", f.msg).as_bytes(),
                );
            }
        }
    }
    stdout(&printer.endpoint_status(&list)?);
    if failed {
        return Err(Fail {
            silent: true,
            ..Fail::new(exit::ERROR, "")
        });
    }
    Ok(())
}

pub async fn hashkv(ctx: &mut Ctx) -> Result<(), Fail> {
    let (_client, printer) = ctx.must_client()?;
    let endpoints = endpoints_from_cluster(ctx).await?;
    let revision = ctx.flags.int("rev");
    let mut list = Vec::new();
    let mut last_failure = None;
    for ep in endpoints {
        let mut client = Client::passthrough(&ep, ctx.dial_timeout());
        let resp = client
            .unary(ctx.command_timeout(), |ch| async move {
                MaintenanceClient::new(ch)
                    .hash_kv(HashKvRequest { revision })
                    .await
            })
            .await;
        match resp {
            Ok(resp) => list.push(EpHashKv { ep, resp }),
            Err(f) => {
                stderr(format!("Failed to get the hash of endpoint {ep} ({})\n", f.msg).as_bytes());
                last_failure = Some(f);
            }
        }
    }
    stdout(&printer.endpoint_hashkv(&list)?);
    match last_failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}
