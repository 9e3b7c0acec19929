//! Running a check and telling people what it found: a one-line summary, and counterexamples as numbered steps
//! in words plus an encoded path that `explore`, the simulator and tests can replay.

use crate::properties::{DOUBLE_EXECUTION, SAFETY, SEVERITY};
use crate::search::progress_line;
use crate::{Action, CheckOptions, LeaseModel, Op, SERVER_CLOCK_ERROR_MS, Section, WorldState, encode_path};
use serde::Serialize;
use spanner_mutex_model::world::{ClockError, CommitFate, Late, Work};
use spanner_mutex_model::{ClientId, LeaseRow};
use stateright::report::{ReportData, ReportDiscovery, Reporter};
use stateright::{Checker, HasDiscoveries, Model, Path};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Whether the check passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every `always` held and every `sometimes` was reached.
    Pass,
    /// An `always` property was violated.
    Violated,
    /// Nothing was violated, but some `sometimes` was never reached: the model may be vacuous.
    Unreached,
}

/// A violated property with the path that violates it.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    /// The property.
    pub property: &'static str,
    /// The steps in words, numbered from 1.
    pub steps: Vec<String>,
    /// The actions, replayable with [`crate::decode_path`].
    pub encoded: String,
}

/// What a check found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckSummary {
    /// States generated, counting revisits.
    pub states: usize,
    /// Distinct states; with the reduction by time shifts, distinct classes (states that differ only by when
    /// they happen are one).
    pub unique_states: usize,
    /// States expanded again because their class was visited first at a later server time (the reduction by
    /// time shifts; 0 without it).
    pub revisits: usize,
    /// Longest path explored.
    pub max_depth: usize,
    /// Wall time.
    pub seconds: f64,
    /// `states / seconds`.
    pub states_per_second: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Violated `always` properties.
    pub counterexamples: Vec<Counterexample>,
    /// `sometimes` properties never reached (reported only when nothing was violated).
    pub unreached: Vec<&'static str>,
}

impl CheckSummary {
    /// The one summary line every run ends with.
    pub fn line(&self) -> String {
        format!(
            "states={} unique={} revisits={} max_depth={} seconds={:.2} states_per_second={:.0} verdict={}",
            self.states,
            self.unique_states,
            self.revisits,
            self.max_depth,
            self.seconds,
            self.states_per_second,
            match self.verdict {
                Verdict::Pass => "PASS",
                Verdict::Violated => "VIOLATED",
                Verdict::Unreached => "UNREACHED",
            }
        )
    }
}

/// Prints a progress line every `interval` to the writer; nothing for short runs. Polled often so a finished
/// check is not kept waiting for the next line.
struct Progress<W> {
    out: W,
    interval: Duration,
    printed: Duration,
}

