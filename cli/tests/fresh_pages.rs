//! `alloc::fresh_pages` (for training on host memory through HMM): in a process of its own,
//! with the binary's allocator. Before, a freed block of 64 MiB is kept for the next one of
//! its size; after, none is kept and glibc maps even a 1 MiB block afresh.

use tokenmill_cli::alloc::{HugePages, fresh_pages, kept_bytes};

#[global_allocator]
static ALLOC: HugePages = HugePages;

#[test]
fn after_fresh_pages_no_block_is_kept_and_large_blocks_are_mapped_afresh() {
    let big = 64 << 20;
    drop(vec![1u8; big]);
    assert_eq!(kept_bytes(), big, "a freed 64 MiB block is kept by default");
    fresh_pages();
    assert_eq!(kept_bytes(), 0, "fresh_pages frees the kept blocks");
    drop(vec![1u8; big]);
    assert_eq!(kept_bytes(), 0, "and keeps none after");
    // SAFETY: mallinfo2 only reads glibc's statistics.
    let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
    let before = mapped();
    let v = vec![1u8; 1 << 20];
    assert!(
        mapped() >= before + (1 << 20),
        "a 1 MiB block is its own mapping: {} -> {} bytes mapped",
        before,
        mapped()
    );
    drop(v);
}
