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
}
