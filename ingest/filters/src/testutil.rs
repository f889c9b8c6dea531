//! Hand-made inputs shared by the unit tests.

/// Content words of the generated prose.
const CONTENT: [&str; 60] = [
    "river", "mountain", "garden", "harbour", "library", "market", "valley", "tower", "forest",
    "village", "teacher", "farmer", "sailor", "doctor", "painter", "student", "walked", "painted",
    "noticed", "carried", "followed", "opened", "wrote", "visited", "quiet", "distant", "broken",
    "ancient", "narrow", "golden", "morning", "evening", "window", "letter", "basket", "journey",
    "kitchen", "blanket", "lantern", "orchard", "meadow", "castle", "bridge", "silver", "summer",
    "winter", "autumn", "slowly", "gently", "finally", "candle", "pocket", "ribbon", "island",
    "thunder", "whisper", "feather", "compass", "harvest", "shelter",
];

/// Stop words mixed into the prose.
const STOP: [&str; 6] = ["the", "of", "and", "to", "with", "that"];

/// Deterministic English-like prose: `lines` lines of two sentences of 5–9 words, each ending
/// with a period, words drawn pseudo-randomly (so no n-gram, line or paragraph repeats), with
/// stop words unless `stop_words` is false.
pub(crate) fn prose(lines: usize, stop_words: bool) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut out = String::new();
    for _ in 0..lines {
        for sentence in 0..2 {
            let len = 5 + next(5);
            for i in 0..len {
                let word = if stop_words && next(3) == 0 {
                    STOP[next(STOP.len())]
                } else {
                    CONTENT[next(CONTENT.len())]
                };
                if i == 0 {
                    let mut chars = word.chars();
                    if let Some(first) = chars.next() {
                        out.extend(first.to_uppercase());
                        out.push_str(chars.as_str());
                    }
                } else {
                    out.push(' ');
                    out.push_str(word);
                }
            }
            out.push_str(if sentence == 0 { ". " } else { ".\n" });
        }
    }
    out
}

/// 50 lines of prose with stop words: passes every quality filter.
pub(crate) fn good_text() -> String {
    prose(50, true)
}
