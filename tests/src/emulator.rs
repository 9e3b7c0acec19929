//! The real client over the Spanner emulator: `FaultyStore<SpannerStore>` (faults the emulator cannot produce
//! are injected around the real store; every other call is the real Spanner code path), effects written by
//! `SpannerStore::fenced` into an `Effects` table.
//!
//! Spanner's clock cannot be moved, so the backend moves the row instead: before each operation it shifts the
//! row's timestamps forward by the real time that passed since the previous shift (or since the row was
//! written, if later), and back by the virtual time the case advanced. The protocol only compares server times
//! with each other, so this is the same as a server clock that follows virtual time, to within one operation's
//! duration, without ever writing a commit timestamp in the future.
//!
//! Fences cannot be moved either: a row's first fence is the server time of its creation, the emulator's clock
//! there and virtual time on the reference. The backend learns the difference once, when the row appears, and
//! translates every fence it passes in either direction, so the harness sees the reference's numbers.

use crate::harness::{Backend, Fate, Observed};
use crate::memory::injected_fault;
use crate::reference::{START, row_view};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use spanner_mutex::emulator::{Emulator, EmulatorError};
use spanner_mutex::{FaultyStore, LeaseStore, SpannerStore, Timeouts, read_event, txn_event};
use spanner_mutex::{FencedError, FencedTx, FencedWork, WriteId};
use spanner_mutex_model::txn::{TxnReply, TxnRequest};
use spanner_mutex_model::{ClientId, Config, Event, Fence, LeaseRow, MutexName, ServerTime};
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
    /// Virtual time advanced since the case began, microseconds: the reference's clock is `START` plus this.
    virtual_us: i64,
    /// The emulator's fences minus the reference's, once the row exists.
    fence_offset: Option<i64>,
}

fn unix_micros_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(since_epoch.as_micros()).expect("in range")
}

impl SpannerEmulator {
    /// A backend for a case on mutex `name` (unique per case: rows are not reused).
    pub fn new(env: &EmulatorEnv, name: MutexName) -> Self {
        Self {
            store: FaultyStore::new(env.store.clone()),
            name,
            anchored_unix_us: unix_micros_now(),
            advanced_us: 0,
            virtual_us: 0,
            fence_offset: None,
        }
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

impl SpannerEmulator {
    /// After a call that may have created the row: if it exists now, it was created in that call, at the
    /// reference's time `START + virtual_us`, so the difference of the first fences is known.
    async fn learn_fence_offset(&mut self) {
        if self.fence_offset.is_some() {
            return;
        }
        let (row, _) = self.store.read(&self.name).await.expect("reading the row on the emulator");
        if let Some(row) = row {
            let reference = Fence::first_at(ServerTime::from_unix_micros(START.unix_micros() + self.virtual_us));
            self.fence_offset = Some(as_i64(row.fence) - as_i64(reference));
        }
    }

    fn shift(&self, fence: Fence, sign: i64) -> Fence {
        let offset = self.fence_offset.expect("fences are passed only once the row exists");
        Fence::new(u64::try_from(as_i64(fence) + sign * offset).expect("a positive fence"))
    }

    /// The emulator's fence for one the harness holds.
    fn native(&self, fence: Fence) -> Fence {
        self.shift(fence, 1)
    }

    /// The harness's fence for one the emulator holds.
    fn view(&self, fence: Fence) -> Fence {
        self.shift(fence, -1)
    }

    fn native_request(&self, request: &TxnRequest) -> TxnRequest {
        let mut request = request.clone();
        match &mut request {
            TxnRequest::Acquire { .. } => {}
            TxnRequest::Operator { fence, .. }
            | TxnRequest::Renew { fence, .. }
            | TxnRequest::Release { fence, .. }
            | TxnRequest::VerifyFence { fence, .. } => *fence = self.native(*fence),
        }
        request
    }

    fn view_row(&self, row: Option<LeaseRow>) -> Option<LeaseRow> {
        row.map(|row| LeaseRow { fence: self.view(row.fence), ..row })
    }

    fn view_event(&self, event: Event) -> Event {
        match event {
            Event::TxnCommitted(TxnReply::Acquired { fence, expires_at, kind }) => {
                Event::TxnCommitted(TxnReply::Acquired { fence: self.view(fence), expires_at, kind })
            }
            Event::TxnCommitted(TxnReply::Busy { holder, fence, expires_at, server_now }) => {
                Event::TxnCommitted(TxnReply::Busy { holder, fence: self.view(fence), expires_at, server_now })
            }
            Event::TxnCommitted(TxnReply::DoneByOther { holder, fence }) => {
                Event::TxnCommitted(TxnReply::DoneByOther { holder, fence: self.view(fence) })
            }
            Event::RowRead { row, server_now } => Event::RowRead { row: self.view_row(row), server_now },
            other => other,
        }
    }
}

fn as_i64(fence: Fence) -> i64 {
    i64::try_from(fence.get()).expect("fences fit in INT64")
}

impl Backend for SpannerEmulator {
    async fn transact(&mut self, cfg: &Config, request: &TxnRequest, fate: Fate) -> Event {
        self.anchor().await;
        if let Some(fault) = injected_fault(request, fate) {
            self.store.inject(fault);
        }
        let native = self.native_request(request);
        let event = txn_event(self.store.transact(cfg, &self.name, &native).await);
        self.learn_fence_offset().await;
        self.view_event(event)
    }

    async fn read(&mut self) -> Event {
        self.anchor().await;
        let event = read_event(self.store.read(&self.name).await);
        self.view_event(event)
    }

    async fn fenced_write(&mut self, cfg: &Config, client: ClientId, fence: Fence) -> bool {
        self.anchor().await;
        let fence = self.native(fence);
        let mutex = self.name.as_str().to_owned();
        let work = move |tx: FencedTx| {
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
        match LeaseStore::fenced(
            self.store.inner(),
            cfg,
            &self.name,
            WriteId { client, fence, write: 1 },
            FencedWork::new(work),
        )
        .await
        {
            Ok(_) => true,
            Err(FencedError::Rejected { .. }) => false,
            Err(e) => panic!("fenced write failed on the emulator: {e:?}"),
        }
    }

    async fn needed(&mut self) -> bool {
        self.anchor().await;
        self.effects().await.is_empty()
    }

    async fn advance(&mut self, ms: u64) {
        let us = i64::try_from(ms * 1_000).unwrap_or(i64::MAX);
        self.advanced_us += us;
        self.virtual_us += us;
    }

    async fn observe(&mut self) -> Observed {
        self.anchor().await;
        let (row, now) = self.store.read(&self.name).await.expect("reading the row on the emulator");
        let row = self.view_row(row);
        let effects = self.effects().await.into_iter().map(|(writer, fence)| (writer, self.view(fence))).collect();
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
