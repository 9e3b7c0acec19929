//! The reductions of the search: client symmetry, and time shifts (a state keyed as if it happened earlier).
//! Each is sound only while nothing reads what it forgets; docs/checker.md gives the argument.

use crate::{
    ClientKind, ClientSlot, LeaseModel, MAX_CLIENTS, MAX_TIME_MS, Op, Section, WorldState, client_id, slot_of,
};
use arrayvec::ArrayVec;
use spanner_mutex_model::world::Late;
use spanner_mutex_model::{ClientId, Fence, LocalInstant, ServerTime};

/// A renaming of client ids alone, for the symmetry reduction.
pub(crate) struct RenameClients<F>(F);

impl<F: Fn(ClientId) -> ClientId> spanner_mutex_model::Rename for RenameClients<F> {
    fn client(&self, id: ClientId) -> ClientId {
        (self.0)(id)
    }
}

/// Local instants moved `by_ms` and fences renumbered, for the reduction by time shifts.
pub(crate) struct ShiftInTime<F> {
    by_ms: i64,
    renumber: F,
}

impl<F: Fn(Fence) -> Fence> spanner_mutex_model::Rename for ShiftInTime<F> {
    fn instant(&self, at: LocalInstant) -> LocalInstant {
        at.shifted_ms(self.by_ms)
    }

    fn fence(&self, fence: Fence) -> Fence {
        (self.renumber)(fence)
    }
}

impl ClientSlot {
    pub(crate) fn relabel(&mut self, rename: impl Fn(ClientId) -> ClientId) {
        let rename = RenameClients(rename);
        self.machine.rename(&rename);
        if let Op::TxnRead { request, .. } = &mut self.op {
            request.rename(&rename);
        }
    }
}

/// Symmetry reduction: clients are interchangeable in the fenced protocol (no per-client wall clock), so a state
/// is represented by a canonical member of its class: slots sorted by their id-free content, every id renamed to
/// match, and among the orders that sort (slots whose content ties) the one whose state hashes lowest. Every
/// member of a class has the same candidates, so the choice is the same whichever member is reached first, and
/// unique-state counts do not depend on the search's thread count.
///
/// A slot's id-free content is the hash of the slot with every client id in it blanked, beside which slot holds
/// the row, wrote each effect and sent the queued commit. Tied slots are then alike but for their ids, and when
/// no client names another (only a "done by another" outcome does), every order of them gives the same state:
/// the sorted order is taken without trying the others.
pub(crate) fn representative(state: &WorldState) -> WorldState {
    representative_of(state).into_owned()
}

/// The fingerprint of `state`'s class under client symmetry (`symmetric`), else of `state` itself.
pub(crate) fn canonical_fingerprint(state: &WorldState, symmetric: bool) -> u64 {
    if symmetric { checker_hash(&*representative_of(state)) } else { checker_hash(state) }
}

/// Where [`LeaseModel::key_for_search`] puts server time: beyond any horizon, so no instant moved there saturates.
pub(crate) const SHIFTED_NOW_MS: u64 = 1 << 20;
const _: () = assert!(MAX_TIME_MS < SHIFTED_NOW_MS, "a shifted state's times must not saturate");

/// The fence [`LeaseModel::key_for_search`] gives the row (every other fence keeps its distance to the row's).
pub(crate) const KEYED_ROW_FENCE: u64 = 1 << 20;

/// How [`LeaseModel::key_for_search`] moved a state: what moves it back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyMove {
    now_ms: u64,
    by_ms: i64,
    row_fence: u64,
}

impl KeyMove {
    /// The server time of the state the key was made from.
    pub(crate) const fn now_ms(self) -> u64 {
        self.now_ms
    }
}

