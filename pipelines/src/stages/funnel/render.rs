//! The funnel drawn for people: an SVG bar chart and a text table.

use super::Funnel;

impl Funnel {
    /// The funnel as an SVG chart, FineWeb-style: per stage two panels, documents and bytes,
    /// each a grey bar for what came in and a blue one for what went out, with the counts;
    /// under them every rule that dropped documents at the stage, most first.
    pub fn svg(&self, title: &str) -> String {
        let (w, row_h, left, panel) = (1000.0, 58.0, 150.0, 390.0);
        let h = 64.0 + row_h * self.rows.len() as f64 + 10.0;
        let max_docs = self
            .rows
            .iter()
            .map(|r| r.docs_in)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_bytes = self
            .rows
            .iter()
            .map(|r| r.bytes_in)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let bar_w = panel - 20.0;
        let esc = crate::plot::esc;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
             <text x=\"10\" y=\"24\" font-size=\"15\">{}</text>\
             <text x=\"{left}\" y=\"48\" font-weight=\"bold\">documents</text>\
             <text x=\"{}\" y=\"48\" font-weight=\"bold\">bytes</text>\
             <rect x=\"{}\" y=\"38\" width=\"12\" height=\"10\" fill=\"#ddd\"/><text x=\"{}\" y=\"47\">in</text>\
             <rect x=\"{}\" y=\"38\" width=\"12\" height=\"10\" fill=\"#1f77b4\"/><text x=\"{}\" y=\"47\">passed on</text>\n",
            esc(title),
            left + panel,
            w - 150.0,
            w - 134.0,
            w - 110.0,
            w - 94.0,
        );
        for (i, r) in self.rows.iter().enumerate() {
            let y = 58.0 + row_h * i as f64;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-weight=\"bold\">{}</text>\n",
                left - 8.0,
                y + 13.0,
                esc(&r.stage)
            ));
            let panels = [
                (
                    left,
                    r.docs_in as f64 / max_docs,
                    r.docs_out as f64 / max_docs,
                    format!(
                        "{} → {} ({:.1} %)",
                        r.docs_in,
                        r.docs_out,
                        100.0 * r.docs_out as f64 / r.docs_in.max(1) as f64
                    ),
                ),
                (
                    left + panel,
                    r.bytes_in as f64 / max_bytes,
                    r.bytes_out as f64 / max_bytes,
                    if i == 0 && r.stage == "read" {
                        // the input files' bytes (compressed, with headers) against the pages'
                        format!(
                            "{} of input files → {} of documents",
                            bytes(r.bytes_in),
                            bytes(r.bytes_out)
                        )
                    } else {
                        format!("{} → {}", bytes(r.bytes_in), bytes(r.bytes_out))
                    },
                ),
            ];
            for (x, fin, fout, label) in panels {
                s.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#ddd\"/>\
                     <rect x=\"{x}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#1f77b4\"/>\
                     <text x=\"{x}\" y=\"{:.1}\">{}</text>\n",
                    fin * bar_w,
                    fout * bar_w,
                    y + 30.0,
                    esc(&label)
                ));
            }
            let mut rules: Vec<(&String, &u64)> = r.dropped.iter().collect();
            rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            if !rules.is_empty() {
                let list: Vec<String> = rules.iter().map(|(k, n)| format!("{k} {n}")).collect();
                s.push_str(&format!(
                    "<text x=\"{left}\" y=\"{:.1}\" fill=\"#b00\">dropped: {}</text>\n",
                    y + 45.0,
                    esc(&list.join(", "))
                ));
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// The funnel as a table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "  {:<20} {:>10} {:>10} {:>7} {:>14} {:>14}\n",
            "stage", "docs in", "docs out", "kept", "MB in", "MB out"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "  {:<20} {:>10} {:>10} {:>6.1}% {:>14.3} {:>14.3}\n",
                r.stage,
                r.docs_in,
                r.docs_out,
                100.0 * r.docs_out as f64 / r.docs_in.max(1) as f64,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6
            ));
            let mut rules: Vec<_> = r.dropped.iter().collect();
            rules.sort_by(|a, b| b.1.cmp(a.1));
            for (k, v) in &rules {
                s.push_str(&format!("  {:<20}   dropped {v:>8}  {k}\n", ""));
            }
            for (k, v) in &r.noted {
                s.push_str(&format!("  {:<20}   noted   {v:>8}  {k}\n", ""));
            }
        }
        s
    }
}

/// Bytes as a person reads them: B, kB, MB, GB (powers of 1000), three significant digits.
fn bytes(n: u64) -> String {
    let (v, unit) = match n {
        0..1_000 => return format!("{n} B"),
        1_000..1_000_000 => (n as f64 / 1e3, "kB"),
        1_000_000..1_000_000_000 => (n as f64 / 1e6, "MB"),
        _ => (n as f64 / 1e9, "GB"),
    };
    let t = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let t = if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    };
    format!("{t} {unit}")
}
