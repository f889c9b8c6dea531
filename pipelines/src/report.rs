//! `tokenmill report RUN`: one self-contained HTML page (no external file, script or font) that
//! tells a run's story in the order a person asks: what happened (steps, losses, spikes, the
//! run's responses), which documents caused the spikes (ranked by the spikes they led and the
//! loss they added, each with its provenance and text), the spikes grouped by those documents
//! with where each document's token losses peak, and last the full table of spikes, collapsed.
//!
//! "Loss" is the next-token loss throughout; the total the optimizer minimised (with the MTP
//! and balance terms) is shown under its own name.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use tokenmill_trainer::train::{LogKind, StepLog};

use crate::error::Result;
use crate::plot::esc;
use crate::trace::{Trace, TraceDoc, one_line, trace_spikes};

/// A document that led spikes: the one that added most to the loss of each.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeDocument {
    /// The document's id (`None`: spikes at which no document's loss was above the step's).
    pub id: Option<String>,
    /// The input file the document was read from.
    pub source: String,
    /// Byte offset of the document's record in `source`.
    pub offset: u64,
    /// The page URL, if the input had one.
    pub url: Option<String>,
    /// The beginning of its text.
    pub snippet: Option<String>,
    /// Indices into [`Report::spikes`] of the spikes it led, in log order.
    pub spikes: Vec<usize>,
    /// What it added to the summed next-token loss of those steps over their batch means
    /// (nats).
    pub excess: f64,
    /// Its highest span loss at those steps.
    pub max_loss: f64,
}

/// What the page shows, also written as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The run directory, as given.
    pub run: String,
    /// Training steps done: the highest step of a training line no rollback superseded, plus
    /// one (0 without one).
    pub steps: u64,
    /// Next-token loss of the first and the last training line no rollback superseded.
    pub first_loss: Option<f64>,
    /// See `first_loss`.
    pub last_loss: Option<f64>,
    /// The loss of the last eval line no rollback superseded, if any.
    pub last_eval: Option<f64>,
    /// Log lines that record a rollback.
    pub rollbacks: usize,
    /// Entries of the run's `quarantine.json`.
    pub quarantined: usize,
    /// Every training line at which a detector fired, traced, in log order (superseded
    /// attempts included).
    pub spikes: Vec<Trace>,
    /// The documents that led the spikes, most spikes first (then most excess loss).
    pub documents: Vec<SpikeDocument>,
}

/// Groups spikes by the document that added most to each: most spikes first, then most excess
/// loss; spikes without such a document last, as one group without an id.
pub fn by_document(spikes: &[Trace]) -> Vec<SpikeDocument> {
    let mut out: Vec<SpikeDocument> = Vec::new();
    let mut none = SpikeDocument {
        id: None,
        source: String::new(),
        offset: 0,
        url: None,
        snippet: None,
        spikes: Vec::new(),
        excess: 0.0,
        max_loss: f64::NAN,
    };
    for (i, t) in spikes.iter().enumerate() {
        let Some(d) = t.top_documents(1).first().copied() else {
            none.spikes.push(i);
            continue;
        };
        let g = match out.iter().position(|g| g.id.as_deref() == Some(&d.id)) {
            Some(k) => &mut out[k],
            None => {
                out.push(SpikeDocument {
                    id: Some(d.id.clone()),
                    source: d.source.clone(),
                    offset: d.offset,
                    url: d.url.clone(),
                    snippet: None,
                    spikes: Vec::new(),
                    excess: 0.0,
                    max_loss: f64::NEG_INFINITY,
                });
                out.last_mut().expect("just pushed")
            }
        };
        g.spikes.push(i);
        g.excess += d.excess;
        g.max_loss = g.max_loss.max(d.loss);
        if g.snippet.is_none() {
            g.snippet = d.snippet.clone();
        }
    }
    out.sort_by(|a, b| {
        b.spikes
            .len()
            .cmp(&a.spikes.len())
            .then(b.excess.total_cmp(&a.excess))
            .then(a.id.cmp(&b.id))
    });
    if !none.spikes.is_empty() {
        out.push(none);
    }
    out
}

