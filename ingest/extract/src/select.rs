//! Choosing the article: score the elements that hold paragraphs, take the best one (and the
//! siblings that hold comparable text), then keep its text blocks except the page furniture
//! inside it and link lists.
//!
//! Scores: every paragraph-like block (enough characters, few of them link text, not inside
//! furniture) gives `1 + commas + min(chars/100, 3)` points to the element that contains it and
//! a decaying share to that element's ancestors; an element's score is weighted by how little
//! of its text is links and by what its attributes say (`itemprop=articleBody`, `entry-content`
//! up, `sidebar`, `comments` down). An element explicitly marked as the article body wins when
//! it holds a fair part of the best candidate's text.

use crate::ExtractorConfig;
use crate::script::{COMMAS, ends_colon, ends_sentence, ends_sentence_or_quote, words};
use crate::tags::Tag;
use crate::tree::{BOILER, COMMENTS, CONTENT, FURNITURE, HIDDEN, Page, STRONG_CONTENT, WEAK};

/// Flags that keep a block out of the article.
const OUT: u8 = FURNITURE | BOILER | HIDDEN | COMMENTS;

const NO_PARENT: u32 = u32::MAX;

/// Whether an `article` element is above `e`, at most four levels up.
fn article_above(page: &Page, mut e: u32) -> bool {
    for _ in 0..4 {
        e = page.els[e as usize].parent;
        if page.els[e as usize].tag == Tag::Article {
            return true;
        }
        if e == 0 {
            return false;
        }
    }
    false
}

fn parent(page: &Page, e: u32) -> u32 {
    if e == 0 {
        NO_PARENT
    } else {
        page.els[e as usize].parent
    }
}

/// Whether `e` is `root` or below it.
fn within(page: &Page, mut e: u32, root: u32) -> bool {
    loop {
        if e == root {
            return true;
        }
        if e == 0 {
            return false;
        }
        e = page.els[e as usize].parent;
    }
}

/// Flags of `e` and its ancestors up to the nearest one marked as the article body (which
/// overrides what lies above it).
fn flags_all(page: &Page, mut e: u32) -> u8 {
    let mut f = 0;
    loop {
        let own = page.els[e as usize].flags;
        f |= own;
        if e == 0 || own & STRONG_CONTENT != 0 {
            return f;
        }
        e = page.els[e as usize].parent;
    }
}

/// What selection decided about one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// In the article's text.
    Kept,
    /// Below an element marked as furniture, boilerplate or hidden (the outermost such
    /// element, index into [`Page::els`]).
    Furniture(u32),
    /// Not below the element(s) chosen as the article.
    Outside,
    /// A link list or a "read more" line inside the article.
    LinkList,
    /// A very short block dropped by `favor_precision`.
    Short,
    /// In the readers' comments, kept after the article (`include_comments`).
    Comment,
    /// Kept: around the best container, in the element the article was extended to.
    Added,
    /// A heading or a label whose text was dropped (a "Related" over a link list).
    Orphan,
    /// A copyright or licence notice that was all the text selection found: a page without
    /// an article (an index of links, an error page) gives no text rather than its footer.
    Notice,
}

/// The text of the article of `page`, blocks separated by newlines.
pub fn article(page: &mut Page, opts: &ExtractorConfig) -> String {
    let fates = select(page, opts).fates;
    let mut out = String::new();
    for comments in [false, true] {
        for (b, f) in page.blocks.iter().zip(&fates) {
            if (*f == Fate::Comment) == comments
                && matches!(f, Fate::Kept | Fate::Added | Fate::Comment)
            {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&b.text);
            }
        }
    }
    out
}

/// The outermost element from `e` up to (excluding) `root` (or up to the root of the page
/// when `root` is `None`) whose flags meet `mask`.
fn outermost_flagged(page: &Page, mut e: u32, root: Option<u32>, mask: u8) -> Option<u32> {
    let mut found = None;
    loop {
        if Some(e) == root {
            return found;
        }
        let el = &page.els[e as usize];
        if el.flags & mask != 0 {
            found = Some(e);
        }
        if e == 0 || (root.is_none() && el.flags & STRONG_CONTENT != 0) {
            return found;
        }
        e = el.parent;
    }
}

/// What selection decided.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The elements chosen as the article (the best one first).
    pub roots: Vec<u32>,
    /// The decision for every block, in [`Page::blocks`] order.
    pub fates: Vec<Fate>,
}