/// [`representative`], borrowing `state` when it is its own representative (most are).
pub(crate) fn representative_of(state: &WorldState) -> std::borrow::Cow<'_, WorldState> {
    use std::borrow::Cow;
    // Every kind once, in order (a lock and a leader, say): each slot is placed by its kind, where it is already.
    if state.clients.windows(2).all(|pair| pair[0].kind < pair[1].kind) {
        return Cow::Borrowed(state);
    }
    let names_another = std::cell::Cell::new(false);
    let anonymous = |i: usize| {
        let slot = &state.clients[i];
        // A slot of a kind no other slot has is placed by its kind alone; its content need not be hashed. Nor
        // need it be asked whether it names another client: only a run-once "done by another" outcome does, and
        // run-once clients never share a world with other kinds (`CheckOptions::validate`).
        if state.clients.iter().filter(|other| other.kind == slot.kind).count() == 1 {
            return ((slot.kind, 0, false, 0, (false, false)), i);
        }
        let own = slot.machine.id();
        let mut blank = slot.clone();
        let names_another = &names_another;
        blank.relabel(|id| {
            if id != own {
                names_another.set(true);
            }
            ClientId::from_u128(0)
        });
        let refers = |id: Option<ClientId>| id.is_some_and(|id| slot_of(id).0 == i);
        let queued = state.queued.as_ref().and_then(|queued| match &queued.late {
            Late::Txn { request, .. } => request.client(),
            Late::FencedWrite { writer, .. } => Some(*writer),
        });
        // Which effects it wrote, one bit each of a byte.
        const _: () = assert!(crate::world::MAX_EFFECTS <= 8);
        let wrote = state
            .effects
            .iter()
            .enumerate()
            .filter(|(_, e)| refers(Some(e.writer)))
            .fold(0u8, |bits, (n, _)| bits | 1 << n);
        let key = (
            slot.kind,
            checker_hash(&blank),
            refers(state.spanner.row.as_ref().map(|r| r.holder)),
            wrote,
            (refers(queued), state.spanner.force_released.iter().any(|released| refers(Some(released.holder)))),
        );
        (key, i)
    };
    let mut order: ArrayVec<_, { MAX_CLIENTS as usize }> = (0..state.clients.len()).map(anonymous).collect();
    order.sort_unstable();
    let mut slots: ArrayVec<usize, { MAX_CLIENTS as usize }> = order.iter().map(|&(_, old)| old).collect();
    // Runs of equal keys: the slots whose order the sort leaves open.
    let mut ties: ArrayVec<(usize, usize), { MAX_CLIENTS as usize }> = ArrayVec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || order[i].0 != order[start].0 {
            if i - start > 1 {
                ties.push((start, i));
            }
            start = i;
        }
    }
    if ties.is_empty() || !names_another.get() {
        return if slots.iter().enumerate().all(|(new, &old)| new == old) {
            Cow::Borrowed(state)
        } else {
            Cow::Owned(permuted(state, &slots))
        };
    }
    let mut best: Option<(u64, WorldState)> = None;
    each_tie_order(&mut slots, &ties, &mut |slots| {
        let candidate = permuted(state, slots);
        let hash = checker_hash(&candidate);
        let better = match &best {
            None => true,
            Some((best_hash, best_state)) => {
                // Equal hashes of different states: never seen, but the choice must still not depend on order.
                // (Tied slots that are wholly alike give equal candidates: nothing to choose.)
                hash < *best_hash
                    || (hash == *best_hash
                        && candidate != *best_state
                        && format!("{candidate:?}") < format!("{best_state:?}"))
            }
        };
        if better {
            best = Some((hash, candidate));
        }
    });
    Cow::Owned(best.expect("at least one order").1)
}

/// Calls `visit` with every order of `slots` that permutes only within the `ties` ranges (left as found).
pub(crate) fn each_tie_order(slots: &mut [usize], ties: &[(usize, usize)], visit: &mut impl FnMut(&[usize])) {
    let Some((&(from, to), rest)) = ties.split_first() else {
        visit(slots);
        return;
    };
    loop {
        each_tie_order(slots, rest, visit);
        if !next_permutation(&mut slots[from..to]) {
            return;
        }
    }
}

/// Steps `items` to its next lexicographic permutation; after the last, restores the first and returns false.
pub(crate) fn next_permutation(items: &mut [usize]) -> bool {
    let Some(pivot) = (1..items.len()).rev().find(|&i| items[i - 1] < items[i]).map(|i| i - 1) else {
        items.reverse();
        return false;
    };
    let successor = (pivot + 1..items.len()).rev().find(|&i| items[i] > items[pivot]).expect("a larger item");
    items.swap(pivot, successor);
    items[pivot + 1..].reverse();
    true
}

