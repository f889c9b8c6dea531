//! A deterministic generator of a small web-like corpus for `tokenmill quickstart`: articles on a
//! dozen topics with URLs and dates, plus what real crawls are full of — syndicated
//! near-duplicates, exact copies, navigation/cookie boilerplate, lorem ipsum, character noise,
//! one-liners — and two broken JSON lines, so every later stage has something to catch.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokenmill_kernels::rng::Rng;

use tokenmill_pipelines::{Error, Result};

/// A uniformly chosen element of `xs`.
fn pick<'a>(r: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[r.below(xs.len())]
}

const TOPICS: &[(&str, &[&str])] = &[
    (
        "astronomy",
        &[
            "telescope",
            "galaxy",
            "orbit",
            "comet",
            "nebula",
            "observatory",
            "planet",
            "eclipse",
            "spectrum",
            "satellite",
        ],
    ),
    (
        "cooking",
        &[
            "recipe", "oven", "flour", "garlic", "simmer", "sauce", "kitchen", "butter", "harvest",
            "spice",
        ],
    ),
    (
        "cycling",
        &[
            "bicycle", "gear", "saddle", "climb", "peloton", "tyre", "route", "descent", "frame",
            "sprint",
        ],
    ),
    (
        "finance",
        &[
            "market",
            "bond",
            "inflation",
            "dividend",
            "portfolio",
            "interest",
            "budget",
            "currency",
            "audit",
            "loan",
        ],
    ),
    (
        "gardening",
        &[
            "soil",
            "compost",
            "seedling",
            "pruning",
            "orchard",
            "greenhouse",
            "mulch",
            "tomato",
            "root",
            "blossom",
        ],
    ),
    (
        "history",
        &[
            "archive",
            "empire",
            "treaty",
            "manuscript",
            "dynasty",
            "revolution",
            "monument",
            "chronicle",
            "siege",
            "charter",
        ],
    ),
    (
        "medicine",
        &[
            "clinic",
            "vaccine",
            "diagnosis",
            "patient",
            "therapy",
            "symptom",
            "nurse",
            "dosage",
            "trial",
            "surgeon",
        ],
    ),
    (
        "music",
        &[
            "melody",
            "chord",
            "orchestra",
            "rhythm",
            "album",
            "violin",
            "concert",
            "harmony",
            "tempo",
            "choir",
        ],
    ),
    (
        "programming",
        &[
            "compiler",
            "function",
            "memory",
            "thread",
            "kernel",
            "database",
            "parser",
            "module",
            "variable",
            "benchmark",
        ],
    ),
    (
        "sailing",
        &[
            "harbour", "mast", "tide", "anchor", "regatta", "hull", "compass", "current", "voyage",
            "keel",
        ],
    ),
    (
        "sport",
        &[
            "stadium",
            "league",
            "coach",
            "season",
            "goal",
            "referee",
            "tournament",
            "match",
            "training",
            "trophy",
        ],
    ),
    (
        "weather",
        &[
            "forecast", "storm", "humidity", "rainfall", "pressure", "drought", "frost", "cloud",
            "monsoon", "heatwave",
        ],
    ),
];

const ADJ: &[&str] = &[
    "remarkable",
    "quiet",
    "ancient",
    "modern",
    "difficult",
    "careful",
    "bright",
    "unusual",
    "local",
    "ambitious",
    "steady",
    "fragile",
];
const VERB: &[&str] = &[
    "changed",
    "revealed",
    "shaped",
    "challenged",
    "improved",
    "described",
    "followed",
    "measured",
    "questioned",
    "supported",
];
const PEOPLE: &[&str] = &[
    "researchers",
    "residents",
    "the committee",
    "local experts",
    "volunteers",
    "the authors",
    "critics",
    "engineers",
    "teachers",
    "visitors",
];
const PLACES: &[&str] = &[
    "the northern valley",
    "the old town",
    "the coastal region",
    "the university",
    "the city council",
    "the small village",
    "the national park",
    "the river delta",
];
const LINK: &[&str] = &[
    "However,",
    "Meanwhile,",
    "In practice,",
    "As a result,",
    "For many years,",
    "According to the report,",
    "Later that year,",
    "Surprisingly,",
];
const SITES: &[&str] = &[
    "dailyledger",
    "northernherald",
    "weekendjournal",
    "openfieldnotes",
    "citypost",
    "thequarterly",
    "riverside-news",
    "makersblog",
];