impl<W: Write> Reporter<LeaseModel> for Progress<W> {
    fn report_checking(&mut self, data: ReportData) {
        if !data.done && data.duration >= self.printed + self.interval {
            self.printed = data.duration;
            let line = progress_line(data.total_states, data.unique_states, data.max_depth, data.duration);
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn report_discoveries(&mut self, _: &LeaseModel, _: BTreeMap<&'static str, ReportDiscovery<LeaseModel>>) {}

    fn delay(&self) -> Duration {
        Duration::from_millis(20)
    }
}

/// How the search runs.
#[derive(Clone, Copy, Debug)]
pub struct SearchOptions {
    /// Worker threads.
    pub threads: usize,
    /// Stop paths at this depth (None: exhaustive within the time bound).
    pub max_depth: Option<usize>,
    /// Depth-first exhaustive pass (default; fastest, least memory) instead of breadth-first.
    pub depth_first: bool,
    /// Interval between progress lines on stderr.
    pub progress_interval: Duration,
    /// Reduce by client symmetry (depth-first only; ignored by the naive protocol, whose clients differ).
    pub symmetry: bool,
    /// Reduce by time shifts: a state is not expanded when one that differs from it only by happening earlier
    /// (or at the same time) was (depth-first only; ignored by the naive protocol, whose clients read wall clocks).
    pub time_shifts: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            threads: 2,
            max_depth: None,
            depth_first: true,
            progress_interval: Duration::from_secs(5),
            symmetry: true,
            time_shifts: true,
        }
    }
}

/// Runs one stateright search and returns its counts and discoveries.
pub(super) fn search(
    model: &LeaseModel,
    search: SearchOptions,
    depth_first: bool,
    stop_at: &'static str,
) -> (usize, usize, usize, std::collections::HashMap<&'static str, Path<WorldState, Action>>) {
    let stop = HasDiscoveries::AnyOf([stop_at].into_iter().collect());
    let mut builder = model.clone().checker().threads(search.threads).finish_when(stop);
    if let Some(depth) = search.max_depth {
        builder = builder.target_max_depth(depth);
    }
    let mut progress = Progress { out: std::io::stderr(), interval: search.progress_interval, printed: Duration::ZERO };
    if depth_first {
        // stateright honours symmetry only in depth-first search.
        if let Some(representative) = model.symmetry().filter(|_| search.symmetry) {
            builder = builder.symmetry_fn(representative);
        }
        let checker = builder.spawn_dfs().join_and_report(&mut progress);
        (checker.state_count(), checker.unique_state_count(), checker.max_depth(), checker.discoveries())
    } else {
        let checker = builder.spawn_bfs().join_and_report(&mut progress);
        (checker.state_count(), checker.unique_state_count(), checker.max_depth(), checker.discoveries())
    }
}

/// Checks `options` exhaustively and summarises. The exhaustive pass is depth-first (fastest, least memory: the
/// search of `search.rs`) unless `search.depth_first` is false (stateright's breadth-first search), and goes on
/// past other violations until it finds a double execution, the headline failure. When it found any violation, a breadth-first search for the most severe one it found
/// gives the shortest counterexample to print.
pub fn run_check(options: CheckOptions, search_options: SearchOptions) -> CheckSummary {
    let model = LeaseModel::new(options).tallying_witnesses();
    let started = Instant::now();
    let (states, unique_states, revisits, max_depth, violated) = if search_options.depth_first {
        let limits = crate::search::Limits {
            threads: search_options.threads,
            max_depth: search_options.max_depth,
            symmetry: search_options.symmetry,
            time_shifts: search_options.time_shifts,
            stop_at: DOUBLE_EXECUTION,
            progress_interval: search_options.progress_interval,
        };
        let found = crate::search::exhaustive(&model, &limits);
        (found.states, found.unique_states, found.revisits, found.max_depth, found.violated)
    } else {
        let (states, unique_states, max_depth, discoveries) = search(&model, search_options, false, DOUBLE_EXECUTION);
        (states, unique_states, 0, max_depth, discoveries.into_keys().collect())
    };
    let seconds = started.elapsed().as_secs_f64();
    let most_severe = SEVERITY.iter().find(|name| violated.contains(*name));
    // The exhaustive pass keeps no paths: a breadth-first search finds the shortest one to the worst violation.
    let discoveries = match most_severe {
        Some(headline) => search(&model, search_options, false, headline).3,
        None => std::collections::HashMap::new(),
    };
    let mut counterexamples: Vec<Counterexample> = SAFETY
        .iter()
        .filter_map(|name| {
            discoveries.get(name).map(|path| Counterexample {
                property: name,
                steps: describe_path(&model, path),
                encoded: encode_path(&path.clone().into_actions()),
            })
        })
        .collect();
    counterexamples.sort_by_key(|c| SEVERITY.iter().position(|name| *name == c.property));
    let unreached = if counterexamples.is_empty() { model.unreached() } else { Vec::new() };
    let verdict = if !counterexamples.is_empty() {
        Verdict::Violated
    } else if !unreached.is_empty() {
        Verdict::Unreached
    } else {
        Verdict::Pass
    };
    CheckSummary {
        states,
        unique_states,
        revisits,
        max_depth,
        seconds,
        states_per_second: states as f64 / seconds.max(1e-9),
        verdict,
        counterexamples,
        unreached,
    }
}

/// The companions a search finds unreached when their witnesses are marked in the states (the Explorer's way),
/// for tests that the tally of [`LeaseModel::tallying_witnesses`] judges the same.
#[cfg(test)]
pub(super) fn unreached_marked_in_states(options: CheckOptions, search_options: SearchOptions) -> Vec<&'static str> {
    let model = LeaseModel::new(options);
    let discoveries = search(&model, search_options, search_options.depth_first, DOUBLE_EXECUTION).3;
    model
        .properties()
        .into_iter()
        .filter(|p| p.expectation == stateright::Expectation::Sometimes && !discoveries.contains_key(p.name))
        .map(|p| p.name)
        .collect()
}

