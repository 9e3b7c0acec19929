//! The store behind a mutex, as the API and the driver see it: one type, whatever the store.

#[cfg(feature = "test-util")]
use crate::future::Compiled;
use crate::lease::FencedWork;
use crate::lease::WriteId;
use crate::memory::MemoryStore;
use crate::spanner::SpannerStore;
use crate::store::{FencedAnswer, LeaseStore, RowRead, StoreError};
use spanner_mutex_model::{Config, MutexName, TxnReply, TxnRequest};
use std::sync::Arc;

/// The store behind a mutex: Spanner or the in-memory store (or, for tests, any [`LeaseStore`]). One type, so the
/// API and its driver are compiled once, whatever the store.
#[derive(Clone)]
pub(crate) enum Store {
    // Shared: a store is cloned into every operation, and Spanner's is large.
    Spanner(Arc<SpannerStore>),
    Memory(MemoryStore),
    #[cfg(feature = "test-util")]
    Custom(Arc<dyn DynStore>),
}

/// [`LeaseStore`] as an object, for [`Store::Custom`].
#[cfg(feature = "test-util")]
pub(crate) trait DynStore: Send + Sync + 'static {
    fn transact<'a>(
        &'a self,
        cfg: &'a Config,
        name: &'a MutexName,
        request: &'a TxnRequest,
    ) -> Compiled<'a, Result<TxnReply, StoreError>>;
    fn read<'a>(&'a self, name: &'a MutexName) -> Compiled<'a, Result<RowRead, StoreError>>;
    #[allow(clippy::too_many_arguments, reason = "the store's fenced write, as the trait has it")]
    fn fenced<'a>(
        &'a self,
        cfg: &'a Config,
        name: &'a MutexName,
        id: WriteId,
        work: FencedWork,
    ) -> Compiled<'a, FencedAnswer>;
    fn heal<'a>(&'a self, error: &'a (dyn std::error::Error + Send + Sync + 'static)) -> Compiled<'a, bool>;
}

#[cfg(feature = "test-util")]
impl<S: LeaseStore> DynStore for S {
    fn transact<'a>(
        &'a self,
        cfg: &'a Config,
        name: &'a MutexName,
        request: &'a TxnRequest,
    ) -> Compiled<'a, Result<TxnReply, StoreError>> {
        Box::pin(LeaseStore::transact(self, cfg, name, request))
    }
    fn read<'a>(&'a self, name: &'a MutexName) -> Compiled<'a, Result<RowRead, StoreError>> {
        Box::pin(LeaseStore::read(self, name))
    }
    fn fenced<'a>(
        &'a self,
        cfg: &'a Config,
        name: &'a MutexName,
        id: WriteId,
        work: FencedWork,
    ) -> Compiled<'a, FencedAnswer> {
        Box::pin(LeaseStore::fenced(self, cfg, name, id, work))
    }
    fn heal<'a>(&'a self, error: &'a (dyn std::error::Error + Send + Sync + 'static)) -> Compiled<'a, bool> {
        Box::pin(LeaseStore::heal(self, error))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spanner(store) => store.fmt(f),
            Self::Memory(store) => store.fmt(f),
            #[cfg(feature = "test-util")]
            Self::Custom(_) => f.write_str("a test store"),
        }
    }
}

impl From<SpannerStore> for Store {
    fn from(store: SpannerStore) -> Self {
        Self::Spanner(Arc::new(store))
    }
}

impl From<MemoryStore> for Store {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

impl Store {
    pub(crate) fn spanner(&self) -> Option<&SpannerStore> {
        match self {
            Self::Spanner(store) => Some(store),
            _ => None,
        }
    }

    pub(crate) const fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Self::Memory(store) => Some(store),
            _ => None,
        }
    }

    /// Any store, as a mutex's backend (tests: fault injection, latency, mirrors).
    #[cfg(feature = "test-util")]
    pub(crate) fn custom(store: impl LeaseStore) -> Self {
        let any: &dyn std::any::Any = &store;
        if let Some(spanner) = any.downcast_ref::<SpannerStore>() {
            return Self::Spanner(Arc::new(spanner.clone()));
        }
        if let Some(memory) = any.downcast_ref::<MemoryStore>() {
            return Self::Memory(memory.clone());
        }
        Self::Custom(Arc::new(store))
    }

    pub(crate) async fn transact(
        &self,
        cfg: &Config,
        name: &MutexName,
        request: &TxnRequest,
    ) -> Result<TxnReply, StoreError> {
        match self {
            Self::Spanner(store) => LeaseStore::transact(&**store, cfg, name, request).await,
            Self::Memory(store) => LeaseStore::transact(store, cfg, name, request).await,
            #[cfg(feature = "test-util")]
            Self::Custom(store) => DynStore::transact(&**store, cfg, name, request).await,
        }
    }

    pub(crate) async fn read(&self, name: &MutexName) -> Result<RowRead, StoreError> {
        match self {
            Self::Spanner(store) => LeaseStore::read(&**store, name).await,
            Self::Memory(store) => LeaseStore::read(store, name).await,
            #[cfg(feature = "test-util")]
            Self::Custom(store) => DynStore::read(&**store, name).await,
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the store's fenced write, as the trait has it")]
    pub(crate) async fn fenced(&self, cfg: &Config, name: &MutexName, id: WriteId, work: FencedWork) -> FencedAnswer {
        match self {
            Self::Spanner(store) => LeaseStore::fenced(&**store, cfg, name, id, work).await,
            Self::Memory(store) => LeaseStore::fenced(store, cfg, name, id, work).await,
            #[cfg(feature = "test-util")]
            Self::Custom(store) => DynStore::fenced(&**store, cfg, name, id, work).await,
        }
    }

    pub(crate) async fn heal(&self, error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        match self {
            Self::Spanner(store) => LeaseStore::heal(&**store, error).await,
            Self::Memory(store) => LeaseStore::heal(store, error).await,
            #[cfg(feature = "test-util")]
            Self::Custom(store) => DynStore::heal(&**store, error).await,
        }
    }
}
