//! `tokenmill plot RUN`: the loss curves of one or more runs as an SVG, drawn as TensorBoard
//! and W&B draw them: the raw next-token training loss faint, its exponential moving average
//! on top (the weight named in the legend), the MTP loss smoothed and dashed, the held-out loss
//! as points, loss spikes as red triangles on the raw series; round tick values, optionally a
//! log axis. Steps a rollback superseded are left out of the curves; their spikes are drawn
//! hollow. [`tasks_svg`] draws the task accuracies of the eval lines (`[train] eval_tasks`) in
//! a second chart.

use std::fmt::Write;
use std::path::Path;

use tokenmill_trainer::train::{LogKind, StepLog};

use crate::error::{Error, Result};

/// Reads a run's `log.jsonl`.
pub fn read_log(run: &Path) -> Result<Vec<StepLog>> {
    let path = run.join("log.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => crate::trace::not_a_run(run),
        _ => Error::io(&path, e),
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Config(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// How a chart is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotOptions {
    /// Weight of the exponential moving average of the smoothed curves, in [0, 1) (0: no
    /// smoothing), debiased as TensorBoard does; the raw series is drawn faint beneath it.
    pub smoothing: f64,
    /// A logarithmic loss axis.
    pub log_y: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            smoothing: 0.9,
            log_y: false,
        }
    }
}

/// The debiased exponential moving average TensorBoard and W&B draw: `m ← w·m + (1−w)·y`,
/// divided by `1 − wⁿ` so the first points are not pulled towards zero. `w = 0` returns `y`.
pub fn ema(y: &[f64], w: f64) -> Vec<f64> {
    let w = w.clamp(0.0, 0.999);
    let (mut m, mut weight) = (0.0, 0.0);
    y.iter()
        .map(|&v| {
            m = w * m + (1.0 - w) * v;
            weight = w * weight + (1.0 - w);
            m / weight
        })
        .collect()
}

/// Round tick values covering `[lo, hi]` (steps of 1, 2 or 5 × 10ᵏ), about `n` of them.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // the candidate that gives the count closest to `n`
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| {
            let off = |s: f64| ((hi - lo) / s - n as f64).abs();
            off(*a).total_cmp(&off(*b))
        })
        .expect("candidates");
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // multiples of the step, rounded so 0.1 × 3 prints as 0.3
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            let digits = (-step.log10().floor()).max(0.0) as i32 + 1;
            let f = 10f64.powi(digits);
            (v * f).round() / f
        })
        .collect()
}

/// Ticks of a logarithmic axis over `[lo, hi]` (both > 0): 1, 2, 5 × 10ᵏ inside it, or round
/// linear ticks when the range spans too little for those.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for k in a..=b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
    }
    if out.len() < 3 {
        nice_ticks(lo, hi, 5)
    } else {
        out
    }
}

/// A tick value as a person writes it: no trailing zeros (2.5, 3, 0.05).
fn tick_label(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    /// The raw values: a thin faint line.
    Raw,
    /// The smoothed values: a solid line on top.
    Smoothed,
    /// The smoothed MTP loss: dashed.
    Dashed,
    /// Evaluations: points.
    Points,
}

impl Style {
    /// (stroke width, dash array, opacity) of the line.
    fn stroke(self) -> (f64, &'static str, f64) {
        match self {
            Style::Raw => (1.0, "", 0.3),
            Style::Smoothed => (2.0, "", 1.0),
            Style::Dashed => (1.6, "6 4", 1.0),
            Style::Points => (0.0, "", 1.0),
        }
    }
}

/// One drawn series.
struct Series {
    label: String,
    color: &'static str,
    style: Style,
    points: Vec<(f64, f64)>,
}

/// A spike marker: (step, next-token loss, superseded by a rollback, detectors).
type Spike = (f64, f64, bool, String);

/// Renders the runs (label, log) into an SVG document, with the default [`PlotOptions`].
pub fn svg(runs: &[(String, Vec<StepLog>)], title: &str) -> String {
    svg_with(runs, title, &PlotOptions::default())
}

