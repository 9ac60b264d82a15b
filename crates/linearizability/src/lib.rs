//! A linearizability checker: given a history of concurrent operations (each with the time it
//! was called and the time it returned), decide whether some order of the operations that
//! respects real time explains every result under a sequential model. It is the judge of the
//! cluster tests: the deterministic simulator and the real-process fault tests record client
//! histories and hand them here.
//!
//! The search is Wing and Gong's, with Lowe's memoisation of (operations linearized, model
//! state), as Porcupine does it. It depends on nothing in the workspace and must not: it
//! judges Cairn from outside.

mod check;
mod kv;

pub use check::{Model, Operation, check};
pub use kv::{KvInput, KvModel, KvOutput, KvWrite};
