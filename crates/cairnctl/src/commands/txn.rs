//! `txn [-i]`: reads the transaction from stdin (see `txn_syntax`) and commits it without
//! a timeout, as etcdctl 3.4 does.

use cairn_proto::etcdserverpb::TxnRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;

use super::{Ctx, stdout};
use crate::txn_syntax::read_txn;
use crate::{Fail, exit};

pub async fn txn(ctx: &mut Ctx) -> Result<(), Fail> {
    if !ctx.args.is_empty() {
        return Err(Fail::new(
            exit::BAD_ARGS,
            "txn command does not accept argument",
        ));
    }
    let (mut client, printer) = ctx.must_client()?;
    let interactive = ctx.flags.bool("interactive");
    let mut input = std::io::stdin().lock();
    let txn = read_txn(&mut input, &mut |prompt| {
        if interactive {
            stdout(format!("{prompt}\n").as_bytes());
        }
    })?;
    let req = TxnRequest {
        compare: txn.compares,
        success: txn.success,
        failure: txn.failure,
    };
    let resp = client
        .unary(None, |ch| async move { KvClient::new(ch).txn(req).await })
        .await?;
    stdout(&printer.txn(&resp)?);
    Ok(())
}
