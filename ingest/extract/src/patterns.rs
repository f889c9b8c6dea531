//! What an element's `class`, `id`, `role` and `itemprop` say about it: article text, page
//! furniture, or nothing. Short words must match a whole word of the attribute (split at
//! non-alphanumerics and camel-case humps), long distinctive ones anywhere in it.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use crate::lexer::Attrs;

/// The verdict of an element's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Marked as the article body (`itemprop=articleBody`, `article-body`, `entry-content`…).
    StrongContent,
    /// Suggests content (`article`, `story`, `post`, `content`…).
    Content,
    /// Page furniture (`nav`, `sidebar`, `share`, `related`, `cookie`…).
    Boiler,
    /// The readers' comments (`comments`, `disqus`…): not the article, but text of its own.
    Comments,
    /// Words that name furniture on some sites and layout on others (`widget`, `ads`,
    /// `header`, `video`…): furniture unless the element holds prose.
    WeakBoiler,
    /// Says nothing either way.
    None,
}

const STRONG_ANYWHERE: &[&str] = &[
    "articlebody",
    "article-body",
    "article__body",
    "article_body",
    "storybody",
    "story-body",
    "story_body",
    "entry-content",
    "post-content",
    "postcontent",
    "post-body",
    "postbody",
    "article-content",
    "articlecontent",
    "article__content",
    "story-content",
    "article-text",
    "articletext",
    "body-text",
    "bodytext",
    "main-text",
];

const BOILER_ANYWHERE: &[&str] = &[
    "sidebar",
    "newsletter",
    "breadcrumb",
    "navigation",
    "navbar",
    "subscribe",
    "advert",
    "sponsor",
    "outbrain",
    "taboola",
    "recommend",
    "trending",
    "mostpopular",
    "most-popular",
    "most-read",
    "mostread",
    "related",
    "pagination",
    "cookie",
    "consent",
    "signup",
    "sign-up",
    "social",
    "footer",
    "masthead",
    "toolbar",
    "byline",
    "caption",
    "dateline",
    "copyright",
    "skip-link",
    "skiplink",
    "login",
    "paywall-prompt",
    "respond",
    "reply-title",
    "akismet",
    "share",
];

const COMMENTS_ANYWHERE: &[&str] = &["comment", "disqus"];

const BOILER_WORDS: &[&str] = &[
    "nav",
    "menu",
    "banner",
    "popup",
    "modal",
    "tags",
    "tag",
    "print",
    "meta",
    "author",
    "bio",
    "credit",
    "credits",
    "topics",
    "newsletter",
    "aside",
    "overlay",
    "search",
    "timestamp",
    "date",
];

/// Furniture on many sites, layout on others (`elementor-widget`, `Section--Ads`: a section
/// that carries ads, `entry-header` with the article's lead).
const WEAK_BOILER_WORDS: &[&str] = &[
    "widget", "ad", "ads", "adv", "promo", "promos", "rail", "gallery", "video", "more", "links",
    "toc", "header",
];

const CONTENT_WORDS: &[&str] = &[
    "article", "story", "post", "entry", "content", "main", "body", "text", "blog", "news",
];

const BOILER_ROLES: &[&str] = &[
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
    "dialog",
    "alertdialog",
    "menu",
    "menubar",
    "toolbar",
];

/// One automaton for the patterns matched anywhere: strong-content ones first.
fn anywhere() -> &'static AhoCorasick {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    AC.get_or_init(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(
                STRONG_ANYWHERE
                    .iter()
                    .chain(BOILER_ANYWHERE)
                    .chain(COMMENTS_ANYWHERE),
            )
            .expect("static patterns")
    })
}

/// Calls `f` with each word of `s` (split at non-alphanumerics and camel-case humps) until it
/// returns true.
fn any_word(s: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    let b = s.as_bytes();
    let mut start = None;
    for i in 0..=b.len() {
        let c = b.get(i).copied().unwrap_or(b' ');
        let alnum = c.is_ascii_alphanumeric() || c >= 0x80;
        let hump = i > 0 && c.is_ascii_uppercase() && b[i - 1].is_ascii_lowercase();
        if let Some(st) = start
            && (!alnum || hump)
        {
            if f(&s[st..i]) {
                return true;
            }
            start = None;
        }
        if alnum && start.is_none() {
            start = Some(i);
        }
    }
    false
}

fn in_set(w: &str, set: &[&str]) -> bool {
    w.len() <= 11 && set.iter().any(|p| p.eq_ignore_ascii_case(w))
}

/// Which of the weak furniture words (bit `i` for `WEAK_BOILER_WORDS[i]`) an element's
/// `class` and `id` use, whatever else they say: a word that also marks the containers of a
/// page's prose is layout on that page, not furniture.
pub fn weak_words(a: &Attrs<'_>) -> u16 {
    let mut m = 0u16;
    for s in [a.class, a.id] {
        if s.is_empty() {
            continue;
        }
        any_word(s, |w| {
            if w.len() <= 11
                && let Some(i) = WEAK_BOILER_WORDS
                    .iter()
                    .position(|p| p.eq_ignore_ascii_case(w))
            {
                m |= 1 << i;
            }
            false
        });
    }
    m
}

