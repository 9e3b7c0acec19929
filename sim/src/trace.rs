//! What a run leaves behind for people: a timeline of lines (also written as JSON lines) and a picture of the run
//! as an SVG: one lane per client plus one per lease row, with lease intervals, fences, faults and effects.

use serde::Serialize;
use spanner_mutex_model::{Fence, Status};
use std::fmt::Write as _;

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceLine {
    /// Simulated time, microseconds since the start.
    pub at_us: u64,
    /// Who: a client run (`a#2`), a row (`row0`) or the world.
    pub who: String,
    /// What kind of step: `commit`, `row`, `effect`, `fault`, `VIOLATION`, ...
    pub kind: &'static str,
    /// The step in words.
    pub detail: String,
}

impl TraceLine {
    /// The line as the timeline prints it.
    pub fn text(&self) -> String {
        format!("{:>11}  {:<8} {}", seconds(self.at_us), self.who, self.detail)
    }
}

/// `12.345678s`.
pub fn seconds(us: u64) -> String {
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// A lease a client relied on, for the picture.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaseSpan {
    client: usize,
    fence: Fence,
    from_us: u64,
    to_us: u64,
}

/// A row state, for the picture.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowSpan {
    mutex: usize,
    from_us: u64,
    status: Status,
    fence: Fence,
    holder: String,
}

/// A point or interval on a client lane (or every lane, for `client: None`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mark {
    client: Option<usize>,
    from_us: u64,
    to_us: u64,
    what: &'static str,
}

/// A fenced write, for the picture.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EffectMark {
    client: usize,
    at_us: u64,
    fence: Fence,
    accepted: bool,
}

/// The records the picture is drawn from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    leases: Vec<LeaseSpan>,
    rows: Vec<RowSpan>,
    marks: Vec<Mark>,
    effects: Vec<EffectMark>,
}

impl Records {
    /// A client relied on a lease with `fence` from `from_us` to `to_us`.
    pub fn lease(&mut self, client: usize, fence: Fence, from_us: u64, to_us: u64) {
        self.leases.push(LeaseSpan { client, fence, from_us, to_us });
    }

    /// A row changed.
    pub fn row_change(&mut self, at_us: u64, mutex: usize, status: Status, fence: Fence, holder: &str) {
        self.rows.push(RowSpan { mutex, from_us: at_us, status, fence, holder: holder.to_owned() });
    }

    /// A point event on a client lane.
    pub fn mark(&mut self, at_us: u64, client: usize, what: &'static str) {
        self.marks.push(Mark { client: Some(client), from_us: at_us, to_us: at_us, what });
    }

    /// An interval on a client lane, or on all lanes.
    pub fn interval(&mut self, client: Option<usize>, from_us: u64, to_us: u64, what: &'static str) {
        self.marks.push(Mark { client, from_us, to_us, what });
    }

    /// A fenced write.
    pub fn effect(&mut self, at_us: u64, client: usize, fence: Fence, accepted: bool) {
        self.effects.push(EffectMark { client, at_us, fence, accepted });
    }
}

/// The trace and the picture's records of one run; does nothing unless enabled, so sweeps pay nothing for it.
#[derive(Clone, Debug, Default)]
pub struct Log {
    enabled: bool,
    lines: Vec<TraceLine>,
    records: Records,
}