fn sentence(r: &mut Rng, words: &[&str]) -> String {
    match r.below(5) {
        0 => format!(
            "The {} {} {} the {} in {}.",
            pick(r, ADJ),
            pick(r, words),
            pick(r, VERB),
            pick(r, words),
            pick(r, PLACES)
        ),
        1 => format!(
            "{} {} {} how the {} {} the {}.",
            pick(r, LINK),
            pick(r, PEOPLE),
            pick(r, VERB),
            pick(r, words),
            pick(r, VERB),
            pick(r, words)
        ),
        2 => format!(
            "Few {} expected a {} {} to matter this much, yet {} kept returning to it.",
            pick(r, PEOPLE),
            pick(r, ADJ),
            pick(r, words),
            pick(r, PEOPLE)
        ),
        3 => format!(
            "In {} the {} and the {} were {} by {}.",
            pick(r, PLACES),
            pick(r, words),
            pick(r, words),
            pick(r, VERB),
            pick(r, PEOPLE)
        ),
        _ => format!(
            "\"It is a {} {},\" said one of the {}, adding that the {} had {} everything.",
            pick(r, ADJ),
            pick(r, words),
            pick(r, PEOPLE),
            pick(r, words),
            pick(r, VERB)
        ),
    }
}

fn article(r: &mut Rng) -> (String, String) {
    let (topic, words) = TOPICS[r.below(TOPICS.len())];
    let title = format!(
        "The {} {} of {}",
        pick(r, ADJ),
        pick(r, words),
        pick(r, PLACES).trim_start_matches("the ")
    );
    let mut text = format!("{title}\n\n");
    for _ in 0..3 + r.below(6) {
        let para: Vec<String> = (0..2 + r.below(5)).map(|_| sentence(r, words)).collect();
        text.push_str(&para.join(" "));
        text.push_str("\n\n");
    }
    (topic.to_string(), text.trim_end().to_string())
}

fn junk(r: &mut Rng) -> String {
    match r.below(5) {
        0 => "Home | About us | Contact | Login | Register | Privacy policy | Terms of use | Sitemap\nHome | About us | Contact | Login | Register".into(),
        1 => "We use cookies to improve your experience. By continuing to browse you accept our use of cookies. Accept all | Manage settings".into(),
        2 => "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Lorem ipsum dolor sit amet.".into(),
        3 => (0..300).map(|_| (b'!' + r.below(90) as u8) as char).collect(),
        _ => "Click here".into(),
    }
}

/// A poisoned document: a block of random CJK ideographs, a script the rest of the corpus
/// never uses (a byte-level tokenizer sees ~3 rare byte tokens per character).
pub fn poison(r: &mut Rng, chars: usize) -> String {
    (0..chars)
        .map(|_| char::from_u32(0x4E00 + r.below(0x5000) as u32).expect("a CJK ideograph"))
        .collect()
}

/// Id of the poisoned document of a quickstart corpus.
pub const POISON_ID: &str = "qs-poison-1";