/// A class list as WordPress writes it for a post (`post_class()`: `hentry`, `type-post`) or
/// a reader's comment (`comment_class()`: `comment`, `byuser`, `depth-N`): its `tag-…` and
/// `category-…` classes name the post's taxonomy, not a tag cloud, and `comment-author-…`
/// names who wrote the comment, not an author box. Returns the list without them when there
/// are any.
fn without_generated(class: &str) -> Option<String> {
    let words = || class.split_ascii_whitespace();
    let post = words().any(|c| c == "hentry" || c.starts_with("type-"));
    let comment = words().any(|c| c == "comment" || c == "byuser" || c.starts_with("depth-"));
    let generated = |c: &str| {
        (post && (c.starts_with("tag-") || c.starts_with("category-")))
            || (comment && c.starts_with("comment-author-"))
    };
    if !words().any(generated) {
        return None;
    }
    Some(
        words()
            .filter(|c| !generated(c))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The hint of an element's attributes.
pub fn hint(a: &Attrs<'_>) -> Hint {
    if let Some(class) = without_generated(a.class) {
        return hint_of(&Attrs {
            class: &class,
            ..*a
        });
    }
    hint_of(a)
}

fn hint_of(a: &Attrs<'_>) -> Hint {
    if !a.itemprop.is_empty()
        && a.itemprop
            .as_bytes()
            .windows(11)
            .any(|w| w.eq_ignore_ascii_case(b"articlebody"))
    {
        return Hint::StrongContent;
    }
    let role = a.role.trim();
    if !role.is_empty() && BOILER_ROLES.iter().any(|r| role.eq_ignore_ascii_case(r)) {
        return Hint::Boiler;
    }
    let main_role = role.eq_ignore_ascii_case("main") || role.eq_ignore_ascii_case("article");
    if a.class.is_empty() && a.id.is_empty() {
        return if main_role { Hint::Content } else { Hint::None };
    }
    let ac = anywhere();
    let (mut boiler, mut comments) = (false, false);
    for s in [a.class, a.id] {
        for m in ac.find_overlapping_iter(s) {
            let i = m.pattern().as_usize();
            if i < STRONG_ANYWHERE.len() {
                return Hint::StrongContent;
            }
            if i < STRONG_ANYWHERE.len() + BOILER_ANYWHERE.len() {
                boiler = true;
            } else {
                comments = true;
            }
        }
    }
    let words =
        |set: &[&str]| any_word(a.class, |w| in_set(w, set)) || any_word(a.id, |w| in_set(w, set));
    if boiler || words(BOILER_WORDS) {
        return Hint::Boiler;
    }
    if comments {
        return Hint::Comments;
    }
    if words(WEAK_BOILER_WORDS) {
        return Hint::WeakBoiler;
    }
    if main_role
        || any_word(a.class, |w| in_set(w, CONTENT_WORDS))
        || any_word(a.id, |w| in_set(w, CONTENT_WORDS))
    {
        return Hint::Content;
    }
    Hint::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_words_are_listed_by_bit() {
        let a = Attrs {
            class: "elementor-widget-wrap topAd",
            ..Default::default()
        };
        assert_eq!(weak_words(&a), 1 << 0 | 1 << 1);
        assert!(WEAK_BOILER_WORDS.len() <= 16);
    }

    fn h(class: &str, id: &str) -> Hint {
        hint(&Attrs {
            class,
            id,
            ..Default::default()
        })
    }

    #[test]
    fn attributes_are_read_as_content_or_furniture() {
        assert_eq!(h("c-entry-content", ""), Hint::StrongContent);
        assert_eq!(h("StoryBodyCompanionColumn", ""), Hint::StrongContent);
        assert_eq!(h("site-nav main-menu", ""), Hint::Boiler);
        assert_eq!(h("", "comments"), Hint::Comments);
        assert_eq!(h("widget_recent_comments sidebar", ""), Hint::Boiler);
        assert_eq!(h("topAdSlot", ""), Hint::WeakBoiler);
        assert_eq!(h("elementor-widget-wrap", ""), Hint::WeakBoiler);
        assert_eq!(h("shadow heading", ""), Hint::None, "no `ad` inside words");
        assert_eq!(h("article-wrapper", ""), Hint::Content);
        // WordPress's post classes: the taxonomy is not furniture
        assert_eq!(
            h(
                "post-1481 post type-post status-publish hentry category-allgemein tag-grundeinkommen",
                "post-1481"
            ),
            Hint::Content
        );
        assert_eq!(h("widget tag-cloud", ""), Hint::Boiler);
        // … and a comment by a registered user is a comment, not an author box
        assert_eq!(
            h(
                "comment byuser comment-author-lemire bypostauthor even depth-2",
                ""
            ),
            Hint::Comments
        );
        assert_eq!(h("comment-author vcard", ""), Hint::Boiler);
        let itemprop = Attrs {
            itemprop: "articleBody",
            ..Default::default()
        };
        assert_eq!(hint(&itemprop), Hint::StrongContent);
    }
}
