//! The extraction step: a document's text, or the main content of its HTML page.

use std::borrow::Cow;

use super::{DocIn, Dropped, Funnel};
use crate::config::ExtractConfig;

/// The text the filters judge: the document's own text when it has some, else the text
/// extracted from its page (counted at the `extract` stage). A page is dropped when its text
/// is shorter than `min_chars` or extraction is off, and a document with neither is a
/// reader-level skip (`read/empty_text`), not counted in the funnel.
pub(super) fn text<'a>(
    doc: DocIn<'a>,
    config: &ExtractConfig,
    funnel: &mut Funnel,
) -> Result<Cow<'a, str>, Dropped> {
    match (doc.text, doc.html) {
        (Some(t), _) if !t.trim().is_empty() => Ok(Cow::Borrowed(t)),
        (_, Some(h)) if config.enabled => {
            let x = tokenmill_extract::extract(h, &config.options);
            let chars = x.text.chars().count();
            if chars < config.min_chars {
                let rule = if chars == 0 { "no_text" } else { "too_short" };
                funnel.drop("extract", rule, h.len());
                return Err(Dropped {
                    stage: "extract",
                    rule: rule.into(),
                    value: chars as f64,
                    threshold: config.min_chars as f64,
                    text: None,
                });
            }
            funnel.pass("extract", h.len(), x.text.len());
            if x.truncated {
                funnel.note("extract", "capped_at_max_bytes");
            }
            Ok(Cow::Owned(x.text))
        }
        (_, Some(h)) => {
            funnel.drop("extract", "disabled", h.len());
            Err(Dropped {
                stage: "extract",
                rule: "html_without_extraction".into(),
                value: f64::NAN,
                threshold: f64::NAN,
                text: None,
            })
        }
        // no text at all: a reader-level skip (`empty_text`), not a stage's decision
        _ => Err(Dropped {
            stage: "read",
            rule: "empty_text".into(),
            value: 0.0,
            threshold: f64::NAN,
            text: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqlConfig;
    use crate::stages::Stages;

    #[test]
    fn pages_over_the_cap_are_cut_and_noted_and_empty_pages_dropped() {
        let ex = ExtractConfig {
            options: tokenmill_extract::ExtractorConfig {
                max_bytes: 200,
                ..Default::default()
            },
            ..Default::default()
        };
        let st = Stages::new(&ex, None, &SqlConfig::default()).unwrap();
        let mut f = Funnel::default();
        let long = format!(
            "<html><body><article><p>{}</p></article></body></html>",
            "The council approved the plan. ".repeat(40)
        );
        let k = st
            .run(
                DocIn {
                    url: None,
                    text: None,
                    html: Some(&long),
                },
                &mut f,
            )
            .unwrap();
        assert!(k.text.len() < 200 && k.text.starts_with("The council"));
        assert_eq!(f.rows[0].noted["capped_at_max_bytes"], 1);
        let d = st
            .run(
                DocIn {
                    url: None,
                    text: None,
                    html: Some("<html><body><nav>Home</nav></body></html>"),
                },
                &mut f,
            )
            .unwrap_err();
        assert_eq!((d.stage, d.rule.as_str()), ("extract", "no_text"));
        assert_eq!((f.rows[0].docs_in, f.rows[0].docs_out), (2, 1));
    }
}
