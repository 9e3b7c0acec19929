//! What the library emits through the `metrics` facade, seen by a recorder installed as an app would install an
//! exporter's. In virtual time, so the histograms' values are exact.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use spanner_mutex::{ConfigParams, Mutexes, metric_names};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every counter and histogram value, by name and `mutex` label.
#[derive(Default)]
struct Captured {
    counters: Mutex<BTreeMap<(String, String), Arc<CounterCell>>>,
    histograms: Mutex<BTreeMap<(String, String), Arc<HistogramCell>>>,
}

#[derive(Default)]
struct CounterCell(Mutex<u64>);
impl metrics::CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        *self.0.lock().expect("not poisoned") += value;
    }
    fn absolute(&self, value: u64) {
        *self.0.lock().expect("not poisoned") = value;
    }
}

#[derive(Default)]
struct HistogramCell(Mutex<Vec<f64>>);
impl metrics::HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.0.lock().expect("not poisoned").push(value);
    }
}

fn key_of(key: &Key) -> (String, String) {
    let mutex = key.labels().find(|l| l.key() == "mutex").map(|l| l.value().to_owned()).unwrap_or_default();
    (key.name().to_owned(), mutex)
}

struct Capture(Arc<Captured>);
impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.0.counters.lock().expect("not poisoned");
        Counter::from_arc(Arc::clone(counters.entry(key_of(key)).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.0.histograms.lock().expect("not poisoned");
        Histogram::from_arc(Arc::clone(histograms.entry(key_of(key)).or_default()))
    }
}

impl Captured {
    fn counter(&self, name: &str, mutex: &str) -> u64 {
        let counters = self.counters.lock().expect("not poisoned");
        counters.get(&(name.to_owned(), mutex.to_owned())).map_or(0, |c| *c.0.lock().expect("not poisoned"))
    }
    fn histogram(&self, name: &str, mutex: &str) -> Vec<f64> {
        let histograms = self.histograms.lock().expect("not poisoned");
        histograms.get(&(name.to_owned(), mutex.to_owned())).map_or_else(Vec::new, |h| h.0.lock().expect("x").clone())
    }
}

#[tokio::test(start_paused = true)]
async fn acquisitions_hold_times_and_hand_over_waits_reach_the_apps_recorder() {
    let captured = Arc::new(Captured::default());
    metrics::set_global_recorder(Capture(Arc::clone(&captured))).expect("the only recorder in this test binary");
    let lease =
        ConfigParams { ttl_ms: 3_000, renew_interval_ms: 1_000, safety_margin_ms: 300, ..ConfigParams::default() };
    let mutexes = Mutexes::in_memory(lease.clone(), "pod").expect("valid");
    let (first, second) = (mutexes.mutex("jobs").expect("valid"), mutexes.mutex("jobs").expect("valid"));
    let held = first.acquire().await.expect("acquired");
    let waiter = tokio::spawn(async move { second.acquire().await.map(|g| (g, tokio::time::Instant::now())) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.release().await.expect("released");
    let (next, _) = waiter.await.expect("joined").expect("acquired");
    drop(next);
    first.shutdown().await;
    assert_eq!(captured.counter(metric_names::ACQUISITIONS, "jobs"), 2);
    assert!(captured.counter(metric_names::RENEWALS, "jobs") >= 1, "renewed while held for 2 s");
    assert!(captured.counter(metric_names::READS, "jobs") >= 1, "the waiter polled");
    let holds = captured.histogram(metric_names::HOLD_SECONDS, "jobs");
    assert_eq!(holds.first().copied(), Some(2.0), "{holds:?}");
    let waits = captured.histogram(metric_names::ACQUIRE_WAIT_SECONDS, "jobs");
    assert_eq!(waits.len(), 2, "{waits:?}");
    let poll_s = (lease.poll_ms + lease.jitter_ms) as f64 / 1e3;
    assert!(waits[0] == 0.0 && (2.0..=2.0 + poll_s).contains(&waits[1]), "{waits:?}");
}
