//! [`Held`]: what a device would hold if it kept every buffer it has seen — the model of
//! device-resident training that [`super::Metered`] measures the seam against. Host memory is
//! tracked in 4 KiB pages (the page a driver migrates under HMM); for each page, the byte
//! ranges of it the device has seen — copied in as an input, or written as an output — with a
//! hash of their contents at that moment. A later input needs no copy when the device holds
//! its range with the same contents: nothing on the host wrote it since. Contents, not
//! addresses, decide, so a buffer the host rewrote in place, or a new one the allocator put at
//! an old address, is copied again; a range of zeros costs nothing (a device allocates zeroed
//! buffers itself).
//!
//! What this model cannot see: the host *reading* what the device wrote (the copies back a
//! host loop needs before it can compute). Those are not counted.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

/// Bytes per tracked page.
pub const PAGE: usize = 4096;

/// Ranges of one page the device holds, most recent last: (first byte, end, hash).
type Ranges = Vec<(u16, u16, u64)>;

/// Ranges of a page kept at most (older ones are forgotten, so they would be copied again).
const RANGES_PER_PAGE: usize = 8;

/// What one input would cost under residency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upload {
    /// Bytes the device does not hold with these contents: to copy.
    pub bytes: u64,
    /// Of those, bytes inside a larger range the device holds: it may hold them unchanged, which
    /// the range's hash cannot tell, so they count as copied — an upper bound on the error of
    /// [`Upload::bytes`].
    pub edge: u64,
}

/// The device's pages under residency.
#[derive(Debug, Default)]
pub struct Held {
    pages: HashMap<usize, Ranges>,
}

/// The pieces of `data` (which starts at host address `addr`) page by page: (page address,
/// first byte within the page, the piece).
fn pieces(addr: usize, data: &[u8]) -> impl Iterator<Item = (usize, u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let a = addr + at;
        let (page, lo) = (a - a % PAGE, a % PAGE);
        let len = (PAGE - lo).min(data.len() - at);
        let piece = &data[at..at + len];
        at += len;
        Some((page, lo as u16, piece))
    })
}

/// A page now holds `range` with these contents: it replaces what the page held for the same
/// bytes, and the oldest range goes when the page keeps [`RANGES_PER_PAGE`].
fn remember(ranges: &mut Ranges, range: (u16, u16, u64)) {
    ranges.retain(|&(l, h, _)| (l, h) != (range.0, range.1));
    if ranges.len() == RANGES_PER_PAGE {
        ranges.remove(0);
    }
    ranges.push(range);
}

/// Whether the ranges of a page held inside `piece` (which starts at byte `lo` of the page)
/// still have its contents and, with the zeros between them, make up all of it: a buffer
/// handed over whole after its tensors were seen one by one.
fn covered(ranges: &Ranges, lo: u16, piece: &[u8]) -> bool {
    let hi = lo as usize + piece.len();
    let mut inside: Vec<(usize, usize)> = ranges
        .iter()
        .filter(|&&(l, h, _)| lo <= l && h as usize <= hi)
        .filter(|&&(l, h, hash)| xxh3_64(&piece[(l - lo) as usize..(h - lo) as usize]) == hash)
        .map(|&(l, h, _)| ((l - lo) as usize, (h - lo) as usize))
        .collect();
    if inside.is_empty() {
        return false;
    }
    inside.sort_unstable();
    let mut at = 0;
    for (l, h) in inside {
        if l > at && !piece[at..l].iter().all(|&b| b == 0) {
            return false;
        }
        at = at.max(h);
    }
    piece[at..].iter().all(|&b| b == 0)
}

impl Held {
    /// The device now holds `data` (at host address `addr`) as it is: an output it wrote, or
    /// an input it was given.
    pub fn hold(&mut self, addr: usize, data: &[u8]) {
        for (page, lo, piece) in pieces(addr, data) {
            let hi = lo + piece.len() as u16;
            remember(
                self.pages.entry(page).or_default(),
                (lo, hi, xxh3_64(piece)),
            );
        }
    }

    /// What handing `data` (at `addr`) to the device as an input costs, and the device holds
    /// it afterwards.
    pub fn input(&mut self, addr: usize, data: &[u8]) -> Upload {
        let mut up = Upload::default();
        for (page, lo, piece) in pieces(addr, data) {
            let hi = lo + piece.len() as u16;
            let hash = xxh3_64(piece);
            let ranges = self.pages.entry(page).or_default();
            if ranges.contains(&(lo, hi, hash)) || covered(ranges, lo, piece) {
                continue;
            }
            if !piece.iter().all(|&b| b == 0) {
                up.bytes += piece.len() as u64;
                if ranges
                    .iter()
                    .any(|&(l, h, _)| l <= lo && hi <= h && (l, h) != (lo, hi))
                {
                    up.edge += piece.len() as u64;
                }
            }
            remember(ranges, (lo, hi, hash));
        }
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer's bytes and address.
    fn at(v: &[f32]) -> (usize, &[u8]) {
        (v.as_ptr() as usize, bytemuck::cast_slice(v))
    }

    #[test]
    fn an_input_is_copied_once_until_the_host_writes_it() {
        let mut held = Held::default();
        let mut x = vec![1.5f32; 3000];
        let (a, b) = at(&x);
        assert_eq!(held.input(a, b).bytes, 12_000);
        assert_eq!(held.input(a, b), Upload::default());
        // The host changes one value: only that value's page goes again.
        x[10] = 2.0;
        let (a, b) = at(&x);
        let up = held.input(a, b);
        let first_page = (PAGE - a % PAGE).min(12_000) as u64;
        assert_eq!(up.bytes, first_page);
        assert_eq!(up.edge, 0);
    }

    #[test]
    fn an_output_the_device_wrote_is_held_and_zeros_are_free() {
        let mut held = Held::default();
        let y = vec![3.0f32; 5000];
        let (a, b) = at(&y);
        held.hold(a, b);
        assert_eq!(held.input(a, b), Upload::default());
        let z = vec![0.0f32; 5000];
        let (a, b) = at(&z);
        assert_eq!(held.input(a, b).bytes, 0);
    }

    #[test]
    fn a_buffer_whose_parts_were_each_seen_is_held_until_one_changes() {
        let mut held = Held::default();
        let mut y: Vec<f32> = (0..3000).map(|i| i as f32).collect();
        // Three tensors of it held one by one, then the whole buffer handed over.
        for r in [0..700, 700..1900, 1900..3000] {
            let (a, b) = at(&y[r]);
            held.hold(a, b);
        }
        let (a, b) = at(&y);
        assert_eq!(held.input(a, b), Upload::default());
        // One value of the middle tensor changes: its page goes up, the others not.
        y[1000] = -1.0;
        let (a, b) = at(&y);
        let up = held.input(a, b);
        assert!(up.bytes > 0 && up.bytes <= PAGE as u64, "{up:?}");
    }

    #[test]
    fn a_sub_slice_of_a_held_buffer_counts_its_partial_pages_as_edges() {
        let mut held = Held::default();
        let y = vec![3.0f32; 8192];
        let (a, b) = at(&y);
        held.hold(a, b);
        // Bytes 100 .. 20,100 of it: the whole pages inside are held; the partial pages at
        // either end were seen as other ranges, so they count as copied, and as edges.
        let part = &b[100..20_100];
        let up = held.input(a + 100, part);
        assert!(up.bytes > 0 && up.bytes < 2 * PAGE as u64, "{up:?}");
        assert_eq!(up.bytes, up.edge);
    }
}
