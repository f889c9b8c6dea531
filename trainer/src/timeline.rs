//! A timeline of what each rank does, for Chrome's trace viewer and Perfetto: compute spans
//! (per block, the experts, the optimizer), communication spans (dispatch, combine, gradient
//! reduction) and, inside an overlapped exchange, the compute that ran while it was in flight.
//!
//! Off by default (one relaxed atomic load per span); [`enable`] turns it on for the process.
//! [`write_chrome`] writes the events as a Chrome trace (`{"traceEvents": [...]}`, complete
//! events with microsecond times); [`overlap`] sums the exchanges' wall time and the part of
//! it during which compute ran — inside the exchange on the same thread, or on another lane
//! (a pipeline's overlapped pair runs its backward on lane 1 beside the forward on lane 0).

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());
static START: Mutex<Option<Instant>> = Mutex::new(None);

thread_local! {
    static LANE: Cell<u32> = const { Cell::new(0) };
}

/// Marks the spans this thread records as lane `lane` (0: the rank's main thread; 1: the
/// backward of a pipeline's overlapped pair).
pub fn set_lane(lane: u32) {
    LANE.with(|l| l.set(lane));
}

/// One recorded span.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What ran (`block 3 forward`, `moe dispatch`, …).
    pub name: String,
    /// `compute`, `comm`, or `overlap` (compute inside an exchange).
    pub cat: &'static str,
    /// Start, microseconds since [`enable`].
    pub ts_us: f64,
    /// Duration, microseconds.
    pub dur_us: f64,
    /// The lane (thread role) that recorded it: [`set_lane`].
    pub lane: u32,
}

