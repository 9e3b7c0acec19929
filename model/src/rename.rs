//! Consistent renamings of the values a machine or a request holds.

use crate::{ClientId, Fence, LocalInstant};

/// A renaming of the client ids, local instants and fences a [`crate::ClientMachine`] or a
/// [`crate::TxnRequest`] holds; each method defaults to leaving its value as it is.
///
/// The protocol only compares client ids for equality, only adds to and compares instants, and only compares
/// fences. So a machine renamed by a one-to-one map of ids, a shift of all its instants by one amount, and an
/// order-keeping renumbering of its fences decides as the original would in the world renamed alike: what a search
/// over the states of many machines uses to treat such states as one.
pub trait Rename {
    /// The new name of client `id`.
    fn client(&self, id: ClientId) -> ClientId {
        id
    }

    /// The new value of local instant `at`.
    fn instant(&self, at: LocalInstant) -> LocalInstant {
        at
    }

    /// The new number of `fence`.
    fn fence(&self, fence: Fence) -> Fence {
        fence
    }
}
