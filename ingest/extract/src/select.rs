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
use crate::tags::Tag;
use crate::tree::{BOILER, CONTENT, FURNITURE, HIDDEN, Page, STRONG_CONTENT};

const NO_PARENT: u32 = u32::MAX;

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

/// Flags of the elements from `e` up to (excluding) `root`.
fn flags_below(page: &Page, mut e: u32, root: u32) -> u8 {
    let mut f = 0;
    while e != root && e != 0 {
        f |= page.els[e as usize].flags;
        e = page.els[e as usize].parent;
    }
    f
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

/// The text of the article of `page`, blocks separated by newlines.
pub fn article(page: &mut Page, opts: &ExtractorConfig) -> String {
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
    for (el, &g) in page.els.iter_mut().zip(&good) {
        if total > 0 && g * 2 >= total && el.tag != Tag::Head {
            el.flags &= !(BOILER | FURNITURE);
        }
    }
    // Per block: furniture anywhere above it.
    let furn: Vec<bool> = page
        .blocks
        .iter()
        .map(|b| flags_all(page, b.owner) & (FURNITURE | BOILER | HIDDEN) != 0)
        .collect();
    // Text and link characters per element (blocks counted in every ancestor).
    for b in &page.blocks {
        let mut e = b.owner;
        loop {
            let el = &mut page.els[e as usize];
            el.chars += b.chars;
            el.link_chars += b.link_chars;
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
        let commas = b.text.matches([',', '，', '、']).count() as f32;
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
        if el.flags & (BOILER | FURNITURE | HIDDEN) != 0 {
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
            && flags_all(page, i as u32) & (BOILER | HIDDEN) == 0
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
                && el.flags & (BOILER | FURNITURE | HIDDEN) == 0
                && el.score >= (0.25 * top).max(3.0)
            {
                roots.push(i as u32);
            }
        }
    }
    // Collect the text.
    let mut out = String::new();
    for b in &page.blocks {
        let Some(&root) = roots.iter().find(|&&r| within(page, b.owner, r)) else {
            continue;
        };
        if flags_below(page, b.owner, root) & (FURNITURE | BOILER | HIDDEN) != 0 {
            continue;
        }
        let ld = b.link_chars as f32 / b.chars.max(1) as f32;
        let words = b.text.split_whitespace().count();
        let prose = words >= 12 && b.text.ends_with(['.', '!', '?', '。', '」', '"', '”', ')']);
        if ld > 0.5 && words < 40 && !(prose && ld < 0.8) {
            continue; // a link list or a "read more" line
        }
        if opts.favor_precision && words < 4 && !page.els[b.owner as usize].tag.is_heading() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&b.text);
    }
    out
}
