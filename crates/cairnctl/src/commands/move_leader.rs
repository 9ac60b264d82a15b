//! `move-leader`, as etcdctl 3.4's `move_leader_command.go`: find the leader among the
//! endpoints by asking each for its status, then ask the leader to hand over.

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{MoveLeaderRequest, StatusRequest};
use tokio::time::Instant;

use super::{Ctx, stdout};
use crate::client::Client;
use crate::{Fail, exit, gofmt};

pub async fn move_leader(ctx: &mut Ctx) -> Result<(), Fail> {
    let [arg] = ctx.args.as_slice() else {
        return Err(Fail::new(
            exit::BAD_ARGS,
            "move-leader command needs 1 argument",
        ));
    };
    let target = gofmt::parse_uint(arg, 16).map_err(|e| Fail::new(exit::BAD_ARGS, e))?;
    let (_, printer) = ctx.must_client()?;
    let endpoints = ctx.endpoints();
    // One deadline for every call, as etcdctl shares one context between them.
    let deadline = ctx.command_timeout().map(|t| Instant::now() + t);
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let mut leader = None;
    for ep in &endpoints {
        let status = Client::passthrough(ep, ctx.dial_timeout())
            .unary(remaining(), |ch| async move {
                MaintenanceClient::new(ch).status(StatusRequest {}).await
            })
            .await?;
        let member_id = status.header.map(|h| h.member_id).unwrap_or_default();
        if member_id == status.leader {
            leader = Some((ep, status.leader));
            break;
        }
    }
    let Some((leader_ep, leader_id)) = leader else {
        return Err(Fail::new(
            exit::BAD_ARGS,
            format!("no leader endpoint given at [{}]", endpoints.join(" ")),
        ));
    };
    let resp = Client::new(vec![leader_ep.clone()], ctx.dial_timeout())
        .unary(remaining(), |ch| async move {
            MaintenanceClient::new(ch)
                .move_leader(MoveLeaderRequest { target_id: target })
                .await
        })
        .await?;
    stdout(&printer.move_leader(leader_id, target, &resp)?);
    Ok(())
}
