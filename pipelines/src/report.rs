//! `tokenmill report RUN`: one self-contained HTML page (no external file, script or font) with
//! the loss curve, the spikes marked, the response to each, and per spike the documents that
//! added most to the loss, linked to their provenance and shown where their token losses peak.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use tokenmill_trainer::train::LogKind;

use crate::error::Result;
use crate::plot::esc;
use crate::trace::{Trace, one_line, trace_spikes};

/// What the page shows, also written as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The run directory, as given.
    pub run: String,
    /// Training steps done: the highest step of a training line no rollback superseded, plus
    /// one (0 without one).
    pub steps: u64,
    /// The loss of the last eval line no rollback superseded, if any.
    pub last_eval: Option<f64>,
    /// Log lines that record a rollback.
    pub rollbacks: usize,
    /// Entries of the run's `quarantine.json`.
    pub quarantined: usize,
    /// Every training line at which a detector fired, traced, in log order (superseded
    /// attempts included).
    pub spikes: Vec<Trace>,
}

/// Builds the report of `run` (`top` documents per spike) and its HTML page.
pub fn report(run_dir: &Path, top: usize) -> Result<(Report, String)> {
    let (run, traces) = trace_spikes(run_dir, top)?;
    let effective: Vec<_> = run
        .log
        .iter()
        .zip(&run.superseded)
        .filter(|(_, s)| !**s)
        .map(|(l, _)| l)
        .collect();
    let steps = effective
        .iter()
        .filter(|l| l.kind == LogKind::Train)
        .map(|l| l.step + 1)
        .max()
        .unwrap_or(0);
    let last_eval = effective
        .iter()
        .rev()
        .find(|l| l.kind == LogKind::Eval)
        .map(|l| l.loss);
    let rollbacks = run.log.iter().filter(|l| l.rollback.is_some()).count();
    let rep = Report {
        run: run_dir.display().to_string(),
        steps,
        last_eval,
        rollbacks,
        quarantined: run.quarantine.len(),
        spikes: traces,
    };
    let svg = crate::plot::svg(&[("run".into(), run.log.clone())], "training loss");
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tokenmill report: {}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;\
         padding:3px 7px;text-align:left;vertical-align:top;font-size:13px}}\
         th{{background:#f3f3f3}}mark{{background:#ffb3b3}}code{{font-size:12px}}\
         .num{{text-align:right}}.muted{{color:#777}}</style></head><body>",
        esc(&rep.run)
    );
    let _ = write!(
        h,
        "<h1>Training run <code>{}</code></h1><p>{} steps; last held-out loss {}; {} spike(s), \
         {} rollback(s), {} quarantined document(s).</p>",
        esc(&rep.run),
        rep.steps,
        rep.last_eval.map_or("—".into(), |l| format!("{l:.4}")),
        rep.spikes.len(),
        rep.rollbacks,
        rep.quarantined
    );
    h.push_str(&svg);
    if rep.spikes.is_empty() {
        h.push_str("<p>No detector fired.</p>");
    } else {
        h.push_str(
            "<h2>Spikes</h2><table><tr><th>step</th><th>loss</th><th>grad norm</th>\
             <th>detectors</th><th>response</th></tr>",
        );
        for t in &rep.spikes {
            let _ = write!(
                h,
                "<tr><td><a href=\"#step-{}-{}\">{}</a></td><td class=num>{:.4}</td>\
                 <td class=num>{:.3}</td><td>{}</td><td>{}</td></tr>",
                t.step,
                t.attempt,
                t.step,
                t.loss,
                t.grad_norm,
                esc(&t.spikes.join(", ")),
                esc(&response(&run.log, t))
            );
        }
        h.push_str("</table>");
    }
    for t in &rep.spikes {
        let _ = write!(
            h,
            "<h3 id=\"step-{}-{}\">Step {}{}: loss {:.4} ({})</h3>",
            t.step,
            t.attempt,
            t.step,
            if t.attempts > 1 {
                format!(", attempt {} of {}", t.attempt + 1, t.attempts)
            } else {
                String::new()
            },
            t.loss,
            esc(&t.spikes.join(", "))
        );
        h.push_str(
            "<table><tr><th>document</th><th>source @ byte</th><th>loss</th>\
             <th>excess (nats)</th><th>where the token loss peaks</th></tr>",
        );
        for d in t.top_documents(top) {
            let url = d.url.as_deref().map_or(String::new(), |u| {
                format!("<br><a href=\"{}\">{}</a>", esc(u), esc(&one_line(u, 80)))
            });
            let peak = d.peak.as_ref().map_or("—".to_string(), |p| {
                format!(
                    "token {} (loss {:.2}): …{}<mark>{}</mark>",
                    p.token,
                    p.loss,
                    esc(&one_line(p.before.as_deref().unwrap_or(""), 120)),
                    esc(&one_line(p.at.as_deref().unwrap_or(""), 20))
                )
            });
            let _ = write!(
                h,
                "<tr><td><code>{}</code>{}<br><span class=muted>{}</span></td>\
                 <td><code>{}</code> @ {}</td><td class=num>{:.3}</td><td class=num>+{:.1}</td>\
                 <td>{}</td></tr>",
                esc(&d.id),
                url,
                esc(&one_line(d.snippet.as_deref().unwrap_or(""), 120)),
                esc(&d.source),
                d.offset,
                d.loss,
                d.excess,
                peak
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    Ok((rep, h))
}

/// What the run did about a traced spike.
fn response(log: &[tokenmill_trainer::train::StepLog], t: &Trace) -> String {
    let line = log
        .iter()
        .filter(|l| l.kind == LogKind::Train && l.step == t.step)
        .nth(t.attempt);
    let Some(l) = line else {
        return String::new();
    };
    let mut out = Vec::new();
    if l.skipped {
        out.push("update skipped".to_string());
    }
    if !l.quarantined.is_empty() {
        out.push(format!("quarantined {}", l.quarantined.join(", ")));
    }
    if let Some(r) = &l.rollback {
        out.push(format!(
            "rolled back to step {}, skipped {} batches",
            r.to_step, r.skipped_batches
        ));
    }
    if out.is_empty() {
        "logged".into()
    } else {
        out.join("; ")
    }
}
