//! Futures compiled once, in this crate.

/// A future compiled once, in this crate. An `async fn`'s body is compiled where its future is polled: without
/// this, every crate that drives a mutex compiled the whole Spanner client stack again.
pub(crate) type Compiled<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
