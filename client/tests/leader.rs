//! Leader election on the in-memory store, in virtual time (tokio's paused clock moves the store's server clock
//! too), so the timing promises are checked exactly.

use spanner_mutex::google_cloud_spanner::mutation::Mutation;
use spanner_mutex::{ConfigParams, Holder, MemoryStore, Mutexes, SpannerMutex};
use std::time::Duration;
use tokio::time::Instant;

fn lease() -> ConfigParams {
    ConfigParams { ttl_ms: 3_000, renew_interval_ms: 1_000, safety_margin_ms: 300, ..ConfigParams::default() }
}

/// The hand-over bound: one poll period and its jitter (a read in memory takes no time).
fn poll_bound() -> Duration {
    let lease = lease();
    Duration::from_millis(lease.poll_ms + lease.jitter_ms)
}

/// The in-memory store the mutexes are on.
fn memory(mutexes: &Mutexes) -> &MemoryStore {
    mutexes.memory().expect("on the in-memory store")
}

fn candidates(store: &Mutexes) -> (SpannerMutex, SpannerMutex) {
    (store.mutex("leader").expect("valid"), store.mutex("leader").expect("valid"))
}

#[tokio::test(start_paused = true)]
async fn a_resigned_leader_is_followed_within_one_poll_and_observers_see_each_term() {
    let mutexes = Mutexes::in_memory(lease(), "pod").expect("valid");
    let (a, b) = candidates(&mutexes);
    let observer = mutexes.mutex("leader").expect("valid");
    let mut leaders = observer.observe();
    let first = a.campaign().await.expect("leads");
    leaders.changed().await.expect("watching");
    let seen: Option<Holder> = leaders.borrow_and_update().clone();
    assert_eq!(seen.map(|h| h.fence), Some(first.term()));
    let waiting = tokio::spawn(async move { b.campaign().await.map(|l| (l.term(), Instant::now(), l)) });
    // B waits while A leads and renews, far past one TTL.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished(), "two leaders");
    assert!(!first.is_lock_lost());
    let old_term = first.term();
    first.resign().await.expect("resigned");
    let resigned_at = Instant::now();
    let (term, led_at, second) = waiting.await.expect("joined").expect("leads");
    assert!(term > old_term, "terms increase: {term} after {old_term}");
    assert!(led_at - resigned_at <= poll_bound(), "handed over after {:?}", led_at - resigned_at);
    // The observer may first see the moment with no leader; within one poll it sees the new term.
    let seen = tokio::time::timeout(poll_bound(), leaders.wait_for(|l| l.as_ref().is_some_and(|h| h.fence == term)));
    seen.await.expect("within one poll").expect("watching");
    assert_eq!(observer.leader().await.expect("reads").map(|h| h.fence), Some(term));
    drop(second);
    observer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_past_its_lease_loses_leadership_and_its_old_term_cannot_write() {
    let mutexes = Mutexes::in_memory(lease(), "pod").expect("valid");
    let (a, b) = candidates(&mutexes);
    let first = a.campaign().await.expect("leads");
    // Spanner's clock runs two TTLs ahead (the leader's renewals were lost, as if it had been stopped): B takes
    // over, and A's next renewal is refused.
    memory(&mutexes).advance_server_clock_ms(2 * lease().ttl_ms);
    let second = tokio::time::timeout(poll_bound() * 2, b.campaign()).await.expect("in time").expect("leads");
    assert!(second.term() > first.term());
    tokio::time::timeout(Duration::from_millis(lease().ttl_ms), first.lock_lost()).await.expect("told it lost");
    let write = |term: &str| vec![Mutation::new_insert_builder("Terms").set("id").to(term).build()];
    let refused = first.commit(write("old-term")).await;
    assert!(refused.is_err(), "a write of the old term landed: {refused:?}");
    assert!(second.commit(write("new-term")).await.is_ok());
    assert_eq!(memory(&mutexes).mutations(), write("new-term"), "only the new term's write committed");
}

#[tokio::test(start_paused = true)]
async fn a_campaign_dropped_while_waiting_or_shut_down_while_leading_leaves_nothing_held() {
    let mutexes = Mutexes::in_memory(lease(), "pod").expect("valid");
    let (a, b) = candidates(&mutexes);
    let leading = a.campaign().await.expect("leads");
    // B gives up waiting: nothing of it remains.
    assert!(tokio::time::timeout(Duration::from_secs(1), b.campaign()).await.is_err());
    // This process shuts down (SIGTERM) while A leads: it resigns at once, so a candidate of another process
    // (the same store, its own Mutexes) leads without waiting for the TTL.
    mutexes.shutdown().await;
    assert!(leading.is_lock_lost());
    assert!(matches!(a.campaign().await, Err(spanner_mutex::RunError::Cancelled)), "shut down means no new runs");
    let cfg = mutexes.config().clone();
    let c = SpannerMutex::on_store(
        memory(&mutexes).clone(),
        cfg,
        spanner_mutex::MutexName::new("leader").expect("ok"),
        "c",
    );
    let next = c.try_acquire().await.expect("no error");
    assert!(next.is_some(), "the shut-down leader still held it: {}", c.status().await.expect("reads"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_died_is_replaced_within_its_ttl_and_one_poll() {
    use spanner_mutex::LeaseStore;
    use spanner_mutex_model::txn::Mode;
    use spanner_mutex_model::{ClientId, MutexName, TxnRequest};
    let mutexes = Mutexes::in_memory(lease(), "pod").expect("valid");
    // A leader that won and then died (SIGKILL): nobody renews or releases its lease.
    let dead = TxnRequest::Acquire { client: ClientId::from_u128(7), holder_name: "dead".into(), mode: Mode::Lock };
    let name = MutexName::new("leader").expect("valid");
    memory(&mutexes).transact(mutexes.config(), &name, &dead).await.expect("the dead leader acquired");
    let died_at = Instant::now();
    let next = mutexes.mutex("leader").expect("valid").campaign().await.expect("leads");
    let took = died_at.elapsed();
    assert!(took <= Duration::from_millis(lease().ttl_ms) + poll_bound(), "replaced after {took:?}");
    assert!(took >= Duration::from_millis(lease().ttl_ms), "replaced before its lease ended: {took:?}");
    drop(next);
}

#[tokio::test(start_paused = true)]
async fn any_handle_of_a_name_shares_its_counters_and_its_shutdown() {
    let mutexes = Mutexes::in_memory(lease(), "pod").expect("valid");
    let leading = mutexes.mutex("leader").expect("valid").campaign().await.expect("leads");
    // A handle made later, e.g. in a SIGTERM handler, sees the same mutex.
    let later = mutexes.mutex("leader").expect("valid");
    assert_eq!(later.metrics().acquisitions, 1);
    later.shutdown().await;
    assert!(leading.is_lock_lost(), "the leadership was resigned by the shutdown");
    assert_eq!(later.status().await.expect("reads").holder(), None);
}