/// A link list or a "read more" line: mostly link text and not a sentence. A table row is
/// data with a linked name (a product, a person, a place beside its figures) unless nearly all
/// of it is links.
fn link_list(page: &Page, b: &crate::tree::Block) -> bool {
    let ld = b.link_chars as f32 / b.chars.max(1) as f32;
    if page.els[b.owner as usize].tag == Tag::Tr {
        return ld > 0.8;
    }
    let words = words(&b.text);
    let prose = words >= 12 && ends_sentence_or_quote(&b.text);
    ld > 0.5 && words < 40 && !(prose && ld < 0.8)
}

/// Whether block `b`, around the best container but not in it, is text the article goes on
/// with: not its headline (metadata, not text), not a label or a date (under four words
/// without a sentence's end).
fn added_text(page: &Page, b: &crate::tree::Block) -> bool {
    let tag = page.els[b.owner as usize].tag;
    if tag == Tag::H1 {
        return false;
    }
    let t = &b.text;
    // a copyright line or a dateline: as many digits as letters, or a © mark
    let digits = t.chars().filter(|c| c.is_ascii_digit()).count();
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    if t.contains(['©', 'ⓒ']) || t.to_lowercase().contains("copyright") || digits * 2 >= letters
    {
        return false;
    }
    let words = words(t);
    words >= 4 || (words >= 2 && (ends_sentence(t) || ends_colon(t)))
}

/// Whether block `b` is a reader's comment: below an element marked as comments and below
/// nothing else that is furniture (a comment form, a "recent comments" widget in a sidebar),
/// not a link list, and more than a name or a date.
fn comment_block(page: &Page, b: &crate::tree::Block) -> bool {
    let mut e = b.owner;
    let mut in_comments = false;
    loop {
        let f = page.els[e as usize].flags;
        if f & (FURNITURE | BOILER | HIDDEN) != 0 {
            return false;
        }
        in_comments |= f & COMMENTS != 0;
        if e == 0 {
            break;
        }
        e = page.els[e as usize].parent;
    }
    let words = words(&b.text);
    in_comments
        && !link_list(page, b)
        && !page.els[b.owner as usize].tag.is_heading()
        && words >= 3
        && !(words < 12 && digit_runs(&b.text) >= 3)
}

/// How many runs of digits `t` has: a comment's signature line ("Comment by Anna — 17.07,
/// 2011 @ 13:04", "Maria sagt: 3. März 2020 um 9:15") has a date and a time.
fn digit_runs(t: &str) -> usize {
    let mut runs = 0;
    let mut in_run = false;
    for c in t.chars() {
        let d = c.is_ascii_digit();
        if d && !in_run {
            runs += 1;
        }
        in_run = d;
    }
    runs
}

