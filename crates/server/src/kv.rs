//! The KV requests' semantics, as etcd applies them: ranges with sorting, limits and
//! revision filters; puts; deletes; transactions with compares and nested transactions.
//!
//! The same code serves a write applied from the log (over a `TxnWriter`) and a read-only
//! request served locally (over a `ReadView`), through the `KvView` seam.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::ops::RangeBounds;

use cairn_mvcc::{KeyValue, MvccError, RangeOptions, RangeResult, ReadView, TxnWriter, key_range};
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, compare,
    range_request, request_op, response_op,
};

use crate::ServerError;
use crate::lease::Lessor;

/// Reading (and, for a write, changing) the store inside one request.
pub trait KvView {
    /// The revision the request reads at.
    fn revision(&self) -> i64;
    fn compacted_revision(&self) -> i64;
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError>;
    fn lease_exists(&self, id: i64) -> bool;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: i64) -> Result<(), ServerError>;
    fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<i64, ServerError>;
}

impl KvView for ReadView<'_> {
    fn revision(&self) -> i64 {
        ReadView::revision(self)
    }
    fn compacted_revision(&self) -> i64 {
        ReadView::compacted_revision(self)
    }
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError> {
        ReadView::range(self, key, end, opts)
    }
    fn lease_exists(&self, _: i64) -> bool {
        // Only puts ask, and a read-only request has none.
        false
    }
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>, _: i64) -> Result<(), ServerError> {
        Err(ServerError::Internal(
            "a read-only request tried to put".into(),
        ))
    }
    fn delete_range(&mut self, _: &[u8], _: &[u8]) -> Result<i64, ServerError> {
        Err(ServerError::Internal(
            "a read-only request tried to delete".into(),
        ))
    }
}

/// A request being applied from the log: store changes plus the lessor's attachments.
pub struct AppliedTxn<'t, 'w, 'a> {
    pub txn: &'t mut TxnWriter<'w, 'a>,
    pub lessor: &'t Lessor,
}

impl KvView for AppliedTxn<'_, '_, '_> {
    fn revision(&self) -> i64 {
        self.txn.read_revision()
    }
    fn compacted_revision(&self) -> i64 {
        self.txn.compacted_revision()
    }
    fn range(&self, key: &[u8], end: &[u8], opts: &RangeOptions) -> Result<RangeResult, MvccError> {
        self.txn.range(key, end, opts)
    }
    fn lease_exists(&self, id: i64) -> bool {
        self.lessor.exists(id)
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: i64) -> Result<(), ServerError> {
        self.lessor.attach(&key, lease);
        Ok(self.txn.put(key, value, lease)?)
    }
    fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<i64, ServerError> {
        let deleted = self.txn.delete_range(key, end)?;
        for key in &deleted {
            self.lessor.detach(key);
        }
        Ok(deleted.len() as i64)
    }
}

/// A response header carrying only the revision; the server fills in the rest at the edge.
pub fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

fn get_one(view: &impl KvView, key: &[u8]) -> Result<Option<KeyValue>, ServerError> {
    Ok(view.range(key, b"", &RangeOptions::default())?.kvs.pop())
}

// ---- validation before any change, so a failing request changes nothing ----

/// Checks a put's shape: a key, and no value or lease alongside the flag that keeps the old one.
pub fn check_put_shape(p: &PutRequest) -> Result<(), ServerError> {
    if p.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

/// Checks a request's shape (the API layer's checks in etcd): empty keys, txn size, duplicates.
pub fn check_txn_shape(txn: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    if txn.compare.len() > max_txn_ops
        || txn.success.len() > max_txn_ops
        || txn.failure.len() > max_txn_ops
    {
        return Err(ServerError::TooManyOps);
    }
    if txn.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ServerError::EmptyKey);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(ServerError::EmptyKey);
            }
            Some(request_op::Request::RequestPut(r)) => check_put_shape(r)?,
            Some(request_op::Request::RequestDeleteRange(r)) if r.key.is_empty() => {
                return Err(ServerError::EmptyKey);
            }
            Some(request_op::Request::RequestTxn(t)) => check_txn_shape(t, max_txn_ops)?,
            _ => {}
        }
    }
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

