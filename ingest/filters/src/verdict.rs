//! What dropped a document, and the bookkeeping that finds the first failing rule.

use std::fmt;
use std::ops::ControlFlow;

use serde::Serialize;

/// Why a filter dropped a document: the filter, its rule, the measured value and the threshold
/// it crossed.
///
/// `rule` is the name of the measured value, the same name the filter's `scores` reports
/// (for example `GopherQuality`'s `mean_word_length`); a rule with a lower and an upper bound
/// (`words`, `mean_word_length`) tells which one by its `threshold`. Rules that are a match
/// rather than a measurement (a blocked domain, `lorem ipsum`) have `value` 1 and
/// `threshold` 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drop {
    /// The filter: `gopher_repetition`, `gopher_quality`, `c4`, `fineweb`, `url`, `language`.
    pub filter: &'static str,
    /// The rule within the filter.
    pub rule: &'static str,
    /// What was measured.
    pub value: f64,
    /// The threshold the value crossed.
    pub threshold: f64,
}

impl Drop {
    /// A drop by a rule that matches rather than measures (value 1, threshold 0).
    pub(crate) fn matched(filter: &'static str, rule: &'static str) -> Self {
        Self {
            filter,
            rule,
            value: 1.0,
            threshold: 0.0,
        }
    }

    /// `filter/rule`, e.g. `gopher_quality/stop_words`: a key for counting drops.
    pub fn key(&self) -> String {
        format!("{}/{}", self.filter, self.rule)
    }
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped by {}/{}: {} (threshold {})",
            self.filter,
            self.rule,
            Rounded(self.value),
            Rounded(self.threshold)
        )
    }
}

/// Up to four decimals, without trailing zeros.
struct Rounded(f64);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:.4}", self.0);
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        f.write_str(s)
    }
}

/// How a measured value fails its rule.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Dropped when the value is below the threshold.
    Min(f64),
    /// Dropped when the value is above the threshold.
    Max(f64),
}

/// Collects measurements: in check mode it stops at the first failing rule, in score mode it
/// records every value. Each filter writes its rules once, in order, against this.
#[derive(Debug)]
pub(crate) struct Meter {
    filter: &'static str,
    check: bool,
    drop: Option<Drop>,
    scores: Vec<(&'static str, f64)>,
}

impl Meter {
    /// Stops at the first failing rule.
    pub(crate) fn check(filter: &'static str) -> Self {
        Self {
            filter,
            check: true,
            drop: None,
            scores: Vec::new(),
        }
    }

    /// Records every value and never stops.
    pub(crate) fn scores(filter: &'static str) -> Self {
        Self {
            filter,
            check: false,
            drop: None,
            scores: Vec::new(),
        }
    }

    /// Records `value` under `rule`, checked against `limits` in order.
    pub(crate) fn measure(
        &mut self,
        rule: &'static str,
        value: f64,
        limits: &[Limit],
    ) -> ControlFlow<()> {
        if !self.check {
            self.scores.push((rule, value));
            return ControlFlow::Continue(());
        }
        for &limit in limits {
            let (fails, threshold) = match limit {
                Limit::Min(t) => (value < t, t),
                Limit::Max(t) => (value > t, t),
            };
            if fails {
                self.drop = Some(Drop {
                    filter: self.filter,
                    rule,
                    value,
                    threshold,
                });
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// A drop that is not a measurement (an empty document, a matched pattern); in score mode
    /// it is ignored.
    pub(crate) fn fail(&mut self, rule: &'static str) -> ControlFlow<()> {
        if !self.check {
            return ControlFlow::Continue(());
        }
        self.drop = Some(Drop {
            filter: self.filter,
            rule,
            value: 0.0,
            threshold: 0.0,
        });
        ControlFlow::Break(())
    }

    pub(crate) fn into_result(self) -> Result<(), Drop> {
        self.drop.map_or(Ok(()), Err)
    }

    pub(crate) fn into_scores(self) -> Vec<(&'static str, f64)> {
        self.scores
    }
}

/// `a / b`, and 0 when `b` is 0 (an empty document measures 0).
pub(crate) fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_rule_value_and_threshold() {
        let d = Drop {
            filter: "gopher_quality",
            rule: "mean_word_length",
            value: 2.5,
            threshold: 3.0,
        };
        assert_eq!(
            d.to_string(),
            "dropped by gopher_quality/mean_word_length: 2.5 (threshold 3)"
        );
        let d = Drop {
            filter: "fineweb",
            rule: "line_punct_ratio",
            value: 1.0 / 3.0,
            threshold: 0.12,
        };
        assert_eq!(
            d.to_string(),
            "dropped by fineweb/line_punct_ratio: 0.3333 (threshold 0.12)"
        );
        assert_eq!(d.key(), "fineweb/line_punct_ratio");
    }

    #[test]
    fn meter_stops_at_the_first_failure_or_scores_all() {
        let run = |m: &mut Meter| -> ControlFlow<()> {
            m.measure("a", 5.0, &[Limit::Min(1.0), Limit::Max(10.0)])?;
            m.measure("b", 0.5, &[Limit::Max(0.3)])?;
            m.measure("c", 0.0, &[Limit::Min(1.0)])
        };
        let mut m = Meter::check("f");
        let _ = run(&mut m);
        let d = m.into_result().unwrap_err();
        assert_eq!((d.rule, d.value, d.threshold), ("b", 0.5, 0.3));
        let mut m = Meter::scores("f");
        let _ = run(&mut m);
        assert_eq!(m.into_scores(), [("a", 5.0), ("b", 0.5), ("c", 0.0)]);
        assert_eq!(ratio(1, 0), 0.0);
    }
}