/// Builds the report of `run` (`top` documents per spike) and its HTML page.
pub fn report(run_dir: &Path, top: usize) -> Result<(Report, String)> {
    let (run, traces) = trace_spikes(run_dir, top)?;
    let effective: Vec<&StepLog> = run
        .log
        .iter()
        .zip(&run.superseded)
        .filter(|(_, s)| !**s)
        .map(|(l, _)| l)
        .collect();
    let train: Vec<&&StepLog> = effective
        .iter()
        .filter(|l| l.kind == LogKind::Train)
        .collect();
    let rep = Report {
        run: run_dir.display().to_string(),
        steps: train.iter().map(|l| l.step + 1).max().unwrap_or(0),
        first_loss: train.first().map(|l| l.main_loss),
        last_loss: train.last().map(|l| l.main_loss),
        last_eval: effective
            .iter()
            .rev()
            .find(|l| l.kind == LogKind::Eval)
            .map(|l| l.loss),
        rollbacks: run.log.iter().filter(|l| l.rollback.is_some()).count(),
        quarantined: run.quarantine.len(),
        documents: by_document(&traces),
        spikes: traces,
    };
    let html = render(&rep, &run.log, top);
    Ok((rep, html))
}

fn num(v: Option<f64>) -> String {
    v.map_or("—".into(), |l| format!("{l:.4}"))
}

fn anchor(t: &Trace) -> String {
    format!("step-{}-{}", t.step, t.attempt)
}

fn url_link(u: Option<&str>) -> String {
    u.map_or(String::new(), |u| {
        format!("<a href=\"{}\">{}</a>", esc(u), esc(&one_line(u, 90)))
    })
}

