//! The funnel: per stage, the documents and bytes that went in and came out, and the rules
//! that dropped documents. Its rendering as a chart and a table is in [`render`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod render;

/// One stage's row of the funnel: documents and bytes in and out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelRow {
    /// The stage (`url`, `extract`, a filter's name, `sql`, `dedup`, ...).
    pub stage: String,
    /// Documents that reached the stage.
    pub docs_in: u64,
    /// Documents it passed on.
    pub docs_out: u64,
    /// Bytes of the text (or page) of the documents that reached it.
    pub bytes_in: u64,
    /// Bytes of the text of the documents it passed on, as it left them.
    pub bytes_out: u64,
    /// Documents dropped, by rule.
    pub dropped: BTreeMap<String, u64>,
    /// Documents passed on with a note (e.g. `capped_at_max_bytes`: a page longer than
    /// `[extract] max_bytes` extracted from its first `max_bytes`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub noted: BTreeMap<String, u64>,
}

/// The funnel of a task (or, merged, of a build): one row per stage, in the order the stages
/// first saw a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    /// The stages' rows.
    pub rows: Vec<FunnelRow>,
}

impl Funnel {
    fn row(&mut self, stage: &str) -> &mut FunnelRow {
        if let Some(i) = self.rows.iter().position(|r| r.stage == stage) {
            &mut self.rows[i]
        } else {
            self.rows.push(FunnelRow {
                stage: stage.to_string(),
                ..Default::default()
            });
            self.rows.last_mut().expect("just pushed")
        }
    }

    /// Counts a document through `stage`.
    pub fn pass(&mut self, stage: &str, bytes_in: usize, bytes_out: usize) {
        let r = self.row(stage);
        r.docs_in += 1;
        r.docs_out += 1;
        r.bytes_in += bytes_in as u64;
        r.bytes_out += bytes_out as u64;
    }

    /// Counts a document dropped at `stage` by `rule`.
    pub fn drop(&mut self, stage: &str, rule: &str, bytes_in: usize) {
        let r = self.row(stage);
        r.docs_in += 1;
        r.bytes_in += bytes_in as u64;
        *r.dropped.entry(rule.to_string()).or_default() += 1;
    }

    /// Notes `what` about a document that `stage` passed on (counted by [`Funnel::pass`]).
    pub fn note(&mut self, stage: &str, what: &str) {
        *self.row(stage).noted.entry(what.to_string()).or_default() += 1;
    }

    /// Adds `o` (rows matched by stage name, new ones appended in order).
    pub fn merge(&mut self, o: &Funnel) {
        for r in &o.rows {
            let m = self.row(&r.stage);
            m.docs_in += r.docs_in;
            m.docs_out += r.docs_out;
            m.bytes_in += r.bytes_in;
            m.bytes_out += r.bytes_out;
            for (k, v) in &r.dropped {
                *m.dropped.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &r.noted {
                *m.noted.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// The funnel with the reading in front: a `read` row from the documents read (`read`)
    /// and the input bytes, whose drops are the skips that no stage row counts (the reader's:
    /// HTTP status, non-text payload, empty text, …; dedup's) — so the chart starts at every
    /// document read, not at the first stage.
    pub fn with_reading(
        &self,
        read: u64,
        input_bytes: u64,
        skipped: &BTreeMap<String, u64>,
    ) -> Funnel {
        let stages: Vec<&str> = self.rows.iter().map(|r| r.stage.as_str()).collect();
        let dropped: BTreeMap<String, u64> = skipped
            .iter()
            .filter(|(k, v)| **v > 0 && !stages.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let first = self.rows.first();
        let row = FunnelRow {
            stage: "read".into(),
            docs_in: read,
            docs_out: first.map_or(read - dropped.values().sum::<u64>().min(read), |r| {
                r.docs_in
            }),
            bytes_in: input_bytes,
            bytes_out: first.map_or(0, |r| r.bytes_in),
            dropped,
            noted: BTreeMap::new(),
        };
        let mut rows = vec![row];
        rows.extend(self.rows.iter().cloned());
        Funnel { rows }
    }

    /// Documents dropped per stage.
    pub fn dropped_by_stage(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rows
            .iter()
            .map(|r| (r.stage.as_str(), r.docs_in - r.docs_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_by_stage_in_first_seen_order() {
        let mut a = Funnel::default();
        a.pass("language", 10, 10);
        a.drop("c4", "curly_bracket", 7);
        a.pass("c4", 20, 12);
        a.note("c4", "something");
        let mut b = Funnel::default();
        b.drop("url", "domain", 5);
        b.pass("c4", 3, 2);
        a.merge(&b);
        let stages: Vec<&str> = a.rows.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(stages, ["language", "c4", "url"]);
        let c4 = &a.rows[1];
        assert_eq!(
            (c4.docs_in, c4.docs_out, c4.bytes_in, c4.bytes_out),
            (3, 2, 30, 14)
        );
        assert_eq!((c4.dropped["curly_bracket"], c4.noted["something"]), (1, 1));
        let dropped: Vec<(&str, u64)> = a.dropped_by_stage().collect();
        assert_eq!(dropped, [("language", 0), ("c4", 1), ("url", 1)]);
    }

    /// A funnel like the quickstart crawl's: 208 read, 5 skipped by the reader, 203 into the
    /// first stage, one stage dropping by three rules.
    fn crawl() -> Funnel {
        let mut f = Funnel::default();
        for _ in 0..203 {
            f.pass("url", 100, 100);
        }
        for _ in 0..100 {
            f.pass("gopher_repetition", 50, 50);
        }
        for (rule, n) in [("dup_5_gram", 80), ("top_2_gram", 20), ("top_3_gram", 3)] {
            for _ in 0..n {
                f.drop("gopher_repetition", rule, 50);
            }
        }
        let skipped = BTreeMap::from([
            ("http_status".to_string(), 2),
            ("non_text_payload".to_string(), 2),
            ("empty_text".to_string(), 1),
            ("gopher_repetition".to_string(), 103),
        ]);
        f.with_reading(208, 90_000, &skipped)
    }

    #[test]
    fn the_chart_starts_at_every_document_read() {
        let f = crawl();
        let r = &f.rows[0];
        assert_eq!(
            (r.stage.as_str(), r.docs_in, r.docs_out),
            ("read", 208, 203)
        );
        assert_eq!((r.bytes_in, r.bytes_out), (90_000, 20_300));
        // the reader's skips, not the stages' drops
        assert_eq!(r.dropped.len(), 3);
        assert_eq!(r.dropped["http_status"], 2);
        let svg = f.svg("t");
        assert!(svg.contains("208 → 203"), "{svg}");
    }

    #[test]
    fn the_chart_shows_documents_and_bytes_and_every_rule() {
        let svg = crawl().svg("t");
        assert!(
            svg.contains(">documents<") && svg.contains(">bytes<"),
            "{svg}"
        );
        for rule in [
            "dup_5_gram 80",
            "top_2_gram 20",
            "top_3_gram 3",
            "http_status 2",
            "empty_text 1",
        ] {
            assert!(svg.contains(rule), "{rule} missing: {svg}");
        }
        // bytes: 20.3 kB into the first stage, 5 kB out of gopher_repetition
        assert!(
            svg.contains("90 kB of input files → 20.3 kB of documents"),
            "{svg}"
        );
        assert!(svg.contains("10.2 kB → 5 kB"), "{svg}");
    }
}