impl Log {
    /// A log that records only if `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, ..Self::default() }
    }

    /// Whether it records.
    pub const fn enabled(&self) -> bool {
        self.enabled
    }

    /// Appends a line (callers check [`Self::enabled`] before building it).
    pub fn push(&mut self, line: TraceLine) {
        if self.enabled {
            self.lines.push(line);
        }
    }

    /// Records something for the picture.
    pub fn draw(&mut self, record: impl FnOnce(&mut Records)) {
        if self.enabled {
            record(&mut self.records);
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> &[TraceLine] {
        &self.lines
    }

    /// The picture of the run, if recording.
    pub fn picture(&self, clients: Vec<String>, mutexes: usize, end_us: u64) -> Option<Picture> {
        self.enabled.then(|| Picture { clients, mutexes, end_us, records: self.records.clone() })
    }
}

/// Bars narrower than this carry no fence label.
const FENCE_LABEL_PX: u64 = 36;

/// A fence as a bar's label: its last four digits, which tell consecutive fences apart (a fence is a server time
/// in microseconds plus a count, 16 digits).
fn fence_label(fence: Fence) -> String {
    let digits = fence.get().to_string();
    if digits.len() > 5 { format!("…{}", &digits[digits.len() - 4..]) } else { digits }
}

/// The time between axis ticks: the first of 1, 2 and 5 times a power of ten milliseconds that gives at most
/// 12 ticks over `end_us`.
fn tick_step_us(end_us: u64) -> u64 {
    let mut power_us = 1_000;
    loop {
        for step_us in [power_us, 2 * power_us, 5 * power_us] {
            if end_us / step_us <= 12 {
                return step_us;
            }
        }
        power_us *= 10;
    }
}

/// A tick's label in seconds, with as many decimals as the step needs.
fn tick_label(us: u64, step_us: u64) -> String {
    let decimals = if step_us < 100_000 {
        3
    } else if step_us < 1_000_000 {
        1
    } else {
        0
    };
    format!("{:.*}s", decimals, us as f64 / 1e6)
}

/// The picture of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    clients: Vec<String>,
    mutexes: usize,
    end_us: u64,
    records: Records,
}

const LEFT_PX: u64 = 90;
const PLOT_PX: u64 = 1_100;
const LANE_PX: u64 = 34;
/// Room above the lanes for the two lines of the legend.
const TOP_PX: u64 = 44;

impl Picture {
    fn x(&self, us: u64) -> u64 {
        LEFT_PX + us.min(self.end_us) * PLOT_PX / self.end_us.max(1)
    }

    fn row_lane_y(&self, mutex: usize) -> u64 {
        TOP_PX + LANE_PX * mutex as u64
    }

    fn client_lane_y(&self, client: usize) -> u64 {
        TOP_PX + LANE_PX * (self.mutexes + client) as u64
    }

