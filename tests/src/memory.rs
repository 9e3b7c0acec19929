//! The real client over its in-memory store: `FaultyStore<MemoryStore>` (with a manual server clock), run
//! through the client's own mapping from store results to machine events.

use crate::harness::{Backend, Fate, Observed};
use crate::reference::{START, row_view};
use spanner_mutex::faulty::{FaultEffect, FaultTarget, InjectedFault};
use spanner_mutex::google_cloud_spanner::mutation::Mutation;
use spanner_mutex::{
    FaultyStore, Fenced, FencedTx, FencedWork, LeaseStore, MemoryStore, WriteId, read_event, txn_event,
};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::{ClientId, Config, Event, Fence, MutexName};

/// The fault that makes a transaction meet `fate`, if any. (The harness never sends a late commit to a store.)
pub fn injected_fault(request: &TxnRequest, fate: Fate) -> Option<InjectedFault> {
    let on = match request {
        TxnRequest::Acquire { .. } => FaultTarget::Acquire,
        TxnRequest::Renew { .. } => FaultTarget::Renew,
        TxnRequest::Release { .. } => FaultTarget::Release,
        TxnRequest::VerifyFence { .. } | TxnRequest::Operator { .. } => return None,
    };
    let effect = match fate {
        Fate::AsDecided => return None,
        Fate::UnknownLate => panic!("no store here holds a commit back: the harness and the driver rig never send one"),
        Fate::Aborted => FaultEffect::Aborted,
        Fate::UnknownLanded => FaultEffect::UnknownCommitted,
        Fate::UnknownLost => FaultEffect::UnknownNotCommitted,
        Fate::Unavailable => FaultEffect::Unavailable,
    };
    Some(InjectedFault { on, effect })
}

/// The in-memory backend.
#[derive(Clone, Debug)]
pub struct Memory {
    store: FaultyStore<MemoryStore>,
    name: MutexName,
    /// The effects whose fenced writes the store committed, as the resource records them.
    effects: Vec<(ClientId, Fence)>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            store: FaultyStore::new(MemoryStore::with_manual_clock(START)),
            name: MutexName::new("conformance").expect("a valid name"),
            effects: Vec::new(),
        }
    }
}

impl Backend for Memory {
    async fn transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate) -> Event {
        if let Some(fault) = injected_fault(request, fate) {
            self.store.inject(fault);
        }
        txn_event(self.store.transact(cfg, &self.name, request).await)
    }

    async fn read(&mut self) -> Event {
        read_event(self.store.read(&self.name).await)
    }

    async fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> bool {
        let (written, accepted) = effect_write(self.store.inner(), cfg, &self.name, client, fence).await;
        if written {
            self.effects.push((client, fence));
        }
        accepted
    }

    async fn needed(&mut self) -> bool {
        self.effects.is_empty()
    }

    async fn advance(&mut self, ms: u64) {
        self.store.inner().advance_server_clock_ms(ms);
    }

    async fn observe(&mut self) -> Observed {
        let (row, now) = self.store.read(&self.name).await.expect("the memory store always reads");
        let mut effects = self.effects.clone();
        effects.sort();
        Observed { row: row.as_ref().map(|r| row_view(r, now)), effects }
    }
}

/// A conformance section's fenced write (number 1 of its lease) through the store's own fenced-write path, with
/// one mutation as its effect: whether this call wrote it, and whether the store accepted it (written now or
/// found written earlier).
pub async fn effect_write(
    store: &MemoryStore,
    cfg: &Config,
    name: &MutexName,
    client: ClientId,
    fence: Fence,
) -> (bool, bool) {
    let effect = Mutation::new_insert_builder("Effects").set("writer").to(client.to_string()).build();
    let work = FencedWork::new(move |tx: FencedTx| {
        let buffered = tx.buffer([effect.clone()]);
        async move { buffered }
    });
    match LeaseStore::fenced(store, cfg, name, WriteId { client, fence, write: 1 }, work).await {
        Ok(Fenced::Committed(_)) => (true, true),
        Ok(Fenced::CommittedEarlier) => (false, true),
        Err(_) => (false, false),
    }
}
