//! `tokenmill plot RUN`: the loss curves of one or more runs as an SVG (the next-token training
//! loss as a moving average, the MTP loss dashed, the held-out loss as points, loss spikes as
//! red triangles), drawn directly. Steps a rollback superseded are left out of the curves; their
//! spikes are drawn hollow.

use std::fmt::Write;
use std::path::Path;

use tokenmill_trainer::train::{LogKind, StepLog};

use crate::error::{Error, Result};

/// Reads a run's `log.jsonl`.
pub fn read_log(run: &Path) -> Result<Vec<StepLog>> {
    let path = run.join("log.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Config(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Centered-free trailing moving average over `w` points.
pub fn smooth(y: &[f64], w: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(y.len());
    let mut sum = 0.0;
    for i in 0..y.len() {
        sum += y[i];
        if i >= w {
            sum -= y[i - w];
        }
        out.push(sum / (i + 1).min(w) as f64);
    }
    out
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Renders the runs (label, log) into an SVG document.
pub fn svg(runs: &[(String, Vec<StepLog>)], title: &str) -> String {
    let (w, h, ml, mr, mt, mb) = (900.0, 520.0, 70.0, 190.0, 40.0, 50.0);
    // (label, colour, drawn as points, (step, loss) pairs)
    type Series<'a> = (String, &'a str, bool, Vec<(f64, f64)>);
    let mut series: Vec<Series<'_>> = Vec::new();
    // (step, loss, superseded) of spikes
    let mut spikes: Vec<(f64, f64, bool)> = Vec::new();
    for (i, (label, log)) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let gone = tokenmill_trainer::train::superseded(log);
        spikes.extend(
            log.iter()
                .zip(&gone)
                .filter(|(l, _)| {
                    l.kind == LogKind::Train && !l.spikes.is_empty() && l.loss.is_finite()
                })
                .map(|(l, g)| (l.step as f64, l.loss, *g)),
        );
        let log: Vec<StepLog> = log
            .iter()
            .zip(&gone)
            .filter(|(_, g)| !**g)
            .map(|(l, _)| l.clone())
            .collect();
        let train: Vec<&StepLog> = log
            .iter()
            .filter(|l| l.kind == LogKind::Train && l.main_loss.is_finite())
            .collect();
        let ys: Vec<f64> = train.iter().map(|l| l.main_loss).collect();
        let sm = smooth(&ys, (ys.len() / 50).max(1));
        series.push((
            format!("{label} train next-token"),
            color,
            false,
            train
                .iter()
                .zip(&sm)
                .map(|(l, &y)| (l.step as f64, y))
                .collect(),
        ));
        let mtp: Vec<(f64, f64)> = train
            .iter()
            .filter(|l| l.mtp_loss > 0.0)
            .map(|l| (l.step as f64, l.mtp_loss))
            .collect();
        if !mtp.is_empty() {
            let sm = smooth(
                &mtp.iter().map(|p| p.1).collect::<Vec<_>>(),
                (mtp.len() / 50).max(1),
            );
            series.push((
                format!("{label} MTP"),
                color,
                false,
                mtp.iter().zip(sm).map(|(p, y)| (p.0, y)).collect(),
            ));
        }
        let ev: Vec<(f64, f64)> = log
            .iter()
            .filter(|l| l.kind == LogKind::Eval)
            .map(|l| (l.step as f64, l.loss))
            .collect();
        if !ev.is_empty() {
            series.push((format!("{label} eval"), color, true, ev));
        }
    }
    let spike_pts: Vec<(f64, f64)> = spikes.iter().map(|s| (s.0, s.1)).collect();
    let pts = series.iter().flat_map(|s| s.3.iter()).chain(&spike_pts);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    let pad = (y1 - y0).max(1e-6) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| mt + (y1 - y) / (y1 - y0) * (h - mt - mb);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{ml}" y="24" font-size="15">{}</text>"#,
        esc(title)
    );
    for i in 0..=5 {
        let y = y0 + (y1 - y0) * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
            w - mr,
            ml - 6.0,
            py(y) + 4.0,
            py = py(y)
        );
        let x = x0 + (x1 - x0) * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{x:.0}</text>"#,
            px(x),
            h - mb + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (ml + w - mr) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">loss (nats/token)</text>"#,
        h / 2.0,
        h / 2.0
    );
    for (i, (label, color, dots, p)) in series.iter().enumerate() {
        let dash = if label.ends_with("MTP") {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        if *dots {
            for &(x, y) in p {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
        } else {
            let d: Vec<String> = p
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#,
                d.join(" ")
            );
        }
        let ly = mt + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            w - mr + 10.0,
            ly - 4.0,
            w - mr + 26.0,
            ly,
            esc(label)
        );
    }
    for &(x, y, gone) in &spikes {
        let (cx, cy) = (px(x), py(y));
        let fill = if gone { "none" } else { "#e00" };
        let _ = writeln!(
            s,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{fill}" stroke="#e00"><title>spike at step {x}: loss {y:.4}</title></path>"##,
            cx,
            cy - 6.0,
            cx - 5.0,
            cy + 4.0,
            cx + 5.0,
            cy + 4.0
        );
    }
    if !spikes.is_empty() {
        let ly = mt + 16.0 * series.len() as f64;
        let _ = writeln!(
            s,
            r##"<path d="M{:.1},{:.1} l-5,10 l10,0 Z" fill="#e00"/><text x="{}" y="{}">spike (hollow: rolled back)</text>"##,
            w - mr + 16.0,
            ly - 9.0,
            w - mr + 26.0,
            ly
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `t` escaped for XML/HTML text and attribute values.
pub(crate) fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
