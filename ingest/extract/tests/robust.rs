//! Extraction never panics, whatever the markup, and only returns text that was in the page,
//! in the page's order.

use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// Fragments real pages are made of, shuffled into malformed documents.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<p>".to_string()),
        Just("</p>".to_string()),
        Just("<div class=\"article-body\">".to_string()),
        Just("</div>".to_string()),
        Just("<nav>".to_string()),
        Just("<script>var x = '</p>';".to_string()),
        Just("</script>".to_string()),
        Just("<!-- c".to_string()),
        Just("-->".to_string()),
        Just("<a href='x'>".to_string()),
        Just("</a>".to_string()),
        Just("<table><tr><td>".to_string()),
        Just("&amp; &#x41; &bogus; &".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("<br/>".to_string()),
        "[a-zA-Zé日本 ,.]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_markup_extracts_without_panicking(parts in prop::collection::vec(fragment(), 0..60)) {
        let html: String = parts.concat();
        let x = tokenmill_extract::extract(&html, &Default::default());
        // the extracted letters are the page's, in the page's order (a subsequence of the
        // page with entities decoded and in NFC, as the text is: tags between them are gone,
        // nothing is invented)
        let page: String = html_escape::decode_html_entities(&html).nfc().collect();
        let mut rest = page.chars().filter(|c| c.is_alphanumeric());
        for c in x.text.chars().filter(|c| c.is_alphanumeric()) {
            prop_assert!(rest.any(|p| p == c), "{c:?} of {:?} is not from the page", x.text);
        }
    }

    #[test]
    fn a_cut_never_splits_a_character(s in "[a-zé日本<>/ ]{0,200}", max in 0usize..64) {
        let opts = tokenmill_extract::ExtractorConfig { max_bytes: max, ..Default::default() };
        let x = tokenmill_extract::extract(&s, &opts);
        prop_assert_eq!(x.truncated, s.len() > max);
    }
}
