//! `member add|remove|update|list|promote`, as etcdctl 3.4's `member_command.go`.

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest,
};

use super::{Ctx, stdout};
use crate::printer::Format;
use crate::{Fail, exit, gofmt, peer_urls};

fn bad_args(msg: impl Into<String>) -> Fail {
    Fail::new(exit::BAD_ARGS, msg)
}

/// The one argument, a member ID in hex.
fn member_id_from_args(args: &[String]) -> Result<u64, Fail> {
    let [arg] = args else {
        return Err(bad_args("member ID is not provided"));
    };
    gofmt::parse_uint(arg, 16)
        .map_err(|e| bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

/// `--peer-urls`, split at commas (each URL is sent as given, spaces and all).
fn peer_urls_from_flag(ctx: &Ctx) -> Result<Vec<String>, Fail> {
    let flag = ctx.flags.str("peer-urls");
    if flag.is_empty() {
        return Err(bad_args("member peer urls not provided"));
    }
    Ok(flag.split(',').map(str::to_string).collect())
}

pub async fn list(ctx: &mut Ctx) -> Result<(), Fail> {
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch)
                .member_list(MemberListRequest::default())
                .await
        })
        .await?;
    stdout(&printer.member_list(&resp)?);
    Ok(())
}

pub async fn add(ctx: &mut Ctx) -> Result<(), Fail> {
    let name = match ctx.args.as_slice() {
        [] => return Err(bad_args("member name not provided")),
        [name] => name.clone(),
        args => {
            let mut msg = "too many arguments".to_string();
            for arg in args {
                if arg.to_lowercase().starts_with("http") {
                    msg.push_str(&format!(", did you mean --peer-urls={arg}"));
                }
            }
            return Err(bad_args(msg));
        }
    };
    let urls = peer_urls_from_flag(ctx)?;
    let (mut client, printer) = ctx.must_client()?;
    peer_urls::validate(&urls).map_err(|e| Fail::new(exit::ERROR, e))?;
    let request = MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: ctx.flags.bool("learner"),
    };
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch).member_add(request).await
        })
        .await?;
    stdout(&printer.member_add(&resp)?);
    if printer.format != Format::Simple {
        return Ok(());
    }
    // The configuration for starting the new member, from the member list after the
    // change. etcdctl asks again until the list comes from the member that made the
    // change, as its balancer may send the two calls to different members; cairnctl
    // sends every call of a command to the same member.
    let list = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch)
                .member_list(MemberListRequest::default())
                .await
        })
        .await?;
    let new_id = resp.member.map(|m| m.id).unwrap_or_default();
    let mut initial_cluster = Vec::new();
    for m in &list.members {
        let member_name = if m.id == new_id { &name } else { &m.name };
        for url in &m.peer_ur_ls {
            initial_cluster.push(format!("{member_name}={url}"));
        }
    }
    let env = format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        gofmt::quote_str(&name),
        gofmt::quote_str(&initial_cluster.join(",")),
        gofmt::quote_str(ctx.flags.str("peer-urls")),
    );
    stdout(env.as_bytes());
    Ok(())
}

pub async fn remove(ctx: &mut Ctx) -> Result<(), Fail> {
    let id = member_id_from_args(&ctx.args)?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch)
                .member_remove(MemberRemoveRequest { id })
                .await
        })
        .await?;
    stdout(&printer.member_remove(id, &resp)?);
    Ok(())
}

pub async fn update(ctx: &mut Ctx) -> Result<(), Fail> {
    let id = member_id_from_args(&ctx.args)?;
    let urls = peer_urls_from_flag(ctx)?;
    let (mut client, printer) = ctx.must_client()?;
    peer_urls::validate(&urls).map_err(|e| Fail::new(exit::ERROR, e))?;
    let request = MemberUpdateRequest {
        id,
        peer_ur_ls: urls,
    };
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch).member_update(request).await
        })
        .await?;
    stdout(&printer.member_update(id, &resp)?);
    Ok(())
}

pub async fn promote(ctx: &mut Ctx) -> Result<(), Fail> {
    let id = member_id_from_args(&ctx.args)?;
    let (mut client, printer) = ctx.must_client()?;
    let resp = client
        .unary(ctx.command_timeout(), |ch| async move {
            ClusterClient::new(ch)
                .member_promote(MemberPromoteRequest { id })
                .await
        })
        .await?;
    stdout(&printer.member_promote(id, &resp)?);
    Ok(())
}
