//! Conformance of the three implementations of the protocol's transitions: the model's reference semantics,
//! the real client over its in-memory store, and the real client over the Spanner emulator. One generated
//! sequence of operations is applied to all of them and the row, each client and the protected resource are
//! compared after every step. See docs/testing.md.

pub mod coverage;
pub mod driver;
pub mod emulator;
pub mod generate;
pub mod harness;
pub mod memory;
pub mod reference;

use harness::{Backend, Op, Side, compare};
use reference::Reference;
use spanner_mutex_check::keeps_lease_after_release;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

/// Runs a future that never waits (the reference and the in-memory store answer at once).
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a future that should answer at once is waiting"),
    }
}

/// The safety properties, judged on the reference after every step.
pub fn safety(reference: &Side<Reference>) -> Result<(), String> {
    let observed = reference.backend.observed();
    // Each lock holder writes its own effect; only a run-once section's effect is once for all clients.
    if !reference.lock_mode && observed.effects.len() > 1 {
        return Err(format!("the effect was applied twice: {:?}", observed.effects));
    }
    if reference.backend.stale_write_accepted {
        return Err("a write with a superseded fence was accepted".into());
    }
    if reference.backend.write_after_forced_release {
        return Err("a write of a force-released lease was accepted after the release".into());
    }
    // A holder whose lease an operator ended relies on it until it learns; fencing keeps the resource safe.
    let reliant: Vec<_> = reference
        .reliant()
        .into_iter()
        .filter(|&(i, fence)| {
            !reference.backend.may_rely_after_forced_release(reference.clients[i].machine.id(), fence)
        })
        .collect();
    if reliant.len() > 1 {
        return Err(format!("more than one client relies on the lease: {reliant:?}"));
    }
    if reference.terms_regressed {
        return Err("a lock client was granted a fence not above an earlier grant's".into());
    }
    for (i, client) in reference.clients.iter().enumerate() {
        let (id, row, now) = (client.machine.id(), reference.backend.row(), reference.backend.now());
        if let Some(outcome) = client.machine.outcome().filter(|o| keeps_lease_after_release(o, id, row, now)) {
            return Err(format!("client {i} reported {outcome:?} while the row still grants it the lease"));
        }
    }
    Ok(())
}

async fn compare_sides<B: Backend>(
    reference: &mut Side<Reference>,
    other: &mut Side<B>,
    slack_us: i64,
) -> Result<(), String> {
    let (r, o) = (reference.client_views(), other.client_views());
    for (i, (rc, oc)) in r.iter().zip(&o).enumerate() {
        if rc != oc {
            return Err(format!("client {i} differs:\n  reference {rc:?}\n  backend   {oc:?}"));
        }
    }
    compare(&reference.backend.observe().await, &other.backend.observe().await, slack_us)
}

/// Applies `ops` to the reference started from `init` and to a side over `backend`, comparing after every
/// step; returns the backend's side (for its transitions) or what differed first.
pub async fn run_case<B: Backend>(
    init: &Side<Reference>,
    ops: &[Op],
    backend: B,
    slack_us: i64,
    seen: Option<&AtomicUsize>,
) -> Result<Side<B>, String> {
    let mut reference = init.clone();
    let mut other = Side::new(init.cfg.clone(), backend, init.clients.len(), init.lock_mode).await;
    compare_sides(&mut reference, &mut other, slack_us).await.map_err(|e| format!("at the start: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        let step = i + 1;
        reference.apply(op).await.map_err(|e| format!("step {step} {op:?} is not applicable: {e}"))?;
        other
            .apply(op)
            .await
            .map_err(|e| format!("step {step} {op:?}: applicable to the reference, not to the backend: {e}"))?;
        safety(&reference).map_err(|e| format!("after step {step} {op:?}: {e}"))?;
        compare_sides(&mut reference, &mut other, slack_us)
            .await
            .map_err(|e| format!("after step {step} {op:?}: {e}"))?;
    }
    Ok(other)
}
