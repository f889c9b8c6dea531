//! Prints how extraction sees one page: its blocks and the best-scored elements.
//! `cargo run -p tokenmill-extract --example extract_debug -- PAGE.html`
fn main() {
    let path = std::env::args().nth(1).expect("a page");
    let html = std::fs::read_to_string(&path).expect("utf-8 page");
    if let Ok(range) = std::env::var("TOKENS") {
        let (a, b) = range.split_once('-').expect("A-B");
        let (a, b): (usize, usize) = (a.parse().expect("A"), b.parse().expect("B"));
        for t in tokenmill_extract::lexer::Lexer::new(&html) {
            let at = match t {
                tokenmill_extract::lexer::Token::Text(s) => {
                    s.as_ptr() as usize - html.as_ptr() as usize
                }
                _ => 0,
            };
            let _ = (a, b, at);
            println!("{t:?}");
        }
        return;
    }
    let mut page = tokenmill_extract::tree::build(&html);
    if std::env::var_os("ADDED").is_some() {
        let sel = tokenmill_extract::select::select(&mut page, &Default::default());
        for (b, f) in page.blocks.iter().zip(&sel.fates) {
            if *f == tokenmill_extract::select::Fate::Added {
                println!("added: {}", b.text.chars().take(150).collect::<String>());
            }
        }
        return;
    }
    let text = tokenmill_extract::select::article(&mut page, &Default::default());
    println!("{} elements, {} blocks", page.els.len(), page.blocks.len());
    let mut idx: Vec<usize> = (0..page.els.len()).collect();
    idx.sort_by(|&a, &b| page.els[b].score.total_cmp(&page.els[a].score));
    for &i in idx.iter().take(8) {
        let e = &page.els[i];
        println!(
            "el {i} {:?} depth {} flags {} score {:.1} chars {} links {}",
            e.tag, e.depth, e.flags, e.score, e.chars, e.link_chars
        );
    }
    for b in page.blocks.iter().take(
        std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    ) {
        let mut chain = String::new();
        let mut e = b.owner;
        while e != 0 {
            let el = &page.els[e as usize];
            chain.push_str(&format!("{:?}/{} ", el.tag, el.flags));
            e = el.parent;
        }
        println!(
            "[{} {:?} {}] {} <- {chain}",
            b.owner,
            page.els[b.owner as usize].tag,
            b.chars,
            b.text.chars().take(60).collect::<String>()
        );
    }
    println!("---\n{}", text.chars().take(1500).collect::<String>());
}