    /// The SVG document.
    pub fn svg(&self) -> String {
        let lanes = (self.mutexes + self.clients.len()) as u64;
        let height = TOP_PX + LANE_PX * lanes + 40;
        let width = LEFT_PX + PLOT_PX + 20;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
        // Outages span every lane.
        for m in self.records.marks.iter().filter(|m| m.client.is_none()) {
            let (x0, x1) = (self.x(m.from_us), self.x(m.to_us));
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{TOP_PX}" width="{}" height="{}" fill="#f4cccc"><title>{} {}..{}</title></rect>"##,
                (x1 - x0).max(1),
                LANE_PX * lanes,
                m.what,
                seconds(m.from_us),
                seconds(m.to_us)
            );
        }
        for mutex in 0..self.mutexes {
            let y = self.row_lane_y(mutex);
            let _ = writeln!(s, r#"<text x="4" y="{}">row {mutex}</text>"#, y + 20);
        }
        for (c, name) in self.clients.iter().enumerate() {
            let y = self.client_lane_y(c);
            let _ = writeln!(s, r#"<text x="4" y="{}">{name}</text>"#, y + 20);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT_PX}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>"##,
                y + 17,
                LEFT_PX + PLOT_PX,
                y + 17
            );
        }
        // Row states: STARTED blue, DONE green, FAILED orange, each until the next change.
        for (i, r) in self.records.rows.iter().enumerate() {
            let to_us =
                self.records.rows[i + 1..].iter().find(|n| n.mutex == r.mutex).map_or(self.end_us, |n| n.from_us);
            let (x0, x1) = (self.x(r.from_us), self.x(to_us));
            let colour = match r.status {
                Status::Started => "#9fc5e8",
                Status::Done => "#b6d7a8",
                Status::Failed => "#f9cb9c",
            };
            let y = self.row_lane_y(r.mutex) + 6;
            let _ = writeln!(
                s,
                r#"<rect x="{x0}" y="{y}" width="{}" height="22" fill="{colour}" stroke="white"><title>{} fence {} by {}</title></rect>"#,
                (x1 - x0).max(1),
                r.status,
                r.fence.get(),
                r.holder
            );
            if x1 - x0 > FENCE_LABEL_PX {
                let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, x0 + 3, y + 15, fence_label(r.fence));
            }
        }
        // Leases the client relied on: a bar labelled with the fence.
        for l in &self.records.leases {
            let (x0, x1) = (self.x(l.from_us), self.x(l.to_us));
            let y = self.client_lane_y(l.client) + 8;
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y}" width="{}" height="18" fill="#3d85c6"><title>relies on fence {} {}..{}</title></rect>"##,
                (x1 - x0).max(1),
                l.fence.get(),
                seconds(l.from_us),
                seconds(l.to_us)
            );
            if x1 - x0 > FENCE_LABEL_PX {
                let _ =
                    writeln!(s, r#"<text x="{}" y="{}" fill="white">{}</text>"#, x0 + 3, y + 13, fence_label(l.fence));
            }
        }
        for m in &self.records.marks {
            let Some(c) = m.client else { continue };
            let y = self.client_lane_y(c);
            let (x0, x1) = (self.x(m.from_us), self.x(m.to_us));
            if m.to_us > m.from_us {
                let _ = writeln!(
                    s,
                    r##"<rect x="{x0}" y="{}" width="{}" height="6" fill="#999"><title>{} {}..{}</title></rect>"##,
                    y + 2,
                    (x1 - x0).max(1),
                    m.what,
                    seconds(m.from_us),
                    seconds(m.to_us)
                );
            } else {
                let (colour, symbol) = match m.what {
                    "lock lost" => ("#e69138", "!"),
                    "clock step" => ("#674ea7", "↕"),
                    _ => ("#cc0000", "✕"),
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" fill="{colour}" font-weight="bold">{symbol}<title>{} at {}</title></text>"#,
                    x0.saturating_sub(4),
                    y + 30,
                    m.what,
                    seconds(m.from_us)
                );
            }
        }
        for e in &self.records.effects {
            let y = self.client_lane_y(e.client) + 17;
            let x = self.x(e.at_us);
            let (fill, verdict) = if e.accepted { ("#38761d", "accepted") } else { ("#cc0000", "rejected") };
            let _ = writeln!(
                s,
                r#"<circle cx="{x}" cy="{y}" r="5" fill="{fill}"><title>fenced write, fence {}: {verdict} at {}</title></circle>"#,
                e.fence.get(),
                seconds(e.at_us)
            );
        }
        let axis_y = TOP_PX + LANE_PX * lanes + 14;
        let step_us = tick_step_us(self.end_us);
        for us in (0..=self.end_us).step_by(usize::try_from(step_us).unwrap_or(usize::MAX)) {
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#bbb"/><text x="{x}" y="{axis_y}" text-anchor="middle">{}</text>"##,
                axis_y - 14,
                axis_y - 10,
                tick_label(us, step_us),
                x = self.x(us),
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="4" y="14">lease rows: blue STARTED, green DONE, orange FAILED; the number is the fence's last digits (all of it on hover). Pink: Spanner unavailable.</text>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="4" y="30">clients: dark bar relies on its lease; grey paused; ✕ crash; ! lock lost; ↕ wall clock step; dot a fenced write, green accepted, red rejected.</text>"#
        );
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_sit_at_their_true_times_and_say_them() {
        // 12 s: a tick each second, labelled with its second (none skipped, none rounded).
        assert_eq!(tick_step_us(12_000_000), 1_000_000);
        let labels: Vec<String> = (0..=12_000_000).step_by(1_000_000).map(|us| tick_label(us, 1_000_000)).collect();
        assert_eq!(labels.join(" "), "0s 1s 2s 3s 4s 5s 6s 7s 8s 9s 10s 11s 12s");
        // 1.5 s: every 200 ms, with the decimal the step needs.
        assert_eq!(tick_step_us(1_500_000), 200_000);
        assert_eq!(tick_label(600_000, 200_000), "0.6s");
        // 60 s: every 5 s.
        assert_eq!(tick_step_us(60_000_000), 5_000_000);
    }

    #[test]
    fn consecutive_fences_are_told_apart() {
        let (a, b) = (Fence::new(1_767_225_600_004_506), Fence::new(1_767_225_600_004_507));
        assert_eq!((fence_label(a).as_str(), fence_label(b).as_str()), ("…4506", "…4507"));
        assert_eq!(fence_label(Fence::new(42)), "42");
    }
}
