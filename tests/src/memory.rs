//! The real client over its in-memory store: `FaultyStore<MemoryStore>` (with a manual server clock), run
//! through the client's own mapping from store results to machine events.

use crate::harness::{Backend, Fate, Observed};
use crate::reference::{START, row_view};
use spanner_mutex::faulty::{FaultEffect, FaultTarget, InjectedFault};
use spanner_mutex::{FaultyStore, LeaseStore, MemoryStore, WriteId, read_event, txn_event};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::{ClientId, Config, Event, Fence, MutexName};

/// The fault that makes a transaction meet `fate`, if any. (The harness never sends a late commit to a store.)
pub fn injected_fault(request: &TxnRequest, fate: Fate) -> Option<InjectedFault> {
    let on = match request {
        TxnRequest::Acquire { .. } => FaultTarget::Acquire,
        TxnRequest::Renew { .. } => FaultTarget::Renew,
        TxnRequest::Release { .. } => FaultTarget::Release,
        TxnRequest::VerifyFence { .. } => return None,
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
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            store: FaultyStore::new(MemoryStore::with_manual_clock(START)),
            name: MutexName::new("conformance").expect("a valid name"),
        }
    }
}

const EFFECT_PREFIX: &str = "effect/";

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
        let key = format!("{EFFECT_PREFIX}{client}/{}", fence.get());
        self.store
            .inner()
            .fenced_data(cfg, &self.name, WriteId { client, fence, write: 1 }, |data| data.insert(key, String::new()))
            .is_ok()
    }

    async fn needed(&mut self) -> bool {
        !self.store.inner().data().keys().any(|k| k.starts_with(EFFECT_PREFIX))
    }

    async fn advance(&mut self, ms: u64) {
        self.store.inner().advance_server_clock_ms(ms);
    }

    async fn observe(&mut self) -> Observed {
        let (row, now) = self.store.read(&self.name).await.expect("the memory store always reads");
        let mut effects: Vec<(ClientId, Fence)> = self
            .store
            .inner()
            .data()
            .keys()
            .filter_map(|k| {
                let (client, fence) = k.strip_prefix(EFFECT_PREFIX)?.split_once('/')?;
                Some((ClientId::from_uuid(client.parse().ok()?), Fence::new(fence.parse().ok()?)))
            })
            .collect();
        effects.sort();
        Observed { row: row.as_ref().map(|r| row_view(r, now)), effects }
    }
}