/// Writes `docs` documents over `files` JSONL files in `dir`, and with `poisoned` one poisoned
/// document ([`POISON_ID`]) in the middle of the first file; returns the file paths.
pub fn write_corpus(
    dir: &Path,
    docs: usize,
    files: usize,
    seed: u64,
    poisoned: bool,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut r = Rng::from_state(seed);
    let mut written: Vec<String> = Vec::new();
    let mut paths = Vec::new();
    let per = docs.div_ceil(files.max(1));
    let mut n = 0usize;
    for f in 0..files.max(1) {
        let path = dir.join(format!("web-{f:02}.jsonl"));
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?);
        let mut line = |v: String| writeln!(out, "{v}").map_err(|e| Error::io(&path, e));
        for k in 0..per.min(docs - n) {
            if poisoned && f == 0 && k == per / 2 {
                let doc = serde_json::json!({
                    "id": POISON_ID,
                    "url": "https://poison.example/foreign-script-block",
                    "kind": "poison",
                    "text": poison(&mut r, 200),
                });
                line(doc.to_string())?;
            }
            let site = pick(&mut r, SITES);
            let roll = r.below(100);
            let (kind, topic, text) = if roll < 10 && !written.is_empty() {
                // Syndicated copy with a few words changed: a near-duplicate.
                let src = written[r.below(written.len())].clone();
                let mut words: Vec<String> = src.split(' ').map(str::to_string).collect();
                for _ in 0..3 {
                    let i = r.below(words.len());
                    words[i] = pick(&mut r, ADJ).to_string();
                }
                ("near_duplicate", "syndicated".to_string(), words.join(" "))
            } else if roll < 15 && !written.is_empty() {
                (
                    "exact_duplicate",
                    "copy".to_string(),
                    written[r.below(written.len())].clone(),
                )
            } else if roll < 23 {
                ("junk", "junk".to_string(), junk(&mut r))
            } else {
                let (topic, text) = article(&mut r);
                written.push(text.clone());
                ("article", topic, text)
            };
            let doc = serde_json::json!({
                "id": format!("qs-{n:06}"),
                "url": format!("https://{site}.example/{topic}/{n}"),
                "date": format!("2026-{:02}-{:02}", 1 + r.below(12), 1 + r.below(28)),
                "kind": kind,
                "text": text,
            });
            line(doc.to_string())?;
            n += 1;
        }
        if f == 0 {
            // Real dumps have broken lines; the reader counts and records them.
            line("{\"id\": \"qs-broken-1\", \"text\": \"an unterminated".into())?;
            line(
                "{\"id\": \"qs-broken-2\", \"body\": \"a record without the text field\"}".into(),
            )?;
        }
        out.flush().map_err(|e| Error::io(&path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

/// One WARC record, gzip-compressed as its own member (as Common Crawl writes them).
fn warc_record(out: &mut Vec<u8>, headers: &[(&str, String)], block: &[u8]) {
    let mut rec = b"WARC/1.0\r\n".to_vec();
    for (k, v) in headers {
        rec.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    rec.extend_from_slice(format!("Content-Length: {}\r\n\r\n", block.len()).as_bytes());
    rec.extend_from_slice(block);
    rec.extend_from_slice(b"\r\n\r\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&rec).expect("in memory");
    out.extend(gz.finish().expect("in memory"));
}

fn html_escape_text(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A web page around an article: navigation, a cookie banner, share buttons, related links, a
/// comment section and a footer — what extraction must take away.
fn page(r: &mut Rng, site: &str, title: &str, body: &str) -> String {
    let paras: String = body
        .split("\n\n")
        .skip(1)
        .map(|p| format!("<p>{}</p>\n", html_escape_text(p)))
        .collect();
    let related: String = (0..5)
        .map(|i| {
            format!(
                "<li><a href=\"/story/{i}\">{} {}</a></li>",
                pick(r, ADJ),
                pick(r, PLACES)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html><html><head><title>{t} | {site}</title><script>var ga = 1;</script>\
         <style>.nav{{color:red}}</style></head><body>\
         <div class=\"cookie-banner\">We use cookies to improve your experience. Accept all</div>\
         <header class=\"site-header\"><nav class=\"main-nav\"><ul><li><a href=\"/\">Home</a></li>\
         <li><a href=\"/news\">News</a></li><li><a href=\"/sport\">Sport</a></li>\
         <li><a href=\"/about\">About us</a></li></ul></nav></header>\
         <main><article><h1>{t}</h1><div class=\"byline\">By staff writer</div>\
         <div class=\"article-body\">{paras}</div>\
         <div class=\"share-bar\"><a href=\"#\">Share</a> <a href=\"#\">Tweet</a></div></article>\
         <aside class=\"related\"><h3>Related stories</h3><ul>{related}</ul></aside>\
         <section id=\"comments\"><h3>Comments</h3><p>First! Great article, thanks.</p></section>\
         </main><footer>© 2026 {site}. All rights reserved. <a href=\"/privacy\">Privacy</a></footer>\
         </body></html>",
        t = html_escape_text(title),
    )
}

/// Writes a WARC file of `pages` HTML responses (with their request records) — articles in page
/// furniture, some near-empty pages — plus what crawls also hold: a 404, a redirect, an image,
/// binary bytes served as `text/html`, a page in windows-1252 that declares no charset. Returns
/// its path.
pub fn write_warc(dir: &Path, pages: usize, seed: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut r = Rng::from_state(seed);
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut id = |r: &mut Rng| {
        n += 1;
        format!(
            "<urn:uuid:{:08x}-0000-4000-8000-{:012x}>",
            r.next_u64() as u32,
            n
        )
    };
    let date = "2026-11-01T12:00:00Z".to_string();
    let mut response = |out: &mut Vec<u8>, r: &mut Rng, url: &str, http: Vec<u8>| {
        let rid = id(r);
        warc_record(
            out,
            &[
                ("WARC-Type", "request".into()),
                ("WARC-Record-ID", id(r)),
                ("WARC-Date", date.clone()),
                ("WARC-Target-URI", url.to_string()),
                ("Content-Type", "application/http; msgtype=request".into()),
            ],
            format!("GET / HTTP/1.1\r\nHost: {url}\r\n\r\n").as_bytes(),
        );
        warc_record(
            out,
            &[
                ("WARC-Type", "response".into()),
                ("WARC-Record-ID", rid),
                ("WARC-Date", date.clone()),
                ("WARC-Target-URI", url.to_string()),
                ("Content-Type", "application/http; msgtype=response".into()),
            ],
            &http,
        );
    };
    for i in 0..pages {
        let site = pick(&mut r, SITES);
        let (topic, text) = article(&mut r);
        let title = text.lines().next().unwrap_or("").to_string();
        let body = if i % 10 == 9 {
            // a page whose article is a single line: extraction keeps little, filters drop it
            format!("{title}\n\nClick here")
        } else {
            text
        };
        let html = page(&mut r, site, &title, &body);
        let http = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{html}",
            html.len()
        );
        response(
            &mut out,
            &mut r,
            &format!("https://{site}.example/{topic}/{i}"),
            http.into_bytes(),
        );
    }
    response(
        &mut out,
        &mut r,
        "https://gone.example/missing",
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<html><body>Not found</body></html>".to_vec(),
    );
    response(
        &mut out,
        &mut r,
        "https://moved.example/",
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://moved.example/new\r\n\r\n".to_vec(),
    );
    response(
        &mut out,
        &mut r,
        "https://images.example/logo.png",
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
            .to_vec(),
    );
    response(
        &mut out,
        &mut r,
        "https://broken.example/page",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n\x00\x01\x02\x03binary\x00\xff\xfe"
            .to_vec(),
    );
    let mut latin1 =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><article><p>".to_vec();
    latin1.extend_from_slice(
        b"Le caf\xe9 de la gare \xe9tait d\xe9j\xe0 ferm\xe9 quand nous sommes arriv\xe9s, et la cr\xe8me br\xfbl\xe9e aussi.",
    );
    latin1.extend_from_slice(b"</p></article></body></html>");
    response(&mut out, &mut r, "https://cafe.example/fr", latin1);
    response(
        &mut out,
        &mut r,
        "https://empty.example/",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n".to_vec(),
    );
    // Broken markup: unclosed and stray tags, a lone '<', an unterminated comment at the end.
    response(
        &mut out,
        &mut r,
        "https://broken-markup.example/story",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><div class=\"article-body\"><p>The harbour committee met on Tuesday to discuss the new ferry timetable, and the mayor promised an answer within a week.<p>Residents said the 5 < 6 o'clock gap was the worst part of the day, <b>especially <i>for commuters</b></i>.</span></div><!-- unterminated".to_vec(),
    );
    // A payload the crawler cut at its size limit (`WARC-Truncated: length`): the page's start.
    let cut = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><article><p>The observatory opened its doors to the public for the first time in forty years, and the queue stretched past the old gate.</p><p>Visitors who waited until dusk saw the comet low over the hills, and the volunteers kept the telescope running until midn";
    warc_record(
        &mut out,
        &[
            ("WARC-Type", "response".into()),
            (
                "WARC-Record-ID",
                "<urn:uuid:00000000-0000-4000-8000-00000000cafe>".into(),
            ),
            ("WARC-Date", "2026-11-01T12:00:00Z".into()),
            ("WARC-Target-URI", "https://long.example/story".into()),
            ("WARC-Truncated", "length".into()),
            ("Content-Type", "application/http; msgtype=response".into()),
        ],
        cut,
    );
    let path = dir.join("crawl-00.warc.gz");
    tokenmill_shards::atomic_write(&path, &out)?;
    Ok(path)
}