/// Starts recording (and clears what was recorded).
pub fn enable() {
    *START.lock().expect("timeline clock") = Some(Instant::now());
    EVENTS.lock().expect("timeline events").clear();
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are recorded.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A span: recorded when dropped.
#[derive(Debug)]
pub struct Span {
    name: Option<String>,
    cat: &'static str,
    start: Instant,
}

/// Starts a span of category `cat` (`compute`, `comm`, `overlap`); `name` is only built when
/// the timeline is on.
pub fn span(cat: &'static str, name: impl FnOnce() -> String) -> Span {
    Span {
        name: enabled().then(name),
        cat,
        start: Instant::now(),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        let Some(t0) = *START.lock().expect("timeline clock") else {
            return;
        };
        let ts = self.start.saturating_duration_since(t0).as_secs_f64() * 1e6;
        let dur = self.start.elapsed().as_secs_f64() * 1e6;
        EVENTS.lock().expect("timeline events").push(Event {
            name,
            cat: self.cat,
            ts_us: ts,
            dur_us: dur,
            lane: LANE.with(Cell::get),
        });
    }
}

/// The events recorded so far.
pub fn events() -> Vec<Event> {
    EVENTS.lock().expect("timeline events").clone()
}

/// Sorted, disjoint intervals covering `spans`.
fn union(mut spans: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The intersection of two unions.
fn intersect(x: &[(f64, f64)], y: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() && j < y.len() {
        let (a, b) = (x[i].0.max(y[j].0), x[i].1.min(y[j].1));
        if a < b {
            out.push((a, b));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `x` without `y` (both unions).
fn subtract(x: &[(f64, f64)], y: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for &(mut a, b) in x {
        for &(c, d) in y {
            if d <= a || c >= b {
                continue;
            }
            if c > a {
                out.push((a, c));
            }
            a = a.max(d);
        }
        if a < b {
            out.push((a, b));
        }
    }
    out
}

fn length(x: &[(f64, f64)]) -> f64 {
    x.iter().map(|(a, b)| b - a).sum()
}

/// Communication wall time and the part of it during which compute ran, in microseconds.
/// A lane's communication counts as hidden while compute runs inside it (an `overlap` span)
/// or on another lane (that lane's compute spans, less its own communication).
pub fn overlap(events: &[Event]) -> (f64, f64) {
    let lanes: std::collections::BTreeSet<u32> = events.iter().map(|e| e.lane).collect();
    let of = |lane: u32, cats: &[&str]| {
        union(
            events
                .iter()
                .filter(|e| e.lane == lane && cats.contains(&e.cat))
                .map(|e| (e.ts_us, e.ts_us + e.dur_us))
                .collect(),
        )
    };
    // What each lane computes outside its own exchanges, and inside them.
    let busy: Vec<(u32, Vec<(f64, f64)>)> = lanes
        .iter()
        .map(|&l| {
            let own = subtract(&of(l, &["compute"]), &of(l, &["comm"]));
            let mut all = own;
            all.extend(of(l, &["overlap"]));
            (l, union(all))
        })
        .collect();
    let (mut comm, mut hidden) = (0.0, 0.0);
    for &l in &lanes {
        let m = of(l, &["comm"]);
        comm += length(&m);
        let mut beside = of(l, &["overlap"]);
        for (k, b) in &busy {
            if *k != l {
                beside.extend(b.iter().copied());
            }
        }
        hidden += length(&intersect(&m, &union(beside)));
    }
    (comm, hidden)
}

/// The events as a Chrome trace for process `rank` (one thread row per category).
pub fn write_chrome(path: &std::path::Path, rank: usize, events: &[Event]) -> std::io::Result<()> {
    let tid = |cat: &str, lane: u32| {
        3 * lane
            + match cat {
                "compute" => 1,
                "comm" => 2,
                _ => 3,
            }
    };
    let mut rows: Vec<serde_json::Value> = vec![serde_json::json!({
        "name": "process_name", "ph": "M", "pid": rank,
        "args": { "name": format!("rank {rank}") }
    })];
    let lanes: std::collections::BTreeSet<u32> = events.iter().map(|e| e.lane).collect();
    for &lane in lanes.iter().chain(lanes.is_empty().then_some(&0)) {
        let suffix = if lane == 0 {
            String::new()
        } else {
            format!(" (lane {lane}: pipeline pair backward)")
        };
        for (cat, n) in [
            ("compute", "compute"),
            ("comm", "communication"),
            ("overlap", "compute during communication"),
        ] {
            rows.push(serde_json::json!({
                "name": "thread_name", "ph": "M", "pid": rank, "tid": tid(cat, lane),
                "args": { "name": format!("{n}{suffix}") }
            }));
        }
    }
    rows.extend(events.iter().map(|e| {
        serde_json::json!({
            "name": e.name, "cat": e.cat, "ph": "X", "pid": rank, "tid": tid(e.cat, e.lane),
            "ts": e.ts_us, "dur": e.dur_us
        })
    }));
    let text =
        serde_json::to_string(&serde_json::json!({ "traceEvents": rows })).expect("serialises");
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_recorded_only_when_on_and_written_as_a_chrome_trace() {
        {
            let _s = span("compute", || "off".into());
        }
        assert!(events().iter().all(|e| e.name != "off"));
        enable();
        {
            let _c = span("comm", || "exchange".into());
            let _o = span("overlap", || "work".into());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let ev = events();
        assert_eq!(ev.len(), 2);
        let (comm, hidden) = overlap(&ev);
        assert!(comm >= hidden && hidden >= 1000.0, "{comm} {hidden}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t/rank-0.json");
        write_chrome(&p, 0, &ev).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["traceEvents"].as_array().unwrap().len(), 6);
        ON.store(false, Ordering::Relaxed);
    }

    fn ev(cat: &'static str, lane: u32, a: f64, b: f64) -> Event {
        Event {
            name: String::new(),
            cat,
            ts_us: a,
            dur_us: b - a,
            lane,
        }
    }

    #[test]
    fn communication_is_hidden_by_compute_inside_it_or_on_another_lane() {
        // Lane 0: a block (0..100) with an exchange inside (40..80), 10 of it overlapped work.
        // Lane 1: compute 50..120 with its own exchange 60..70 (not compute).
        let events = [
            ev("compute", 0, 0.0, 100.0),
            ev("comm", 0, 40.0, 80.0),
            ev("overlap", 0, 40.0, 50.0),
            ev("compute", 1, 50.0, 120.0),
            ev("comm", 1, 60.0, 70.0),
        ];
        let (comm, hidden) = overlap(&events);
        assert_eq!(comm, 40.0 + 10.0);
        // Lane 0's 40..80: 40..50 inside, 50..60 and 70..80 beside lane 1's compute; lane 1's
        // 60..70: lane 0 is in its own exchange then (not computing), so nothing.
        assert_eq!(hidden, 10.0 + 10.0 + 10.0);
        // The same exchange alone: nothing hidden.
        assert_eq!(overlap(&events[1..2]), (40.0, 0.0));
    }
}