/// A hash fixed for the whole run (seeded, not random), as the canonical form needs; it is only ever compared
/// within one run, so which function it is changes no count (short of a collision). foldhash, because a derived
/// `Hash` writes a state field by field, and foldhash gathers small writes and multiplies once per 16 bytes.
pub(crate) fn checker_hash(value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(1).hash_one(value)
}

/// `state` with slot `slots[new]` moved to `new`, and every client id renamed to match.
pub(crate) fn permuted(state: &WorldState, slots: &[usize]) -> WorldState {
    let mut new_slot_of = [0usize; MAX_CLIENTS as usize];
    for (new, &old) in slots.iter().enumerate() {
        new_slot_of[old] = new;
    }
    let rename = |id: ClientId| {
        let (slot, incarnation) = slot_of(id);
        client_id(new_slot_of[slot], incarnation)
    };
    // Field by field, so the slots are cloned once (and a new field cannot be forgotten).
    let mut out = WorldState {
        now_ms: state.now_ms,
        spanner: state.spanner.clone(),
        clients: slots
            .iter()
            .map(|&old| {
                let mut slot = state.clients[old].clone();
                slot.relabel(rename);
                slot
            })
            .collect(),
        effects: state.effects.clone(),
        faults_left: state.faults_left,
        cancels_left: state.cancels_left,
        operators_left: state.operators_left,
        queued: state.queued.clone(),
        ghost: state.ghost,
    };
    if let Some(row) = &mut out.spanner.row {
        row.holder = rename(row.holder);
    }
    for released in &mut out.spanner.force_released {
        released.holder = rename(released.holder);
    }
    for effect in &mut out.effects {
        effect.writer = rename(effect.writer);
    }
    match out.queued.as_mut().map(|queued| &mut queued.late) {
        None => {}
        Some(Late::Txn { request, .. }) => request.rename(&RenameClients(rename)),
        Some(Late::FencedWrite { writer, .. }) => *writer = rename(*writer),
    }
    out
}

impl LeaseModel {
    /// Whether states may be reduced by client symmetry: not in the naive protocol, whose clients' wall clocks
    /// differ by slot.
    pub fn symmetric(&self) -> bool {
        self.cfg.protocol().uses_server_time()
    }

    /// Makes `state` its search key in place ([`Self::key_for_search`]) and fingerprints it: the fingerprint of
    /// its class under client symmetry (when `symmetric`, which needs [`Self::symmetric`]) and time shifts, blind
    /// to what no decision, property or witness reads. The [`KeyMove`] moves the key back.
    pub(crate) fn class_fingerprint(&self, state: &mut WorldState, symmetric: bool) -> (u64, KeyMove) {
        let moved = self.key_for_search(state);
        (canonical_fingerprint(state, symmetric), moved)
    }

    /// Makes `state` its search key, in place (the search keys every successor, and most are dropped after):
    /// moved in time so that server time reads [`SHIFTED_NOW_MS`] (every time in it moved by the same amount:
    /// the row's, the transactions', each machine's local instants; server time itself kept while it decides
    /// whether a clock may drift), every fence renumbered from the row's ([`KEYED_ROW_FENCE`]), and what no
    /// decision, property or witness reads forgotten: the row's acquisition count (only written, for people
    /// reading the row), its commit time when no DONE row can go stale within the horizon (lock-mode rows never
    /// do), and the retries of a client without a retry limit beyond the longest backoff. What it returns moves
    /// the key back ([`Self::restore_from_key`]). docs/checker.md argues the reduction.
    pub(crate) fn key_for_search(&self, state: &mut WorldState) -> KeyMove {
        // Fences are only compared, and all of them are the row's first one plus a count (the checked row is never
        // deleted), which only the first depends on the time it was created at: counted down from the row's.
        let moved = KeyMove {
            now_ms: state.now_ms,
            by_ms: (SHIFTED_NOW_MS - state.now_ms).cast_signed(),
            row_fence: state.spanner.row.as_ref().map_or(0, |row| row.fence.get()),
        };
        let to_key = |fence: Fence| Fence::new(fence.get().wrapping_sub(moved.row_fence).wrapping_add(KEYED_ROW_FENCE));
        self.move_in_time(state, moved.by_ms, to_key);
        // Before server time passes the drift share, whether a clock may drift depends on the time itself (a
        // clock never lags behind its start), so those states are keyed by it: none is a shift of another. After,
        // no state's future depends on when it happens.
        if !(self.options.faults.drift && state.now_ms < self.drift_share_ms()) {
            state.now_ms = SHIFTED_NOW_MS;
        }
        let staleness_unseen = self.staleness_unseen();
        if let Some(row) = &mut state.spanner.row {
            row.attempt = 0;
            if staleness_unseen {
                row.updated_at = ServerTime::from_unix_micros(0);
            }
        }
        for slot in &mut state.clients {
            slot.machine.forget_uncounted_attempts(&self.cfg);
        }
        moved
    }

