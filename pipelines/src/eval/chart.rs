//! A horizontal bar chart (SVG) of a loss breakdown: one bar per group, its length the group's
//! loss, labelled with the loss, the perplexity and the targets; the whole dataset's loss as a
//! dashed line.

use std::fmt::Write;

use super::dataset::{DatasetEval, GroupBy};

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A label cut to `n` characters, keeping its end (file names end in what tells them apart).
fn cut(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        s.to_string()
    } else {
        format!("…{}", c[c.len() - (n - 1)..].iter().collect::<String>())
    }
}

/// The groups of `by` as an SVG document.
pub fn bar_chart(r: &DatasetEval, by: GroupBy) -> String {
    let groups = r.groups(by);
    let (ml, mr, mt, mb, bar_h, gap) = (260.0, 250.0, 56.0, 40.0, 22.0, 8.0);
    let plot_w = 520.0;
    let w = ml + plot_w + mr;
    let h = mt + mb + groups.len().max(1) as f64 * (bar_h + gap);
    let max = groups
        .iter()
        .map(|g| g.sum.loss())
        .chain([r.total.loss()])
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let x_of = |loss: f64| ml + plot_w * (loss / max).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = format!(
        "loss by {} — {} on {}",
        by.name(),
        r.model.display(),
        r.dataset.display()
    );
    let _ = writeln!(
        s,
        r#"<text x="{ml}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        esc(&cut(&title, 110))
    );
    let _ = writeln!(
        s,
        r##"<text x="{ml}" y="40" fill="#555">next-token loss (nats), token-weighted; seq_len {}, {} samples</text>"##,
        r.seq_len, r.samples
    );
    for (i, g) in groups.iter().enumerate() {
        let y = mt + i as f64 * (bar_h + gap);
        let loss = g.sum.loss();
        let x1 = x_of(loss);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            ml - 8.0,
            y + bar_h * 0.7,
            esc(&cut(&g.key, 38))
        );
        let _ = writeln!(
            s,
            r##"<rect x="{ml}" y="{y}" width="{:.2}" height="{bar_h}" fill="#1f77b4"><title>{}: loss {loss:.4}, perplexity {:.3}, {} targets in {} documents</title></rect>"##,
            (x1 - ml).max(0.5),
            esc(&g.key),
            g.sum.perplexity(),
            g.sum.targets,
            g.sum.documents
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{}">{loss:.3} · ppl {:.1} · {} tok</text>"#,
            x1 + 6.0,
            y + bar_h * 0.7,
            g.sum.perplexity(),
            g.sum.targets
        );
    }
    let xa = x_of(r.total.loss());
    let _ = writeln!(
        s,
        r##"<line x1="{xa:.2}" y1="{}" x2="{xa:.2}" y2="{}" stroke="#d62728" stroke-dasharray="5,4"/>"##,
        mt - 6.0,
        h - mb + 4.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{xa:.2}" y="{}" text-anchor="middle" fill="#d62728">all: {:.3}</text>"##,
        h - mb + 18.0,
        r.total.loss()
    );
    let _ = writeln!(
        s,
        r##"<line x1="{ml}" y1="{}" x2="{ml}" y2="{}" stroke="#333"/>"##,
        mt - 6.0,
        h - mb + 4.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::eval::dataset::{Group, LossSum};

    #[test]
    fn bars_are_proportional_to_loss_and_labels_are_escaped() {
        let g = |key: &str, targets: u64, loss_sum: f64| Group {
            key: key.into(),
            sum: LossSum {
                targets,
                loss_sum,
                documents: 1,
            },
        };
        let groups = vec![g("a<b>.jsonl", 10, 40.0), g("c.jsonl", 10, 20.0)];
        let r = DatasetEval {
            model: PathBuf::from("m"),
            dataset: PathBuf::from("d"),
            seq_len: 8,
            samples: 3,
            epoch_samples: 3,
            total: LossSum {
                targets: 20,
                loss_sum: 60.0,
                documents: 2,
            },
            breakdowns: BTreeMap::from([(GroupBy::Source, groups)]),
        };
        let svg = bar_chart(&r, GroupBy::Source);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b&gt;.jsonl") && !svg.contains("a<b>"));
        // Loss 4 spans the plot (520 px), loss 2 half of it.
        assert!(svg.contains(r#"width="520.00""#), "{svg}");
        assert!(svg.contains(r#"width="260.00""#), "{svg}");
        assert!(svg.contains("all: 3.000"));
    }
}