fn who(id: ClientId) -> String {
    let raw = id.uuid().as_u128();
    let (slot, incarnation) = ((raw >> 8).saturating_sub(1), raw & 0xFF);
    if incarnation == 0 { format!("client {slot}") } else { format!("client {slot} (restart {incarnation})") }
}

fn row_text(row: Option<&LeaseRow>) -> String {
    match row {
        None => "no row".into(),
        Some(r) => format!(
            "row {} by {} fence {} expires {}ms",
            r.status,
            who(r.holder),
            r.fence.get(),
            r.expires_at.unix_micros() / 1_000
        ),
    }
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Idle => String::new(),
        Op::NeedCheck => " checking need".to_owned(),
        Op::TxnRead { request, .. } => format!(" committing {}", request_kind(request)),
    }
}

/// A server time of the checked world (which starts at 0) in milliseconds.
fn ms(time: spanner_mutex_model::ServerTime) -> String {
    format!("{} ms", time.unix_micros() / 1_000)
}

/// A transaction's reply in words.
fn reply_words(reply: &spanner_mutex_model::txn::TxnReply) -> String {
    use spanner_mutex_model::txn::{AcquisitionKind, TxnReply};
    match reply {
        TxnReply::Acquired { fence, expires_at, kind } => {
            let why = match kind {
                AcquisitionKind::Fresh => "a free row",
                AcquisitionKind::AfterFailure => "after a failed run",
                AcquisitionKind::Takeover => "a takeover of an expired lease",
                AcquisitionKind::Reentrant => "its own lease, found held",
            };
            format!("ACQUIRED fence {} until {} ({why})", fence.get(), ms(*expires_at))
        }
        TxnReply::Busy { holder, fence, expires_at, .. } => {
            format!("busy: {} holds fence {} until {}", who(*holder), fence.get(), ms(*expires_at))
        }
        TxnReply::DoneByOther { holder, fence } => format!("done by {} with fence {}", who(*holder), fence.get()),
        TxnReply::Renewed { expires_at } => format!("renewed until {}", ms(*expires_at)),
        TxnReply::Released => "released".to_owned(),
        TxnReply::FenceValid => "fence valid".to_owned(),
        TxnReply::AlreadyApplied => "already applied".to_owned(),
        TxnReply::NotHolder => "refused: no longer the holder".to_owned(),
        TxnReply::OperatorApplied { holder, fence, .. } => {
            format!("applied to {}'s fence {}", who(*holder), fence.get())
        }
        TxnReply::OperatorNotApplicable { status: Some(status), .. } => format!("nothing to do: the row is {status}"),
        TxnReply::OperatorNotApplicable { status: None, .. } => "nothing to do: the mutex has no row".to_owned(),
    }
}

/// What a fate other than "as decided" does to a transaction, in words (`reply`: what it would have said).
fn fate_words(fate: CommitFate, reply: Option<&spanner_mutex_model::txn::TxnReply>) -> String {
    let would = reply.map(|reply| format!(", which said: {}", reply_words(reply))).unwrap_or_default();
    match fate {
        CommitFate::AsDecided => format!("commits{would}"),
        CommitFate::Aborted => "aborts (a transient abort)".to_owned(),
        CommitFate::UnknownLanded => format!("gets no answer, but it landed{would}"),
        CommitFate::UnknownLost => "gets no answer, and it did not land".to_owned(),
        CommitFate::UnknownLate => format!("gets no answer, and will land later{would}"),
        CommitFate::Unavailable => "is refused: Spanner unavailable, nothing written".to_owned(),
    }
}

fn request_kind(request: &spanner_mutex_model::TxnRequest) -> &'static str {
    match request {
        spanner_mutex_model::TxnRequest::Acquire { .. } => "acquire",
        spanner_mutex_model::TxnRequest::Renew { .. } => "renew",
        spanner_mutex_model::TxnRequest::Release { .. } => "release",
        spanner_mutex_model::TxnRequest::VerifyFence { .. } => "verify-fence",
        spanner_mutex_model::TxnRequest::Operator { action, .. } => action.words(),
    }
}