/// What one branch of a transaction writes: the ranges it deletes and the keys it puts.
#[derive(Default)]
struct BranchWrites {
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
    puts: HashSet<Vec<u8>>,
}

/// etcd refuses a branch that puts one key twice, or deletes a range that covers a key it puts.
fn check_intervals(ops: &[RequestOp]) -> Result<BranchWrites, ServerError> {
    let mut deletes = Vec::new();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                deletes.push((d.key.clone(), d.range_end.clone()))
            }
            Some(request_op::Request::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(ServerError::DuplicateKey);
            }
            Some(request_op::Request::RequestTxn(t)) => {
                let success = check_intervals(&t.success)?;
                let failure = check_intervals(&t.failure)?;
                if success
                    .puts
                    .union(&failure.puts)
                    .any(|key| puts.contains(key))
                {
                    return Err(ServerError::DuplicateKey);
                }
                puts.extend(success.puts);
                puts.extend(failure.puts);
                deletes.extend(success.deletes);
                deletes.extend(failure.deletes);
            }
            _ => {}
        }
    }
    for (key, end) in &deletes {
        let range = key_range(key, end);
        if puts
            .iter()
            .any(|p| RangeBounds::<[u8]>::contains(&range, p.as_slice()))
        {
            return Err(ServerError::DuplicateKey);
        }
    }
    Ok(BranchWrites { deletes, puts })
}

fn check_range(view: &impl KvView, r: &RangeRequest) -> Result<(), ServerError> {
    if r.revision > view.revision() {
        return Err(ServerError::FutureRevision);
    }
    if r.revision > 0 && r.revision < view.compacted_revision() {
        return Err(ServerError::Compacted);
    }
    Ok(())
}

fn check_put(view: &impl KvView, p: &PutRequest) -> Result<(), ServerError> {
    if p.lease != 0 && !view.lease_exists(p.lease) {
        return Err(ServerError::LeaseNotFound);
    }
    if (p.ignore_value || p.ignore_lease) && get_one(view, &p.key)?.is_none() {
        return Err(ServerError::KeyNotFound);
    }
    Ok(())
}

/// Walks the branches `path` chose and checks every range and put in them.
fn check_ops(
    view: &impl KvView,
    txn: &TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<(), ServerError> {
    let succeeded = path[*at];
    *at += 1;
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(view, r)?,
            Some(request_op::Request::RequestPut(p)) => check_put(view, p)?,
            Some(request_op::Request::RequestTxn(t)) => check_ops(view, t, path, at)?,
            _ => {}
        }
    }
    Ok(())
}

// ---- execution ----

