//! The funnel drawn for people: an SVG bar chart and a text table.

use super::Funnel;

impl Funnel {
    /// The funnel as an SVG bar chart: per stage, the documents in (grey) and out (blue), with
    /// the share kept and the top drop rule.
    pub fn svg(&self, title: &str) -> String {
        let (w, row_h, left) = (900.0, 34.0, 150.0);
        let h = 50.0 + row_h * self.rows.len() as f64 + 20.0;
        let max = self
            .rows
            .iter()
            .map(|r| r.docs_in)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let scale = (w - left - 330.0) / max;
        let esc = crate::plot::esc;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
             <text x=\"10\" y=\"24\" font-size=\"15\">{}</text>\n",
            esc(title)
        );
        for (i, r) in self.rows.iter().enumerate() {
            let y = 40.0 + row_h * i as f64;
            let top = r
                .dropped
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, n)| format!(" — {k} {n}"))
                .unwrap_or_default();
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ddd\"/>\
                 <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{} of {} ({:.1} %){}</text>\n",
                left - 8.0,
                y + row_h * 0.55,
                esc(&r.stage),
                r.docs_in as f64 * scale,
                row_h * 0.7,
                r.docs_out as f64 * scale,
                row_h * 0.7,
                left + r.docs_in as f64 * scale + 6.0,
                y + row_h * 0.55,
                r.docs_out,
                r.docs_in,
                100.0 * r.docs_out as f64 / r.docs_in.max(1) as f64,
                esc(&top)
            ));
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
            for (k, v) in rules.iter().take(4) {
                s.push_str(&format!("  {:<20}   dropped {v:>8}  {k}\n", ""));
            }
            for (k, v) in &r.noted {
                s.push_str(&format!("  {:<20}   noted   {v:>8}  {k}\n", ""));
            }
        }
        s
    }
}