fn step_words(model: &LeaseModel, before: &WorldState, action: Action, after: &WorldState) -> String {
    let client = |c: u8| who(before.clients[usize::from(c)].machine.id());
    match action {
        Action::Tick => format!("server time advances to {} ms", after.now_ms),
        Action::TxnCommit(c, fate) => match &before.clients[usize::from(c)].op {
            Op::TxnRead { request, read_at, .. } => {
                let reply =
                    spanner_mutex_model::txn::plan(&model.cfg, request, before.spanner.row.as_ref(), *read_at).reply;
                let conflict = matches!(&before.clients[usize::from(c)].op, Op::TxnRead { row_unchanged: false, .. });
                let what = if conflict {
                    "aborts: the row changed since it read it".to_owned()
                } else {
                    match fate {
                        CommitFate::AsDecided => format!("commits: {}", reply_words(&reply)),
                        fate => fate_words(fate, Some(&reply)),
                    }
                };
                format!("{}'s {} {what}", client(c), request_kind(request))
            }
            Op::Idle | Op::NeedCheck => format!("{}'s transaction {}", client(c), fate_words(fate, None)),
        },
        Action::TxnUnanswered(c, fate) => {
            let what = match &before.clients[usize::from(c)].op {
                Op::TxnRead { request, .. } => format!("{}'s {}", client(c), request_kind(request)),
                Op::Idle | Op::NeedCheck => format!("{}'s transaction", client(c)),
            };
            format!("{what} {}, and Spanner does not answer the read that would resolve it", fate_words(fate, None))
        }
        Action::Timeout(c) => format!("{}'s timer fires", client(c)),
        Action::TimeoutUnanswered(c) => format!("{}'s timer fires and Spanner does not answer its read", client(c)),
        Action::SectionWrite(c, fate) => {
            let number = match before.clients[usize::from(c)].section {
                Section::Started(work) => work.write,
                _ => 1,
            };
            // Applied (or found applied): the section went on to its next write, or finished writing.
            let applied = match after.clients[usize::from(c)].section {
                Section::Wrote => true,
                Section::Started(work) => work.write > number,
                _ => false,
            };
            // A lock holder's write is not the run-once effect: whether it landed shows in the row's record.
            let record = |state: &WorldState| state.spanner.row.as_ref().map(|row| (row.fence, row.fenced_writes));
            let landed = after.effects.len() > before.effects.len() || record(after) != record(before);
            let verdict = match (fate, landed) {
                (CommitFate::AsDecided, true) => "ACCEPTED".to_owned(),
                (CommitFate::AsDecided, false) if applied => "found already applied".to_owned(),
                (CommitFate::AsDecided, false) => "rejected".to_owned(),
                (_, landed) => format!(
                    "no answer ({}); {}",
                    if landed { "it landed" } else { "it did not land" },
                    if after.clients[usize::from(c)].section == Section::Unanswered {
                        "its run's unavailability budget is spent, so the section ends with Spanner unavailable"
                    } else {
                        "the section will retry"
                    }
                ),
            };
            format!("{}'s section makes fenced write {number}: {verdict}", client(c))
        }
        Action::SectionReturn(c) if before.clients[usize::from(c)].kind.is_lock_mode() => {
            format!("{}'s user releases", client(c))
        }
        Action::SectionReturn(c) => format!("{}'s section returns", client(c)),
        Action::NeedAnswer(c) => {
            format!(
                "{}'s need check answers: {}",
                client(c),
                if before.effects.is_empty() { "needed" } else { "not needed" }
            )
        }
        // Only a check under the lease fails (`need_check_may_fail`).
        Action::NeedFail(c) => format!("{}'s need check fails under the lease", client(c)),
        Action::Cancel(c) => {
            format!("{}'s user cancels in {}", client(c), before.clients[usize::from(c)].machine.phase())
        }
        Action::SectionFail(c) => format!("{}'s section fails", client(c)),
        Action::Crash(c) => format!("{} crashes and restarts", client(c)),
        Action::Drift(c) => format!("{}'s clock falls 1 ms behind", client(c)),
        Action::LateCommit => {
            // Witness marks may already be tallied away from `after`; what the commit changed is not.
            let landed = before.spanner.row != after.spanner.row || before.effects != after.effects;
            let what = match before.queued.as_ref().map(|queued| &queued.late) {
                Some(Late::Txn { request, .. }) => format!(
                    "{}'s {}",
                    request.client().map_or_else(|| "an operator".to_owned(), who),
                    request_kind(request)
                ),
                Some(Late::FencedWrite { writer, .. }) => format!("{}'s fenced write", who(*writer)),
                None => "nothing".to_owned(),
            };
            format!("the queued commit of {what} reaches Spanner: {}", if landed { "LANDS" } else { "aborts" })
        }
        Action::TxnDelay(c) => format!("{}'s transaction starts executing only now", client(c)),
        Action::Operator(action) => format!("an operator {} the lease row", action.words()),
        Action::ClockError(c, error) => {
            let way = match error {
                ClockError::Early => "early",
                ClockError::Late => "late",
            };
            format!("the server clock {}'s transaction read was {SERVER_CLOCK_ERROR_MS} ms {way}", client(c))
        }
    }
}