pub fn range(view: &impl KvView, r: &RangeRequest) -> Result<RangeResponse, ServerError> {
    check_range(view, r)?;
    let sort_order = r.sort_order();
    let sort_target = r.sort_target();
    let needs_all = sort_order != range_request::SortOrder::None
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let limit = if needs_all || r.limit <= 0 {
        0
    } else {
        r.limit as usize + 1
    };
    let opts = RangeOptions {
        revision: r.revision,
        limit,
        count_only: r.count_only,
        keys_only: r.keys_only,
    };
    let result = view.range(&r.key, &r.range_end, &opts)?;
    let mut kvs = result.kvs;
    kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    let order = if sort_target != range_request::SortTarget::Key
        && sort_order == range_request::SortOrder::None
    {
        range_request::SortOrder::Ascend
    } else {
        sort_order
    };
    if order != range_request::SortOrder::None {
        let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match sort_target {
                range_request::SortTarget::Key => a.key.cmp(&b.key),
                range_request::SortTarget::Version => a.version.cmp(&b.version),
                range_request::SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                range_request::SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                range_request::SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        // Stable, like the insertion sort Go uses for small inputs: ties keep key order.
        if order == range_request::SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    Ok(RangeResponse {
        header: header(result.revision),
        kvs,
        more,
        count: result.count as i64,
    })
}

pub fn put(view: &mut impl KvView, mut p: PutRequest) -> Result<PutResponse, ServerError> {
    check_put(view, &p)?;
    let prev = if p.prev_kv || p.ignore_value || p.ignore_lease {
        get_one(view, &p.key)?
    } else {
        None
    };
    if let Some(prev) = &prev {
        if p.ignore_value {
            p.value = prev.value.clone();
        }
        if p.ignore_lease {
            p.lease = prev.lease;
        }
    }
    view.put(p.key, p.value, p.lease)?;
    Ok(PutResponse {
        header: header(view.revision()),
        prev_kv: if p.prev_kv { prev } else { None },
    })
}

pub fn delete_range(
    view: &mut impl KvView,
    d: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ServerError> {
    let prev_kvs = if d.prev_kv {
        view.range(&d.key, &d.range_end, &RangeOptions::default())?
            .kvs
    } else {
        Vec::new()
    };
    let deleted = view.delete_range(&d.key, &d.range_end)?;
    Ok(DeleteRangeResponse {
        header: header(view.revision()),
        deleted,
        prev_kvs,
    })
}

fn compare_one(view: &impl KvView, c: &Compare) -> Result<bool, ServerError> {
    let kvs = view
        .range(&c.key, &c.range_end, &RangeOptions::default())?
        .kvs;
    let target = c.target();
    if kvs.is_empty() {
        // A missing key has no value to compare; its revisions and version compare as zero.
        if target == compare::CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::TargetUnion;
    let ordering = match (c.target(), &c.target_union) {
        (compare::CompareTarget::Value, Some(TargetUnion::Value(v))) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (compare::CompareTarget::Value, _) => kv.value.as_slice().cmp(&[]),
        (compare::CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (compare::CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
            kv.create_revision.cmp(v)
        }
        (compare::CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (compare::CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        (compare::CompareTarget::Version, _) => kv.version.cmp(&0),
        (compare::CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (compare::CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (compare::CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match c.result() {
        compare::CompareResult::Equal => ordering == Ordering::Equal,
        compare::CompareResult::NotEqual => ordering != Ordering::Equal,
        compare::CompareResult::Greater => ordering == Ordering::Greater,
        compare::CompareResult::Less => ordering == Ordering::Less,
    }
}

/// Decides every branch up front, against the state before the transaction (as etcd does):
/// the outcome of each (nested) transaction in depth-first order.
fn branch_path(
    view: &impl KvView,
    txn: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), ServerError> {
    let mut succeeded = true;
    for c in &txn.compare {
        if !compare_one(view, c)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for op in ops {
        if let Some(request_op::Request::RequestTxn(t)) = &op.request {
            branch_path(view, t, path)?;
        }
    }
    Ok(())
}

fn execute(
    view: &mut impl KvView,
    txn: TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<TxnResponse, ServerError> {
    let succeeded = path[*at];
    *at += 1;
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match op.request {
            Some(request_op::Request::RequestRange(r)) => {
                response_op::Response::ResponseRange(range(view, &r)?)
            }
            Some(request_op::Request::RequestPut(p)) => {
                response_op::Response::ResponsePut(put(view, p)?)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete_range(view, &d)?)
            }
            Some(request_op::Request::RequestTxn(t)) => {
                response_op::Response::ResponseTxn(execute(view, t, path, at)?)
            }
            None => continue,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: header(view.revision()),
        succeeded,
        responses,
    })
}

pub fn txn(view: &mut impl KvView, txn: TxnRequest) -> Result<TxnResponse, ServerError> {
    let mut path = Vec::new();
    branch_path(view, &txn, &mut path)?;
    check_ops(view, &txn, &path, &mut 0)?;
    execute(view, txn, &path, &mut 0)
}

/// True when no branch, however deep, changes anything: such a transaction needs no consensus.
pub fn is_read_only(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => true,
            Some(request_op::Request::RequestTxn(t)) => is_read_only(t),
            Some(_) => false,
        })
}

/// True when every range in the transaction asks for a serializable read.
pub fn is_serializable(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => r.serializable,
            Some(request_op::Request::RequestTxn(t)) => is_serializable(t),
            _ => true,
        })
}