/// Selection's decisions for `page`.
pub fn select(page: &mut Page, opts: &ExtractorConfig) -> Selection {
    let n = page.els.len();
    // A furniture mark on an element that holds most of the page's paragraph text is wrong
    // (`<body class="has-sidebar">`, ASP.NET's page-wide `<form>`): drop it.
    let mut good = vec![0u32; n];
    let mut total = 0u32;
    for b in &page.blocks {
        if b.chars >= 25 && b.link_chars * 100 <= b.chars * 35 {
            total += b.chars;
            let mut e = b.owner;
            loop {
                good[e as usize] += b.chars;
                if e == 0 {
                    break;
                }
                e = page.els[e as usize].parent;
            }
        }
    }
    // Prose below each element: blocks that read as sentences, with few links.
    let mut prose = vec![0u32; n];
    for b in &page.blocks {
        if b.chars >= 60 && b.link_chars * 100 <= b.chars * 20 && words(&b.text) >= 8 {
            let mut e = b.owner;
            loop {
                prose[e as usize] += b.chars;
                if e == 0 {
                    break;
                }
                e = page.els[e as usize].parent;
            }
        }
    }
    // A weak furniture word is furniture unless the page uses it as layout: on the containers
    // of its prose (`elementor-widget` around every block of a page built with Elementor,
    // `Section--Ads` on every section of a test report). One prose box with such a word (an
    // ad with a teaser paragraph, a header with a standfirst) does not make it layout.
    // (a word is layout when at least two elements holding prose use it)
    let (mut once, mut layout) = (0u16, 0u16);
    for (el, p) in page.els.iter().zip(&prose) {
        if *p >= 150 {
            layout |= once & el.weak;
            once |= el.weak;
        }
    }

    for (i, el) in page.els.iter_mut().enumerate() {
        if el.flags & WEAK != 0 {
            el.flags &= !WEAK;
            if el.weak & layout == 0 {
                el.flags |= BOILER;
            }
        }
        if total > 0 && good[i] * 2 >= total && el.tag != Tag::Head {
            el.flags &= !(BOILER | FURNITURE | COMMENTS);
        }
    }
    // Per block: furniture anywhere above it.
    let furn: Vec<bool> = page
        .blocks
        .iter()
        .map(|b| flags_all(page, b.owner) & OUT != 0)
        .collect();
    // Text and link characters per element (blocks counted in every ancestor), and the same
    // for the blocks outside furniture (`clean`: what extending the article would add).
    let mut clean = vec![(0u32, 0u32); n];
    for (b, &f) in page.blocks.iter().zip(&furn) {
        let mut e = b.owner;
        loop {
            let el = &mut page.els[e as usize];
            el.chars += b.chars;
            el.link_chars += b.link_chars;
            if !f {
                clean[e as usize].0 += b.chars;
                clean[e as usize].1 += b.link_chars;
            }
            if e == 0 {
                break;
            }
            e = el.parent;
        }
    }
    // Paragraph points.
    for (b, &f) in page.blocks.iter().zip(&furn) {
        if f || b.chars < 25 {
            continue;
        }
        let ld = b.link_chars as f32 / b.chars as f32;
        if ld > 0.6 {
            continue;
        }
        let commas = b.text.matches(COMMAS).count() as f32;
        // encyclopedic paragraphs link a lot: their points shrink with it, not vanish
        let pts = (1.0 + commas.min(10.0) + (b.chars as f32 / 100.0).min(3.0)) * (1.0 - ld);
        // The block's owner is usually the paragraph; its container gets the points.
        let own = &page.els[b.owner as usize];
        let mut e = if matches!(own.tag, Tag::P | Tag::Li | Tag::Pre | Tag::Blockquote)
            || own.tag.is_heading()
        {
            own.parent
        } else {
            b.owner
        };
        let mut level = 0.0f32;
        while e != NO_PARENT {
            page.els[e as usize].score += pts / (1.0 + level);
            level += 1.0;
            e = parent(page, e);
        }
    }
    // Weigh the scores.
    let mut best = 0u32;
    let mut best_score = f32::MIN;
    for i in 0..n {
        let el = &page.els[i];
        if el.chars == 0 {
            continue;
        }
        let ld = el.link_chars as f32 / el.chars as f32;
        let mut s = el.score * (1.0 - ld);
        if el.flags & STRONG_CONTENT != 0 {
            s *= 1.6;
        } else if el.flags & CONTENT != 0 {
            s *= 1.15;
        }
        if el.flags & OUT != 0 {
            s *= 0.2;
        }
        page.els[i].score = s;
        if s > best_score {
            best_score = s;
            best = i as u32;
        }
    }
    // An explicitly marked article body holding a fair share of the best's text wins.
    let best_chars = page.els[best as usize].chars.max(1);
    let mut marked: Option<(u32, u32)> = None;
    for (i, el) in page.els.iter().enumerate() {
        if el.flags & STRONG_CONTENT != 0
            && el.chars * 10 >= best_chars * 4
            && flags_all(page, i as u32) & (BOILER | HIDDEN | COMMENTS) == 0
            && marked.is_none_or(|m| el.chars > m.1)
        {
            marked = Some((i as u32, el.chars));
        }
    }
    if let Some((m, _)) = marked
        && !within(page, best, m)
    {
        best = m;
    }
    // Siblings of the best that hold comparable paragraph text join it.
    let mut roots = vec![best];
    let p = parent(page, best);
    if p != NO_PARENT && best != 0 {
        let top = page.els[best as usize].score;
        for (i, el) in page.els.iter().enumerate() {
            if el.parent == p
                && i as u32 != best
                && i != 0
                && el.flags & OUT == 0
                && el.score >= (0.25 * top).max(3.0)
            {
                roots.push(i as u32);
            }
        }
    }
    // The article often begins before the best container (a lead or standfirst in a box of
    // its own, an intro above the body) or goes on after it (a sign-off, a second part): climb
    // to an ancestor while what it adds is text rather than links, and not more than the
    // article itself.
    let core: u32 = roots.iter().map(|&r| page.els[r as usize].chars).sum();
    let core_roots = roots.clone();
    let mut top = best;
    while top != 0 {
        // The article's own element is its boundary: climb to it, not past it. An element
        // marked as the article body is one too, unless an `article` element holds it closely
        // (then its lead or intro sits beside it, inside the article).
        let boundary = matches!(page.els[top as usize].tag, Tag::Article | Tag::Main)
            || (page.els[top as usize].flags & STRONG_CONTENT != 0 && !article_above(page, top));
        let a = parent(page, top);
        if a == NO_PARENT || a == 0 {
            break;
        }
        let el = &page.els[a as usize];
        if matches!(el.tag, Tag::Body | Tag::Html) || el.flags & OUT != 0 {
            break;
        }
        // what `a` holds outside furniture and outside the current roots (all below `a`)
        let inner = roots.iter().fold((0u32, 0u32), |s, &r| {
            (s.0 + clean[r as usize].0, s.1 + clean[r as usize].1)
        });
        let chars = clean[a as usize].0.saturating_sub(inner.0);
        let links = clean[a as usize].1.saturating_sub(inner.1);
        // at most 30 % links, and no more than 2.5 times the article's text (a product page's
        // description is often the smaller part beside its lists and tables)
        if boundary || (chars > 0 && (links * 10 > chars * 3 || chars * 2 > core * 5)) {
            break;
        }
        roots = vec![a];
        top = a;
    }
    // Decide every block.
    let mut fates = Vec::with_capacity(page.blocks.len());
    for b in &page.blocks {
        let Some(&root) = roots.iter().find(|&&r| within(page, b.owner, r)) else {
            fates.push(match outermost_flagged(page, b.owner, None, OUT) {
                Some(_) if opts.include_comments && comment_block(page, b) => Fate::Comment,
                Some(e) => Fate::Furniture(e),
                None => Fate::Outside,
            });
            continue;
        };
        if let Some(e) = outermost_flagged(page, b.owner, Some(root), OUT) {
            fates.push(if opts.include_comments && comment_block(page, b) {
                Fate::Comment
            } else {
                Fate::Furniture(e)
            });
            continue;
        }
        let added = root != core_roots[0] && !core_roots.iter().any(|&r| within(page, b.owner, r));
        if added && !added_text(page, b) {
            fates.push(Fate::Outside);
            continue;
        }
        if link_list(page, b) {
            fates.push(Fate::LinkList); // a link list or a "read more" line
            continue;
        }
        if opts.favor_precision
            && words(&b.text) < 4
            && !page.els[b.owner as usize].tag.is_heading()
        {
            fates.push(Fate::Short);
            continue;
        }
        fates.push(if added { Fate::Added } else { Fate::Kept });
    }
    // A page whose prose is spread over several boxes (an intro box, a body, a second part,
    // a page built of sections): when the article keeps less than half of the prose outside
    // furniture, the other prose blocks join it (and the label or heading just before each).
    let prose_block = |b: &crate::tree::Block| {
        b.chars >= 60 && b.link_chars * 100 <= b.chars * 20 && words(&b.text) >= 8
    };
    let (mut page_prose, mut kept_prose_chars) = (0u32, 0u32);
    for (b, f) in page.blocks.iter().zip(&fates) {
        if prose_block(b) && !matches!(f, Fate::Furniture(_) | Fate::Comment) {
            page_prose += b.chars;
            if matches!(f, Fate::Kept | Fate::Added) {
                kept_prose_chars += b.chars;
            }
        }
    }
    if kept_prose_chars * 2 < page_prose {
        for (f, b) in fates.iter_mut().zip(&page.blocks) {
            if *f == Fate::Outside && prose_block(b) {
                *f = Fate::Added;
            }
        }
    }
    // Sentences just before or after the article's text join it, one by one while they go
    // on (the neighbours of good text are text, as jusText judges a block by its context): a
    // lead or an intro in a box of its own, an editor's note, a second article of the page.
    // A furniture block, a link list, a label or a line with more than 30 % links stops it.
    let sentence =
        |b: &crate::tree::Block| prose_block(b) || (words(&b.text) >= 4 && ends_sentence(&b.text));
    let joins = |i: usize, fates: &[Fate]| {
        let b = &page.blocks[i];
        fates[i] == Fate::Outside
            && b.link_chars * 10 <= b.chars * 3
            && sentence(b)
            && added_text(page, b)
    };
    let kept = |f: &Fate| matches!(f, Fate::Kept | Fate::Added);
    if let (Some(first), Some(last)) = (fates.iter().position(kept), fates.iter().rposition(kept)) {
        let mut i = first;
        while i > 0 && joins(i - 1, &fates) {
            i -= 1;
            fates[i] = Fate::Added;
        }
        let mut j = last;
        while j + 1 < fates.len() && joins(j + 1, &fates) {
            j += 1;
            fates[j] = Fate::Added;
        }
    }
    // A link standing alone between paragraphs of the article (a petition's address, an
    // e-mail to write to, a linked question) is part of it; a run of links is a list.
    let kept_prose = |i: usize, fates: &[Fate]| {
        matches!(fates[i], Fate::Kept | Fate::Added)
            && !link_list(page, &page.blocks[i])
            && page.blocks[i].chars >= 25
    };
    // So is a link that spells out its address after the article's text ("sign the petition:
    // http://…", "write to: name@example.org"): someone wrote the address for the reader.
    let spelled = |b: &crate::tree::Block| {
        let t = b.text.trim();
        !t.contains(char::is_whitespace)
            && (t.starts_with("http://")
                || t.starts_with("https://")
                || t.starts_with("www.")
                || (t.contains('@') && t.contains('.')))
    };
    for i in 1..fates.len() {
        if fates[i] == Fate::LinkList
            && kept_prose(i - 1, &fates)
            && (spelled(&page.blocks[i]) || (i + 1 < fates.len() && kept_prose(i + 1, &fates)))
        {
            fates[i] = Fate::Kept;
        }
    }
    // A heading or a label over a link list is not text ("Related Coverage", "Auch
    // interessant", "Das Thema könnte dich auch interessieren:" over the links selection
    // dropped, or over a box of links marked as furniture). Other furniture after it (a
    // caption, a share bar's icons) does not decide; the next other block does.
    let mut next: Option<Fate> = None; // the next block's fate, furniture skipped
    for i in (0..fates.len()).rev() {
        let f = fates[i];
        let b = &page.blocks[i];
        if matches!(f, Fate::Kept | Fate::Added)
            && label(page, b)
            && matches!(next, Some(Fate::LinkList | Fate::Orphan))
        {
            fates[i] = Fate::Orphan;
            next = Some(Fate::Orphan);
            continue;
        }
        match f {
            // a box of links marked as furniture (a "related" list) is still a link list
            // under the label; other furniture (a caption, a share bar) does not decide
            Fate::Furniture(_) if link_list(page, b) => next = Some(Fate::LinkList),
            Fate::Furniture(_) => {}
            _ => next = Some(f),
        }
    }
    // A page whose only text is its footer's notice ("Copyright 2017-2023 example.com All
    // Rights Reserved.", an index page of links whose list selection dropped) has no article:
    // its text is empty (the build counts the page as `empty_text`), not the notice.
    let kept: Vec<usize> = (0..fates.len())
        .filter(|&i| matches!(fates[i], Fate::Kept | Fate::Added))
        .collect();
    let mut worded = kept
        .iter()
        .map(|&i| &page.blocks[i].text)
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .peekable();
    if worded.peek().is_some() && worded.all(|t| notice(t)) {
        for i in kept {
            fates[i] = Fate::Notice;
        }
    }
    Selection { roots, fates }
}