    /// Moves a search key back to the time and fences of the state it was made from (`moved`). What the key
    /// forgot stays forgotten: the state is the same but for what nothing reads.
    pub(crate) fn restore_from_key(&self, key: &mut WorldState, moved: KeyMove) {
        let from_key =
            |fence: Fence| Fence::new(fence.get().wrapping_sub(KEYED_ROW_FENCE).wrapping_add(moved.row_fence));
        self.move_in_time(key, -moved.by_ms, from_key);
        key.now_ms = moved.now_ms;
    }

    /// Whether no DONE row can go stale within the horizon (a decision time reaches a millisecond past it: a
    /// server clock read late), so nothing reads a row's commit time.
    pub(crate) fn staleness_unseen(&self) -> bool {
        !self.options.has(ClientKind::RunOnce) || self.options.staleness_ms > self.options.max_time_ms.saturating_add(1)
    }

    /// Moves every time in `state` but server time itself `by_ms` milliseconds (earlier when negative), and
    /// renumbers every fence by `renumber`. The row's commit time stays where it is when nothing reads it: a key
    /// forgets it.
    pub(crate) fn move_in_time(&self, state: &mut WorldState, by_ms: i64, renumber: impl Fn(Fence) -> Fence + Copy) {
        let by_server = |time: &mut ServerTime| *time = time.shifted_ms(by_ms);
        let shift = ShiftInTime { by_ms, renumber };
        let staleness_unseen = self.staleness_unseen();
        if let Some(row) = &mut state.spanner.row {
            row.fence = renumber(row.fence);
            // Forgotten in a key when unseen.
            if !staleness_unseen {
                by_server(&mut row.updated_at);
            }
            by_server(&mut row.expires_at);
        }
        for effect in &mut state.effects {
            effect.fence = renumber(effect.fence);
        }
        match state.queued.as_mut().map(|queued| &mut queued.late) {
            Some(Late::Txn { request, read_at }) => {
                request.rename(&shift);
                by_server(read_at);
            }
            Some(Late::FencedWrite { fence, read_at, .. }) => {
                *fence = renumber(*fence);
                by_server(read_at);
            }
            None => {}
        }
        for slot in &mut state.clients {
            slot.machine.rename(&shift);
            if let Op::TxnRead { request, read_at, sent_at, .. } = &mut slot.op {
                request.rename(&shift);
                by_server(read_at);
                *sent_at = sent_at.shifted_ms(by_ms);
            }
            if let Some(since) = &mut slot.ghost.unanswered_since {
                *since = since.shifted_ms(by_ms);
            }
            if let Section::Started(work) = &mut slot.section {
                work.fence = renumber(work.fence);
                if let Some(since) = &mut work.unanswered_since {
                    *since = since.shifted_ms(by_ms);
                }
            }
        }
        state.spanner.max_fence = state.spanner.max_fence.map(renumber);
        for released in &mut state.spanner.force_released {
            released.fence = renumber(released.fence);
            by_server(&mut released.expired_at);
        }
        state.ghost.max_term = state.ghost.max_term.map(renumber);
    }

    /// How far a client's clock may fall behind: the margin's share left after twice the declared server clock
    /// error.
    pub(crate) fn drift_share_ms(&self) -> u64 {
        self.cfg.safety_margin_ms() - 2 * self.cfg.server_uncertainty_ms()
    }

    /// The symmetry representative function, when [`Self::symmetric`].
    pub fn symmetry(&self) -> Option<fn(&WorldState) -> WorldState> {
        self.symmetric().then_some(representative as fn(&WorldState) -> WorldState)
    }
}