/// One client of a state in words: its phase, operation in flight, section and outcome.
fn client_words(client: &crate::ClientSlot) -> String {
    let section = match client.section {
        Section::Idle => String::new(),
        Section::Started(Work { write: 1, .. }) => " +section".to_owned(),
        Section::Started(work) => format!(" +section(write {})", work.write),
        Section::Wrote | Section::Rejected => " +section(written)".to_owned(),
        Section::Unanswered => " +section(write unanswered)".to_owned(),
    };
    let outcome = client.machine.outcome().map(|o| format!(" {}", o.words(who))).unwrap_or_default();
    format!("{}{}{section}{outcome}", client.machine.phase(), op_text(&client.op))
}

fn effects_words(state: &WorldState) -> String {
    let effects: Vec<String> = state
        .effects
        .iter()
        .map(|e| match e.write {
            1 => format!("{} fence {}", who(e.writer), e.fence.get()),
            write => format!("{} fence {} write {write}", who(e.writer), e.fence.get()),
        })
        .collect();
    if effects.is_empty() { "none".to_owned() } else { effects.join(", ") }
}

fn state_words(state: &WorldState) -> String {
    let clients: Vec<String> =
        state.clients.iter().enumerate().map(|(i, c)| format!("c{i}:{}", client_words(c))).collect();
    format!("[{}; {}; effects: {}]", row_text(state.spanner.row.as_ref()), clients.join(", "), effects_words(state))
}

/// A state in words, a line per part, for a person reading one state (the Explorer's state pane).
pub(crate) fn state_in_words(state: &WorldState) -> String {
    let mut lines = vec![format!("server time: {} ms", state.now_ms), row_text(state.spanner.row.as_ref())];
    for client in &state.clients {
        lines.push(format!("{}: {}", who(client.machine.id()), client_words(client)));
    }
    lines.push(format!("effects: {}", effects_words(state)));
    let queued = match state.queued.as_ref().map(|queued| &queued.late) {
        Some(Late::Txn { request, .. }) => {
            format!("{}'s {}", request.client().map_or_else(|| "an operator".to_owned(), who), request_kind(request))
        }
        Some(Late::FencedWrite { writer, .. }) => format!("{}'s fenced write", who(*writer)),
        None => "none".to_owned(),
    };
    lines.push(format!("commit on its way after an unknown answer: {queued}"));
    lines.push(format!(
        "faults left: {}; cancels left: {}; operator actions left: {}",
        state.faults_left, state.cancels_left, state.operators_left
    ));
    lines.join("\n")
}

/// A path as numbered steps in words, each followed by the state it leads to.
pub fn describe_path(model: &LeaseModel, path: &Path<WorldState, Action>) -> Vec<String> {
    let steps = path.clone().into_vec();
    let mut lines = Vec::new();
    for (n, pair) in steps.windows(2).enumerate() {
        let (before, Some(action)) = &pair[0] else { continue };
        let after = &pair[1].0;
        lines.push(format!("{:>3}. {}  {}", n + 1, step_words(model, before, *action, after), state_words(after)));
    }
    lines
}
