//! The search: Wing–Gong–Lowe over the calls and returns of a history.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;

    fn init(&self) -> Self::State;

    /// The state after applying `input` in `state`, if `output` is what the model returns
    /// there; None if `output` cannot happen in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The state after applying `input` in `state` when its output is unknown (the client
    /// timed out): whatever the model would have answered.
    fn indeterminate(&self, state: &Self::State, input: &Self::Input) -> Self::State;
}

/// One operation of a history. `returned: None` means the client never learned the outcome
/// (a timeout, a crash): the operation may have taken effect at any time after its call, or
/// not at all.
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    pub input: I,
    pub output: Option<O>,
    pub called: u64,
    pub returned: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Call(usize),
    Return(usize),
}

/// Bounded depth-first search: true when the history is linearizable.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
    // Operations without an outcome may also never have happened: leaving them out is one
    // of the explanations the search must be allowed, so they return "at infinity" and
    // need not be linearized for the search to finish.
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(history.len() * 2);
    for (i, op) in history.iter().enumerate() {
        debug_assert!(
            op.returned.is_none_or(|r| r >= op.called),
            "an operation returns after its call"
        );
        // Calls sort before returns at the same instant: they overlap.
        events.push((op.called, 0, Event::Call(i)));
        if let Some(returned) = op.returned {
            events.push((returned, 1, Event::Return(i)));
        }
    }
    events.sort_by_key(|(time, order, _)| (*time, *order));
    let events: Vec<Event> = events.into_iter().map(|(_, _, e)| e).collect();

    let complete = history.iter().filter(|op| op.returned.is_some()).count();
    let mut linearized = vec![false; history.len()];
    let mut linearized_complete = 0usize;
    let mut seen: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    // The stack of choices: (operation linearized, state before it).
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();

    // `pending` are the operations called (at or before the first unreturned return) and not
    // linearized yet; the search tries to linearize one of them next.
    let mut next_candidate = 0usize;
    loop {
        if linearized_complete == complete {
            return true;
        }
        let candidates = pending(&events, &linearized);
        let mut advanced = false;
        while next_candidate < candidates.len() {
            let op = candidates[next_candidate];
            next_candidate += 1;
            let entry = &history[op];
            let next_state = match &entry.output {
                Some(output) => model.step(&state, &entry.input, output),
                None => Some(model.indeterminate(&state, &entry.input)),
            };
            let Some(next_state) = next_state else {
                continue;
            };
            linearized[op] = true;
            let key = (bits(&linearized), next_state.clone());
            if seen.contains(&key) {
                linearized[op] = false;
                continue;
            }
            seen.insert(key);
            if entry.returned.is_some() {
                linearized_complete += 1;
            }
            stack.push((op, std::mem::replace(&mut state, next_state)));
            next_candidate = 0;
            advanced = true;
            break;
        }
        if advanced {
            continue;
        }
        // Nothing fits here: undo the last choice and try its next sibling.
        let Some((op, previous)) = stack.pop() else {
            return false;
        };
        linearized[op] = false;
        if history[op].returned.is_some() {
            linearized_complete -= 1;
        }
        state = previous;
        let siblings = pending(&events, &linearized);
        next_candidate = siblings
            .iter()
            .position(|o| *o == op)
            .map_or(siblings.len(), |p| p + 1);
    }
}

/// The operations that may be linearized next: called before the earliest return of an
/// operation not yet linearized, and not linearized themselves.
fn pending(events: &[Event], linearized: &[bool]) -> Vec<usize> {
    let mut out = Vec::new();
    for event in events {
        match *event {
            Event::Call(op) if !linearized[op] => out.push(op),
            Event::Return(op) if !linearized[op] => break,
            _ => {}
        }
    }
    out
}

fn bits(linearized: &[bool]) -> Vec<u64> {
    let mut words = vec![0u64; linearized.len().div_ceil(64)];
    for (i, on) in linearized.iter().enumerate() {
        if *on {
            words[i / 64] |= 1 << (i % 64);
        }
    }
    words
}