/// Whether `t` is a copyright or a site's licence notice: a line under 30 words with a ©, the
/// word "copyright" with a year, the "all rights reserved" of twelve languages (English,
/// German, French, Spanish, Italian, Portuguese, Dutch, Polish, Russian, Chinese in both
/// scripts, and Japanese's and Korean's "no reproduction without permission"), or China's ICP
/// licence number that every Chinese site's footer carries. A short text about copyright
/// ("The EU's copyright reform passed.") is not one.
fn notice(t: &str) -> bool {
    const RESERVED: [&str; 16] = [
        "all rights reserved",
        "alle rechte vorbehalten",
        "tous droits réservés",
        "todos los derechos reservados",
        "tutti i diritti riservati",
        "todos os direitos reservados",
        "alle rechten voorbehouden",
        "wszelkie prawa zastrzeżone",
        "все права защищены",
        "版权所有",
        "版權所有",
        "無断転載",
        "무단 전재",
        "무단전재",
        "icp备",
        "icp證",
    ];
    if words(t) >= 30 {
        return false;
    }
    if t.contains(['©', 'ⓒ']) {
        return true;
    }
    let lower = t.to_lowercase();
    let year = lower
        .as_bytes()
        .windows(4)
        .any(|w| w.iter().all(u8::is_ascii_digit) && (w[..2] == *b"19" || w[..2] == *b"20"));
    RESERVED.iter().any(|m| lower.contains(m)) || (lower.contains("copyright") && year)
}