/// Renders the runs (label, log) into an SVG document: per run the raw next-token training
/// loss faint, its moving average on top (named in the legend with its weight), the MTP loss
/// smoothed and dashed, the held-out loss as points, and the spikes as red triangles on the raw
/// series (hollow where a rollback superseded the step, which the lines leave out).
pub fn svg_with(runs: &[(String, Vec<StepLog>)], title: &str, o: &PlotOptions) -> String {
    let (w, h, ml, mr, mt, mb) = (900.0, 520.0, 70.0, 230.0, 40.0, 50.0);
    let usable = |y: f64| y.is_finite() && (!o.log_y || y > 0.0);
    let ema_name = if o.smoothing > 0.0 {
        format!("EMA {}", tick_label(o.smoothing))
    } else {
        "unsmoothed".into()
    };
    let mut series: Vec<Series> = Vec::new();
    let mut spikes: Vec<Spike> = Vec::new();
    for (i, (label, log)) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let gone = tokenmill_trainer::train::superseded(log);
        spikes.extend(
            log.iter()
                .zip(&gone)
                .filter(|(l, _)| {
                    l.kind == LogKind::Train && !l.spikes.is_empty() && usable(l.main_loss)
                })
                .map(|(l, g)| (l.step as f64, l.main_loss, *g, l.spikes.join(", "))),
        );
        let kept: Vec<&StepLog> = log
            .iter()
            .zip(&gone)
            .filter(|(_, g)| !**g)
            .map(|(l, _)| l)
            .collect();
        let train: Vec<(f64, f64)> = kept
            .iter()
            .filter(|l| l.kind == LogKind::Train && usable(l.main_loss))
            .map(|l| (l.step as f64, l.main_loss))
            .collect();
        let sm = ema(&train.iter().map(|p| p.1).collect::<Vec<_>>(), o.smoothing);
        series.push(Series {
            label: format!("{label} next-token loss (raw)"),
            color,
            style: Style::Raw,
            points: train.clone(),
        });
        series.push(Series {
            label: format!("{label} next-token loss ({ema_name})"),
            color,
            style: Style::Smoothed,
            points: train.iter().zip(sm).map(|(p, y)| (p.0, y)).collect(),
        });
        let mtp: Vec<(f64, f64)> = kept
            .iter()
            .filter(|l| l.kind == LogKind::Train && l.mtp_loss > 0.0 && usable(l.mtp_loss))
            .map(|l| (l.step as f64, l.mtp_loss))
            .collect();
        if !mtp.is_empty() {
            let sm = ema(&mtp.iter().map(|p| p.1).collect::<Vec<_>>(), o.smoothing);
            series.push(Series {
                label: format!("{label} MTP loss ({ema_name})"),
                color,
                style: Style::Dashed,
                points: mtp.iter().zip(sm).map(|(p, y)| (p.0, y)).collect(),
            });
        }
        let ev: Vec<(f64, f64)> = kept
            .iter()
            .filter(|l| l.kind == LogKind::Eval && usable(l.loss))
            .map(|l| (l.step as f64, l.loss))
            .collect();
        if !ev.is_empty() {
            series.push(Series {
                label: format!("{label} held-out loss"),
                color,
                style: Style::Points,
                points: ev,
            });
        }
    }
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .chain(spikes.iter().map(|s| (s.0, s.1)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 1.0, 2.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    // the axis: padded, its ends on round values
    let (ticks, fy): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if o.log_y {
        let (lo, hi) = (y0 / 1.05, y1 * 1.05);
        let t = log_ticks(lo, hi);
        let (lo, hi) = (lo.min(t[0]), hi.max(*t.last().expect("a tick")));
        (
            t,
            Box::new(move |y: f64| (y.ln() - lo.ln()) / (hi.ln() - lo.ln())),
        )
    } else {
        let pad = (y1 - y0).max(1e-6) * 0.05;
        let t = nice_ticks(y0 - pad, y1 + pad, 6);
        let step = if t.len() > 1 { t[1] - t[0] } else { 1.0 };
        // the axis ends on the ticks just outside the data
        let lo = ((y0 - pad) / step).floor() * step;
        let hi = ((y1 + pad) / step).ceil() * step;
        (
            nice_ticks(lo, hi, 6),
            Box::new(move |y: f64| (y - lo) / (hi - lo)),
        )
    };
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| mt + (1.0 - fy(y)) * (h - mt - mb);
    let y_label = format!(
        "loss (nats/token{})",
        if o.log_y { ", log scale" } else { "" }
    );
    let mut s = frame(
        Frame {
            w,
            h,
            ml,
            mr,
            mb,
            title,
            y_label: &y_label,
        },
        &ticks,
        &nice_ticks(x0, x1, 6),
        &py,
        &px,
    );
    for (i, sr) in series.iter().enumerate() {
        let (width, dash, opacity) = sr.style.stroke();
        let stroke = format!(
            r#"stroke="{}" stroke-width="{width}" stroke-opacity="{opacity}"{}"#,
            sr.color,
            if dash.is_empty() {
                String::new()
            } else {
                format!(r#" stroke-dasharray="{dash}""#)
            }
        );
        if sr.style == Style::Points {
            for &(x, y) in &sr.points {
                let _ = writeln!(
                    s,
                    r#"<circle class="series" data-series="{i}" cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>held-out loss at step {x}: {y:.4}</title></circle>"#,
                    px(x),
                    py(y),
                    sr.color
                );
            }
        } else {
            let d: Vec<String> = sr
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="series{}" data-series="{i}" fill="none" {stroke} points="{}"/>"#,
                if sr.style == Style::Raw { " raw" } else { "" },
                d.join(" ")
            );
        }
        let (lx, ly) = (w - mr + 10.0, mt + 16.0 * i as f64);
        if sr.style == Style::Points {
            let _ = write!(
                s,
                r#"<circle class="legend" data-series="{i}" cx="{}" cy="{}" r="3.5" fill="{}"/>"#,
                lx + 9.0,
                ly - 4.0,
                sr.color
            );
        } else {
            let _ = write!(
                s,
                r#"<line class="legend" data-series="{i}" x1="{lx}" x2="{}" y1="{}" y2="{}" {stroke}/>"#,
                lx + 18.0,
                ly - 4.0,
                ly - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            lx + 24.0,
            esc(&sr.label)
        );
    }
    for (x, y, gone, why) in &spikes {
        let (cx, cy) = (px(*x), py(*y));
        let fill = if *gone { "none" } else { "#e00" };
        // the triangle's centroid on the point: its apex 6 px above, its base 3 px below
        let _ = writeln!(
            s,
            r##"<path class="spike" data-step="{x}" data-loss="{y}" data-x="{cx:.1}" data-y="{cy:.1}" data-rolled-back="{gone}" d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{fill}" stroke="#e00"><title>spike at step {x}: next-token loss {y:.4} ({})</title></path>"##,
            cx,
            cy - 6.0,
            cx - 5.0,
            cy + 3.0,
            cx + 5.0,
            cy + 3.0,
            esc(why)
        );
    }
    if !spikes.is_empty() {
        let (lx, ly) = (w - mr + 10.0, mt + 16.0 * series.len() as f64);
        let _ = writeln!(
            s,
            r##"<path class="legend-spike" d="M{:.1},{:.1} l-5,9 l10,0 Z" fill="#e00"/><text x="{}" y="{ly}">spike (hollow: rolled back)</text>"##,
            lx + 9.0,
            ly - 10.0,
            lx + 24.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A task's line in [`tasks_svg`].
struct TaskLine {
    label: String,
    color: &'static str,
    /// (step, `acc` or `exact`, `acc_norm`).
    points: Vec<(f64, f64, Option<f64>)>,
    metric: &'static str,
}

/// Renders the task scores of the runs' eval lines (`[train] eval_tasks`) into an SVG
/// document: accuracy against step, one line per run and task — `acc` for a multiple-choice
/// task, with its `acc_norm` as hollow points, `exact` for an exact-answer one — on a fixed
/// [0, 1] axis. `None` when no eval line carries tasks. Evaluations a rollback superseded are
/// left out.
pub fn tasks_svg(runs: &[(String, Vec<StepLog>)], title: &str) -> Option<String> {
    let mut lines: Vec<TaskLine> = Vec::new();
    for (label, log) in runs {
        let gone = tokenmill_trainer::train::superseded(log);
        for (l, _) in log
            .iter()
            .zip(&gone)
            .filter(|(l, g)| l.kind == LogKind::Eval && !**g)
        {
            for t in &l.tasks {
                let (metric, y) = match (t.acc, t.exact) {
                    (Some(a), _) => ("acc", a),
                    (None, Some(e)) => ("exact", e),
                    (None, None) => continue,
                };
                let key = if runs.len() > 1 {
                    format!("{label} {}", t.name)
                } else {
                    t.name.clone()
                };
                let i = match lines.iter().position(|x| x.label == key) {
                    Some(i) => i,
                    None => {
                        lines.push(TaskLine {
                            label: key,
                            color: COLORS[lines.len() % COLORS.len()],
                            points: Vec::new(),
                            metric,
                        });
                        lines.len() - 1
                    }
                };
                lines[i].points.push((l.step as f64, y, t.acc_norm));
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    let (w, h, ml, mr, mt, mb) = (900.0, 520.0, 70.0, 230.0, 40.0, 50.0);
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x1 == x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| mt + (1.0 - y) * (h - mt - mb);
    let mut s = frame(
        Frame {
            w,
            h,
            ml,
            mr,
            mb,
            title,
            y_label: "accuracy",
        },
        &nice_ticks(0.0, 1.0, 5),
        &nice_ticks(x0, x1, 6),
        &py,
        &px,
    );
    for (i, line) in lines.iter().enumerate() {
        let TaskLine {
            label,
            color,
            points: pts,
            metric,
        } = line;
        let d: Vec<String> = pts
            .iter()
            .map(|&(x, y, _)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="task" data-task="{}" data-metric="{metric}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            esc(label),
            d.join(" ")
        );
        for &(x, y, norm) in pts {
            let _ = writeln!(
                s,
                r#"<circle class="task-point" cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{} {metric} at step {x}: {y:.4}</title></circle>"#,
                px(x),
                py(y),
                esc(label)
            );
            if let Some(n) = norm {
                let _ = writeln!(
                    s,
                    r#"<circle class="task-norm" cx="{:.1}" cy="{:.1}" r="4" fill="none" stroke="{color}"><title>{} acc_norm at step {x}: {n:.4}</title></circle>"#,
                    px(x),
                    py(n),
                    esc(label)
                );
            }
        }
        let (lx, ly) = (w - mr + 10.0, mt + 16.0 * i as f64);
        let _ = writeln!(
            s,
            r#"<line class="legend" x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="2"/><text x="{}" y="{ly}">{} ({metric})</text>"#,
            lx + 18.0,
            ly - 4.0,
            ly - 4.0,
            lx + 24.0,
            esc(label)
        );
    }
    if lines.iter().any(|l| l.points.iter().any(|p| p.2.is_some())) {
        let (lx, ly) = (w - mr + 10.0, mt + 16.0 * lines.len() as f64);
        let _ = writeln!(
            s,
            r##"<circle cx="{}" cy="{}" r="4" fill="none" stroke="#555"/><text x="{}" y="{ly}">acc_norm</text>"##,
            lx + 9.0,
            ly - 4.0,
            lx + 24.0
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// `t` escaped for XML/HTML text and attribute values.
pub(crate) fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The size, margins and labels of a chart.
struct Frame<'a> {
    w: f64,
    h: f64,
    ml: f64,
    mr: f64,
    mb: f64,
    title: &'a str,
    y_label: &'a str,
}

/// The opening of a chart's SVG: the white page and title, the y grid with its tick labels,
/// the x tick labels and both axis names (`step` across).
fn frame(
    f: Frame<'_>,
    y_ticks: &[f64],
    x_ticks: &[f64],
    py: &dyn Fn(f64) -> f64,
    px: &dyn Fn(f64) -> f64,
) -> String {
    let Frame {
        w,
        h,
        ml,
        mr,
        mb,
        title,
        y_label,
    } = f;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{ml}" y="24" font-size="15">{}</text>"#,
        esc(title)
    );
    for &y in y_ticks {
        let _ = writeln!(
            s,
            r##"<line class="ytick" x1="{ml}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - mr,
            ml - 6.0,
            py(y) + 4.0,
            tick_label(y),
            py = py(y)
        );
    }
    for &x in x_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            px(x),
            h - mb + 18.0,
            tick_label(x)
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
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        h / 2.0,
        h / 2.0,
        esc(y_label)
    );
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A training line of `step` with next-token loss `main`, total loss `main + 1` (so a
    /// marker placed at the total would float a nat above the curve), and `spikes`.
    pub(crate) fn line(step: u64, main: f64, spikes: &[&str]) -> StepLog {
        serde_json::from_value(serde_json::json!({
            "kind": "train", "step": step, "seq": step, "loss": main + 1.0, "main_loss": main,
            "mtp_loss": main + 0.5, "balance_loss": 0.01, "grad_norm": 1.0, "lr": 1e-3,
            "tokens_per_s": 100.0, "mfu": 0.1, "expert_load": [],
            "spikes": spikes,
        }))
        .expect("a log line")
    }

    #[test]
    fn logs_without_task_scores_draw_no_task_chart() {
        let runs = [("a".to_string(), run_log())];
        assert!(tasks_svg(&runs, "t").is_none());
    }

    fn run_log() -> Vec<StepLog> {
        (0..200)
            .map(|i| {
                let spike = i == 120 || i == 150;
                let y = 8.0 * (-(i as f64) / 60.0).exp() + 1.2 + if spike { 2.5 } else { 0.0 };
                line(i, y, if spike { &["loss"] } else { &[] })
            })
            .collect()
    }

    /// The value of `attr="…"` in an SVG element's text.
    fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
        let k = format!(" {name}=\"");
        let i = el.find(&k)? + k.len();
        Some(&el[i..i + el[i..].find('"')?])
    }

    fn elements<'a>(svg: &'a str, start: &str) -> Vec<&'a str> {
        svg.match_indices(start)
            .map(|(i, _)| &svg[i..i + svg[i..].find('>').expect("closed")])
            .collect()
    }

    fn points(poly: &str) -> Vec<(f64, f64)> {
        attr(poly, "points")
            .unwrap()
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn spike_markers_sit_on_the_raw_next_token_series() {
        for log_y in [false, true] {
            let o = PlotOptions {
                log_y,
                ..Default::default()
            };
            let s = svg_with(&[("run".into(), run_log())], "t", &o);
            let raw = elements(&s, "<polyline class=\"series raw\"");
            assert_eq!(raw.len(), 1);
            let raw = points(raw[0]);
            let spikes = elements(&s, "<path class=\"spike\"");
            assert_eq!(spikes.len(), 2);
            for m in spikes {
                let x: f64 = attr(m, "data-x").unwrap().parse().unwrap();
                let y: f64 = attr(m, "data-y").unwrap().parse().unwrap();
                assert!(
                    raw.iter()
                        .any(|p| (p.0 - x).abs() < 0.05 && (p.1 - y).abs() < 0.05),
                    "marker ({x}, {y}) is on no point of the raw series (log {log_y})"
                );
            }
        }
    }

    #[test]
    fn the_smoothed_curve_is_named_and_drawn_over_a_faint_raw_series() {
        let s = svg(&[("run".into(), run_log())], "t");
        assert!(s.contains("run next-token loss (raw)"), "{s}");
        assert!(s.contains("run next-token loss (EMA 0.9)"));
        let raw = elements(&s, "<polyline class=\"series raw\"")[0];
        let all = elements(&s, "<polyline class=\"series");
        let smooth = all
            .iter()
            .find(|e| attr(e, "data-series") == Some("1"))
            .unwrap();
        assert!(
            s.find(raw).unwrap() < s.find(smooth).unwrap(),
            "smoothed on top"
        );
        let op = |e: &str| attr(e, "stroke-opacity").unwrap().parse::<f64>().unwrap();
        assert!(op(raw) < 0.5 && op(smooth) == 1.0);
        // the raw spike at step 120 shows on the raw line, the smoothed one stays below it
        let (r, m) = (points(raw), points(smooth));
        assert!(
            r[120].1 < m[120].1 - 10.0,
            "raw {:?} smoothed {:?}",
            r[120],
            m[120]
        );
    }

    #[test]
    fn legend_strokes_match_their_series() {
        let s = svg(&[("run".into(), run_log())], "t");
        let legend = elements(&s, "<line class=\"legend\"");
        assert_eq!(legend.len(), 3, "raw, smoothed, MTP");
        let mut dashes = Vec::new();
        for l in legend {
            let id = attr(l, "data-series").unwrap();
            let series = elements(&s, "<polyline class=\"series")
                .into_iter()
                .find(|e| attr(e, "data-series") == Some(id))
                .unwrap();
            for a in [
                "stroke",
                "stroke-width",
                "stroke-opacity",
                "stroke-dasharray",
            ] {
                assert_eq!(attr(l, a), attr(series, a), "{a} of series {id}");
            }
            dashes.push((attr(l, "stroke-dasharray"), attr(l, "stroke-opacity")));
        }
        dashes.dedup();
        assert_eq!(
            dashes.len(),
            3,
            "three distinguishable swatches: {dashes:?}"
        );
    }

    #[test]
    fn ticks_are_round_values() {
        let t = nice_ticks(0.811, 3.654, 5);
        assert_eq!(t, [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(
            nice_ticks(0.0, 1000.0, 5),
            [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(log_ticks(0.9, 12.0), [1.0, 2.0, 5.0, 10.0]);
        let s = svg(&[("run".into(), run_log())], "t");
        for e in elements(&s, "<line class=\"ytick\"") {
            let label = &s[s.find(e).unwrap()..];
            let label = &label[label.find("end\">").unwrap() + 5..];
            let label = &label[..label.find('<').unwrap()];
            let v: f64 = label.parse().unwrap();
            assert!(
                (v * 2.0).fract() == 0.0 || (v * 10.0).fract() == 0.0,
                "tick {label} is not round"
            );
        }
    }

    #[test]
    fn ema_is_debiased_and_zero_weight_is_the_raw_series() {
        assert!(
            ema(&[3.0, 3.0, 3.0], 0.9)
                .iter()
                .all(|v| (v - 3.0).abs() < 1e-12)
        );
        assert_eq!(ema(&[1.0, 2.0], 0.0), [1.0, 2.0]);
        let e = ema(&[1.0, 2.0], 0.5);
        assert!((e[1] - (0.5 * 0.5 + 0.5 * 2.0) / 0.75).abs() < 1e-12);
    }
}