/// The page.
pub fn render(rep: &Report, log: &[StepLog], top: usize) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tokenmill report: {}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;\
         line-height:1.4}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;\
         padding:3px 7px;text-align:left;vertical-align:top;font-size:13px}}\
         th{{background:#f3f3f3}}mark{{background:#ffb3b3}}code{{font-size:12px}}\
         .num{{text-align:right}}.muted{{color:#777}}summary{{cursor:pointer;margin:.4em 0}}\
         .lead{{font-size:15px}}</style></head><body>",
        esc(&rep.run)
    );
    let _ = write!(
        h,
        "<h1>Training run <code>{}</code></h1><p class=lead>{} steps; loss {} → {} \
         (next-token, nats/token); held-out loss {}; <b>{} spike(s)</b> led by <b>{} \
         document(s)</b>; {} rollback(s), {} quarantined document(s).</p>",
        esc(&rep.run),
        rep.steps,
        num(rep.first_loss),
        num(rep.last_loss),
        num(rep.last_eval),
        rep.spikes.len(),
        rep.documents.iter().filter(|d| d.id.is_some()).count(),
        rep.rollbacks,
        rep.quarantined
    );
    h.push_str(&crate::plot::svg(
        &[("run".into(), log.to_vec())],
        "training loss",
    ));
    if rep.spikes.is_empty() {
        h.push_str("<p>No detector fired.</p></body></html>\n");
        return h;
    }
    // 1. Who caused the spikes.
    h.push_str(
        "<h2 id=documents>Documents behind the spikes</h2><p>Each spike is counted for the \
         document that added most to its loss (its excess: (its loss − the step's loss) × its \
         targets).</p><table id=ranking><tr><th>#</th><th>document</th><th>source @ byte</th>\
         <th class=num>spikes</th><th class=num>excess (nats)</th><th class=num>max loss</th>\
         <th>steps</th></tr>",
    );
    for (k, d) in rep.documents.iter().enumerate() {
        let steps: Vec<String> = d
            .spikes
            .iter()
            .map(|&i| {
                let t = &rep.spikes[i];
                format!("<a href=\"#{}\">{}</a>", anchor(t), t.step)
            })
            .collect();
        let name = match &d.id {
            Some(id) => format!(
                "<a href=\"#doc-{k}\"><code>{}</code></a><br>{}<br><span class=muted>{}</span>",
                esc(id),
                url_link(d.url.as_deref()),
                esc(&one_line(d.snippet.as_deref().unwrap_or(""), 100))
            ),
            None => "<span class=muted>(no document above the step's loss)</span>".into(),
        };
        let _ = write!(
            h,
            "<tr><td class=num>{}</td><td>{name}</td><td>{}</td><td class=num>{}</td>\
             <td class=num>+{:.1}</td><td class=num>{}</td><td>{}</td></tr>",
            k + 1,
            if d.id.is_some() {
                format!("<code>{}</code> @ {}", esc(&d.source), d.offset)
            } else {
                String::new()
            },
            d.spikes.len(),
            d.excess,
            if d.max_loss.is_finite() {
                format!("{:.3}", d.max_loss)
            } else {
                "—".into()
            },
            steps.join(", ")
        );
    }
    h.push_str("</table>");
    // 2. The spikes, grouped by those documents.
    h.push_str("<h2>Spikes by document</h2>");
    for (k, d) in rep.documents.iter().enumerate() {
        let title = match &d.id {
            Some(id) => format!(
                "<code>{}</code> — {} spike(s), +{:.1} nats",
                esc(id),
                d.spikes.len(),
                d.excess
            ),
            None => format!("no single document — {} spike(s)", d.spikes.len()),
        };
        let _ = write!(
            h,
            "<details id=\"doc-{k}\"{}><summary>{title}</summary>",
            if k < 3 { " open" } else { "" }
        );
        if d.id.is_some() {
            let _ = write!(
                h,
                "<p><code>{}</code> @ byte {} {}<br><span class=muted>{}</span></p>",
                esc(&d.source),
                d.offset,
                url_link(d.url.as_deref()),
                esc(&one_line(d.snippet.as_deref().unwrap_or(""), 200))
            );
        }
        h.push_str(
            "<table><tr><th>step</th><th class=num>loss</th><th class=num>total loss</th>\
             <th class=num>grad norm</th><th>detectors</th><th>response</th>\
             <th class=num>its loss</th><th class=num>its excess</th>\
             <th>where its token loss peaks</th></tr>",
        );
        for &i in &d.spikes {
            let t = &rep.spikes[i];
            let doc: Option<&TraceDoc> =
                d.id.as_ref()
                    .and_then(|id| t.top_documents(top).into_iter().find(|x| &x.id == id));
            let peak = doc.and_then(|x| x.peak.as_ref()).map_or("—".into(), |p| {
                format!(
                    "token {} (loss {:.2}): …{}<mark>{}</mark>",
                    p.token,
                    p.loss,
                    esc(&one_line(p.before.as_deref().unwrap_or(""), 100)),
                    esc(&one_line(p.at.as_deref().unwrap_or(""), 20))
                )
            });
            let _ = write!(
                h,
                "<tr id=\"{}\"><td>{}{}</td><td class=num>{:.4}</td><td class=num>{:.4}</td>\
                 <td class=num>{:.3}</td><td>{}</td><td>{}</td><td class=num>{}</td>\
                 <td class=num>{}</td><td>{peak}</td></tr>",
                anchor(t),
                t.step,
                if t.attempts > 1 {
                    format!(" (attempt {} of {})", t.attempt + 1, t.attempts)
                } else {
                    String::new()
                },
                t.loss,
                t.total_loss,
                t.grad_norm,
                esc(&t.spikes.join(", ")),
                esc(&response(log, t)),
                doc.map_or("—".into(), |x| format!("{:.3}", x.loss)),
                doc.map_or("—".into(), |x| format!("+{:.1}", x.excess)),
            );
        }
        h.push_str("</table></details>");
    }
    // 3. Everything, collapsed.
    let _ = write!(
        h,
        "<h2>All spikes</h2><details id=all-spikes><summary>the {} spikes in log order, each \
         with its {top} documents that added most to the loss</summary><table><tr><th>step</th>\
         <th class=num>loss</th><th class=num>total loss</th><th class=num>grad norm</th>\
         <th>detectors</th><th>response</th><th>documents (excess, nats)</th></tr>",
        rep.spikes.len()
    );
    for t in &rep.spikes {
        let docs: Vec<String> = t
            .top_documents(top)
            .iter()
            .map(|d| format!("<code>{}</code> +{:.1}", esc(&d.id), d.excess))
            .collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td class=num>{:.4}</td><td class=num>{:.4}</td>\
             <td class=num>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            anchor(t),
            t.step,
            t.loss,
            t.total_loss,
            t.grad_norm,
            esc(&t.spikes.join(", ")),
            esc(&response(log, t)),
            docs.join("<br>")
        );
    }
    h.push_str(
        "</table></details><p class=muted>loss: the next-token loss (comparable with the \
         held-out loss); total loss: what the optimizer minimised, the next-token loss plus \
         λ·MTP and α·balance.</p></body></html>\n",
    );
    h
}

/// What the run did about a traced spike.
fn response(log: &[StepLog], t: &Trace) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{TraceDoc, TraceSample};

    fn doc(id: &str, loss: f64, excess: f64) -> TraceDoc {
        TraceDoc {
            id: id.into(),
            source: format!("{id}.jsonl"),
            offset: 7,
            url: Some(format!("https://x.example/{id}")),
            shard: 0,
            doc: 0,
            tokens: 10,
            doc_offset: 0,
            targets: 10,
            loss,
            excess,
            peak: None,
            snippet: Some(format!("text of {id}")),
            excluded: false,
        }
    }

    fn spike(step: u64, docs: Vec<TraceDoc>) -> Trace {
        Trace {
            step,
            attempt: 0,
            attempts: 1,
            superseded: false,
            loss: 3.0,
            total_loss: 4.0,
            mtp_loss: 3.2,
            balance_loss: 0.01,
            grad_norm: 1.0,
            loss_z: None,
            grad_norm_z: None,
            doc_z: None,
            spikes: vec!["doc".into()],
            quarantined: vec![],
            samples: vec![TraceSample {
                index: 0,
                loss: 3.0,
                docs,
            }],
        }
    }

    /// Many spikes from junk pages, a few from the poison: the poison leads the page.
    fn spikes() -> Vec<Trace> {
        let mut v = Vec::new();
        for s in 0..40u64 {
            let junk = format!("junk-{}", s % 20);
            v.push(spike(
                s * 10,
                vec![doc(&junk, 5.0, 20.0), doc("ok", 2.0, -10.0)],
            ));
        }
        for s in [55u64, 155, 255, 355, 455, 555] {
            v.push(spike(
                s,
                vec![doc("poison", 9.5, 800.0), doc("junk-1", 5.0, 10.0)],
            ));
        }
        v.push(spike(999, vec![doc("ok", 2.0, -1.0)]));
        v.sort_by_key(|t| t.step);
        v
    }

    #[test]
    fn spikes_are_grouped_by_the_document_that_led_them_most_first() {
        let g = by_document(&spikes());
        assert_eq!(g[0].id.as_deref(), Some("poison"));
        assert_eq!(g[0].spikes.len(), 6);
        assert!((g[0].excess - 4800.0).abs() < 1e-9);
        assert_eq!(g[0].url.as_deref(), Some("https://x.example/poison"));
        assert_eq!(g[0].snippet.as_deref(), Some("text of poison"));
        // every spike in exactly one group; the one without a document last
        let n: usize = g.iter().map(|d| d.spikes.len()).sum();
        assert_eq!(n, 47);
        assert_eq!(g.last().unwrap().id, None);
        assert_eq!(g.last().unwrap().spikes.len(), 1);
        assert_eq!(g.len(), 22);
    }

    #[test]
    fn the_page_leads_with_the_ranking_and_collapses_the_full_table() {
        let sp = spikes();
        let rep = Report {
            run: "r".into(),
            steps: 1000,
            first_loss: Some(7.6),
            last_loss: Some(1.4),
            last_eval: Some(1.5),
            rollbacks: 0,
            quarantined: 0,
            documents: by_document(&sp),
            spikes: sp,
        };
        let h = render(&rep, &[], 3);
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("{s} missing"));
        // the summary names the spikes and the documents; the ranking comes first, the poison
        // at its top; the full table last, collapsed
        assert!(h.contains("<b>47 spike(s)</b> led by <b>21 document(s)</b>"));
        assert!(at("id=ranking") < at("Spikes by document"));
        assert!(at("Spikes by document") < at("id=all-spikes"));
        let ranking = &h[at("id=ranking")..at("Spikes by document")];
        let first_row = &ranking[ranking.find("<td class=num>1</td>").unwrap()..];
        let first_row = &first_row[..first_row.find("</tr>").unwrap()];
        assert!(first_row.contains("poison.jsonl</code> @ 7"), "{first_row}");
        assert!(first_row.contains("https://x.example/poison"));
        assert!(first_row.contains("text of poison"));
        assert!(first_row.contains("+4800.0"));
        assert!(first_row.contains("href=\"#step-55-0\""));
        assert!(!h.contains("<details id=all-spikes open"));
        // one section per document, not per spike
        assert_eq!(h.matches("<details id=\"doc-").count(), 22);
        // self-contained: no external script, stylesheet or image
        assert!(!h.contains("<script") && !h.contains("<link") && !h.contains("src="));
    }
}