/// A heading, a line too short to be a sentence (under six words, not ending like one), or a
/// line under twelve words that ends with a colon, and mostly not link text: a label for what
/// follows it.
fn label(page: &Page, b: &crate::tree::Block) -> bool {
    let words = words(&b.text);
    // a link is not a label (a kept one is the text's own: an address, a lone link)
    b.link_chars * 2 <= b.chars
        && ((words < 12 && ends_colon(&b.text))
            || (!ends_sentence_or_quote(&b.text)
                && (page.els[b.owner as usize].tag.is_heading() || words < 6)))
}

#[cfg(test)]
mod tests {
    use crate::{ExtractorConfig, extract};

    const PARA: &str = "<p>A paragraph of the story that is long enough to count, with commas, \
                        clauses, and a full stop at its end.</p>";

    #[test]
    fn a_label_over_a_dropped_link_list_goes_with_it() {
        let html = format!(
            "<html><body><article>{PARA}{PARA}<h2>Das ist ein Zwischentitel</h2>{PARA}\
             <p>Related Coverage</p><figure><figcaption>Photo</figcaption></figure>\
             <ul><li><a href=/a>First related story</a></li><li><a href=/b>Second one</a></li>\
             </ul>{PARA}<p>Also: a label over text</p>{PARA}\
             <p>You may also be interested in these stories:</p>\
             <div class=related><a href=/c>Third story</a> <a href=/d>Fourth story</a></div>\
             {PARA}</article></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(!t.contains("Related Coverage"), "{t}");
        assert!(!t.contains("First related story"), "{t}");
        // a label over a box of links marked as furniture
        assert!(!t.contains("You may also be interested"), "{t}");
        // a heading or label over text stays
        assert!(t.contains("Das ist ein Zwischentitel"), "{t}");
        assert!(t.contains("Also: a label over text"), "{t}");
    }

    #[test]
    fn sentences_next_to_the_article_join_it_until_something_else_comes() {
        let body = PARA.repeat(4);
        let html = format!(
            "<html><body><div class=top><a href=/>Home</a> <a href=/x>News</a></div>\
             <div class=box><p>The intro sits in a box of its own, before the body.</p>\
             <p><a href=/t>Teaser one</a> and <a href=/u>teaser two</a></p></div>\
             <div class=intro><p>A lead in its own box, right before the story starts.</p></div>\
             <div class=body>{body}</div>\
             <div class=note><p>This post first appeared on another site.</p></div>\
             <div class=after><p>Short label</p><p>A sentence after the label, not joined.</p>\
             </div></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(t.contains("A lead in its own box"), "{t}");
        assert!(t.contains("This post first appeared"), "{t}");
        // the link-heavy line stops the walk backwards; the label stops it forwards
        assert!(!t.contains("The intro sits"), "{t}");
        assert!(!t.contains("not joined"), "{t}");
    }

    #[test]
    fn a_table_row_with_a_linked_name_is_data_not_a_link_list() {
        let html = format!(
            "<html><body><article>{PARA}{PARA}<table>\
             <tr><td><a href=/p/1>Maxi-Cosi Cabriofix</a></td><td>310 €</td><td>2,5</td></tr>\
             <tr><td><a href=/p/2>Jané Koos i-Size</a></td><td>370 €</td><td>4,9</td></tr>\
             <tr><td><a href=/a>Home</a></td><td><a href=/b>Tests</a></td></tr>\
             <tr><td><a href=/c>Contact</a></td><td><a href=/d>Imprint</a></td></tr>\
             </table>{PARA}</article></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(t.contains("Jané Koos i-Size 370 € 4,9"), "{t}");
        // (a lone link row between text would be kept as the text's own link)
        assert!(
            !t.contains("Home Tests") && !t.contains("Contact Imprint"),
            "{t}"
        );
    }

    #[test]
    fn a_comments_signature_line_is_not_a_comment() {
        assert_eq!(
            super::digit_runs("Comment by Anna — 17.07, 2011 @ 13:04"),
            5
        );
        let html = format!(
            "<html><body><article>{PARA}{PARA}</article><ol id=comments>\
             <li class=comment><p>I read this twice and I still disagree with the second part.</p>\
             <p><cite>Comment by <a href=/m>Mirko Lange</a></cite> — 17.07, 2011 @ 13:04</p></li>\
             </ol></body></html>"
        );
        let opts = ExtractorConfig {
            include_comments: true,
            ..Default::default()
        };
        let t = extract(&html, &opts).text;
        assert!(t.contains("I read this twice"), "{t}");
        assert!(!t.contains("Comment by"), "{t}");
    }

    #[test]
    fn a_link_that_spells_out_its_address_after_the_text_is_kept() {
        let html = format!(
            "<html><body><div id=main>{PARA}{PARA}<p>Sign this petition, please:</p>\
             <p><a href=http://www.example.org/p/1>http://www.example.org/p/1</a></p>\
             <div class=nav><a href=/prev>&larr; Previous post</a></div></div></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(t.contains("http://www.example.org/p/1"), "{t}");
        assert!(!t.contains("Previous post"), "{t}");
    }
    #[test]
    fn text_without_spaces_or_latin_full_stops_is_judged_as_text() {
        // Chinese: a paragraph is one run between spaces; the lead in a box of its own joins
        let zh = "<p>人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。</p>";
        let html = format!(
            "<html><body><div class=top><a href=/>首页</a> <a href=/x>新闻</a></div>\
             <div class=intro><p>这是一段单独放在框里的导语，位于正文之前。</p></div>\
             <div class=body>{}</div></body></html>",
            zh.repeat(4)
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(t.contains("这是一段单独放在框里的导语"), "{t}");
        assert!(!t.contains("首页"), "{t}");
        // Hindi: a short sentence ending in a danda before a list of links is not its label
        let html = format!(
            "<html><body><article>{PARA}{PARA}<p>सभी मनुष्य स्वतंत्र पैदा हुए।</p>\
             <ul><li><a href=/a>पहला लेख</a></li><li><a href=/b>दूसरा लेख</a></li></ul>\
             {PARA}</article></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(t.contains("सभी मनुष्य स्वतंत्र पैदा हुए।"), "{t}");
        // `favor_precision` drops blocks under four words, and a Chinese sentence is not one word
        let html = format!(
            "<html><body><article>{}<p>人人有权享有生命、自由和人身安全。</p></article></body></html>",
            zh.repeat(3)
        );
        let opts = ExtractorConfig {
            favor_precision: true,
            ..Default::default()
        };
        let t = extract(&html, &opts).text;
        assert!(t.contains("人人有权享有生命"), "{t}");
    }
    #[test]
    fn a_page_whose_only_text_is_its_notice_has_no_text() {
        // an index page: its list of links is dropped, its footer was all that was left
        let html = "<html><body><div><ul><li><a href=/1>2020-08-04 First post title</a></li>\
             <li><a href=/2>2020-08-03 Second post title</a></li></ul></div>\
             <div>Copyright 2017-2023 http://www.example.com All Rights Reserved.</div>\
             </body></html>";
        assert_eq!(extract(html, &ExtractorConfig::default()).text, "");
        let html =
            "<html><body><p>\u{a0}</p><div>版权所有: 一览英才网 粤ICP备号</div></body></html>";
        assert_eq!(extract(html, &ExtractorConfig::default()).text, "");
        // a short text about copyright is not a notice
        let html = "<html><body><p>The copyright reform passed the parliament today.</p>\
             </body></html>";
        let t = extract(html, &ExtractorConfig::default()).text;
        assert_eq!(t, "The copyright reform passed the parliament today.");
        // an article keeps its own copyright line
        let html = format!(
            "<html><body><article>{PARA}{PARA}<p>© 2019 The Associated Press. All rights \
             reserved.</p></article></body></html>"
        );
        let t = extract(&html, &ExtractorConfig::default()).text;
        assert!(
            t.contains("A paragraph of the story") && t.contains("© 2019"),
            "{t}"
        );
    }
}
