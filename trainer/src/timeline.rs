//! A timeline of what each rank does, for Chrome's trace viewer and Perfetto: compute spans
//! (per block, the experts, the optimizer), communication spans (dispatch, combine, gradient
//! reduction) and, inside an overlapped exchange, the compute that ran while it was in flight.
//!
//! Off by default (one relaxed atomic load per span); [`enable`] turns it on for the process.
//! [`write_chrome`] writes the events as a Chrome trace (`{"traceEvents": [...]}`, complete
//! events with microsecond times); [`overlap`] sums the exchanges' wall time and the part of
//! it during which compute ran.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());
static START: Mutex<Option<Instant>> = Mutex::new(None);

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
        });
    }
}

/// The events recorded so far.
pub fn events() -> Vec<Event> {
    EVENTS.lock().expect("timeline events").clone()
}

/// Communication wall time and the part of it during which compute ran (overlapped work
/// inside exchanges), in microseconds.
pub fn overlap(events: &[Event]) -> (f64, f64) {
    let comm: f64 = events
        .iter()
        .filter(|e| e.cat == "comm")
        .map(|e| e.dur_us)
        .sum();
    let hidden: f64 = events
        .iter()
        .filter(|e| e.cat == "overlap")
        .map(|e| e.dur_us)
        .sum();
    (comm, hidden)
}

/// The events as a Chrome trace for process `rank` (one thread row per category).
pub fn write_chrome(path: &std::path::Path, rank: usize, events: &[Event]) -> std::io::Result<()> {
    let tid = |cat: &str| match cat {
        "compute" => 1,
        "comm" => 2,
        _ => 3,
    };
    let mut rows: Vec<serde_json::Value> = vec![serde_json::json!({
        "name": "process_name", "ph": "M", "pid": rank,
        "args": { "name": format!("rank {rank}") }
    })];
    for (t, n) in [
        (1, "compute"),
        (2, "communication"),
        (3, "compute during communication"),
    ] {
        rows.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": rank, "tid": t, "args": { "name": n }
        }));
    }
    rows.extend(events.iter().map(|e| {
        serde_json::json!({
            "name": e.name, "cat": e.cat, "ph": "X", "pid": rank, "tid": tid(e.cat),
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
}
