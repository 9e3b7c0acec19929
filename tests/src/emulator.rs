//! The real client over the Spanner emulator: `FaultyStore<SpannerStore>` (faults the emulator cannot produce
//! are injected around the real store; every other call is the real Spanner code path), effects written by
//! `SpannerStore::fenced` into an `Effects` table.
//!
//! Spanner's clock cannot be moved, so the backend moves the row instead: before each operation it shifts the
//! row's timestamps forward by the real time that passed since the previous shift (or since the row was
//! written, if later), and back by the virtual time the case advanced. The protocol only compares server times
//! with each other, so this is the same as a server clock that follows virtual time, to within one operation's
//! duration, without ever writing a commit timestamp in the future.

use crate::harness::{Backend, Fate, Observed};
use crate::memory::injected_fault;
use crate::reference::row_view;
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use spanner_mutex::emulator::{Emulator, EmulatorError};
use spanner_mutex::spanner::FencedError;
use spanner_mutex::{FaultyStore, LeaseStore, SpannerStore, Timeouts, read_event, txn_event};
use spanner_mutex_model::txn::TxnRequest;
use spanner_mutex_model::{ClientId, Config, Event, Fence, MutexName};
use std::time::{SystemTime, UNIX_EPOCH};

/// The database the conformance runs use.
pub const DATABASE: &str = "projects/conformance/instances/conformance/databases/conformance";
const TABLE: &str = "SpannerMutex";

/// A running emulator with the lease table and the `Effects` table.
#[derive(Debug)]
pub struct EmulatorEnv {
    /// The emulator (stopped when dropped).
    pub emulator: Emulator,
    /// The store connected to it.
    pub store: SpannerStore,
}

impl EmulatorEnv {
    /// Starts the emulator on free ports and creates the database.
    pub async fn start() -> Result<Self, EmulatorError> {
        let emulator = Emulator::start().await?;
        let timeouts = Timeouts { connect_ms: 10_000, rpc_ms: 5_000, transaction_ms: 10_000 };
        let store = emulator.create_database("conformance", "conformance", "conformance", TABLE, timeouts).await?;
        let effects = "CREATE TABLE Effects (mutex STRING(128) NOT NULL, writer STRING(36) NOT NULL, fence INT64 NOT NULL) \
                       PRIMARY KEY (mutex, writer, fence)";
        emulator.apply_ddl(DATABASE, vec![effects.into()]).await?;
        Ok(Self { emulator, store })
    }
}

/// The emulator backend for one case (its own mutex row).
#[derive(Debug)]
pub struct SpannerEmulator {
    store: FaultyStore<SpannerStore>,
    name: MutexName,
    /// The (wall clock) time of the previous shift; the emulator's clock is this host's.
    anchored_unix_us: i64,
    /// Virtual time advanced since then, microseconds.
    advanced_us: i64,
}

fn unix_micros_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(since_epoch.as_micros()).expect("in range")
}

impl SpannerEmulator {
    /// A backend for a case on mutex `name` (unique per case: rows are not reused).
    pub fn new(env: &EmulatorEnv, name: MutexName) -> Self {
        Self { store: FaultyStore::new(env.store.clone()), name, anchored_unix_us: unix_micros_now(), advanced_us: 0 }
    }

    /// Shifts the row so that its times relative to Spanner's now follow virtual time.
    async fn anchor(&mut self) {
        let now_us = unix_micros_now();
        // A row written since the previous shift (its updated_at is its commit timestamp) has aged only since then.
        let shift = "(@now - GREATEST(@previous, UNIX_MICROS(updated_at)) - @advanced)";
        let sql = format!(
            "UPDATE {TABLE} SET expires_at = TIMESTAMP_ADD(expires_at, INTERVAL {shift} MICROSECOND), \
             updated_at = TIMESTAMP_ADD(updated_at, INTERVAL {shift} MICROSECOND) WHERE name = @name"
        );
        let statement = Statement::builder(sql)
            .add_param("now", now_us)
            .add_param("previous", self.anchored_unix_us)
            .add_param("advanced", self.advanced_us)
            .add_param("name", self.name.as_str())
            .build();
        self.anchored_unix_us = now_us;
        self.advanced_us = 0;
        let client = self.store.inner().database_client().await;
        client
            .read_write_transaction()
            .build()
            .run(move |tx: google_cloud_spanner::transaction::ReadWriteTransaction| {
                let statement = statement.clone();
                async move { tx.execute_update(statement).await }
            })
            .await
            .expect("shifting the row's timestamps");
    }
}

impl Backend for SpannerEmulator {
    async fn transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate) -> Event {
        self.anchor().await;
        if let Some(fault) = injected_fault(request, fate) {
            self.store.inject(fault);
        }
        txn_event(self.store.transact(cfg, &self.name, request).await)
    }

    async fn read(&mut self) -> Event {
        self.anchor().await;
        read_event(self.store.read(&self.name).await)
    }

    async fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> bool {
        self.anchor().await;
        let mutex = self.name.as_str().to_owned();
        let work = move |tx: google_cloud_spanner::transaction::ReadWriteTransaction| {
            let effect = Mutation::new_insert_builder("Effects")
                .set("mutex")
                .to(&mutex)
                .set("writer")
                .to(client.to_string())
                .set("fence")
                .to(i64::try_from(fence.get()).unwrap_or(i64::MAX))
                .build();
            async move { tx.buffer([effect]) }
        };
        // A conformance section makes one fenced write: number 1 of its lease.
        match self.store.inner().fenced(cfg, &self.name, client, fence, 1, work).await {
            Ok(_) => true,
            Err(FencedError::Rejected { .. }) => false,
            Err(e @ (FencedError::Spanner(_) | FencedError::OutcomeUnknown { .. })) => {
                panic!("fenced write failed on the emulator: {e}")
            }
        }
    }

    async fn needed(&mut self) -> bool {
        self.anchor().await;
        self.effects().await.is_empty()
    }

    async fn advance(&mut self, ms: u64) {
        self.advanced_us += i64::try_from(ms * 1_000).unwrap_or(i64::MAX);
    }

    async fn observe(&mut self) -> Observed {
        self.anchor().await;
        let (row, now) = self.store.read(&self.name).await.expect("reading the row on the emulator");
        let effects = self.effects().await;
        Observed { row: row.as_ref().map(|r| row_view(r, now)), effects }
    }
}

impl SpannerEmulator {
    async fn effects(&self) -> Vec<(ClientId, Fence)> {
        let client = self.store.inner().database_client().await;
        let statement = Statement::builder("SELECT writer, fence FROM Effects WHERE mutex = @mutex")
            .add_param("mutex", self.name.as_str())
            .build();
        let mut rows = client.single_use().build().execute_query(statement).await.expect("querying effects");
        let mut effects = Vec::new();
        while let Some(row) = rows.next().await.transpose().expect("an effects row") {
            let writer: String = row.get("writer").expect("writer");
            let fence: i64 = row.get("fence").expect("fence");
            let id = ClientId::from_uuid(writer.parse().expect("a uuid"));
            effects.push((id, Fence::new(u64::try_from(fence).expect("positive"))));
        }
        effects.sort();
        effects
    }
}
