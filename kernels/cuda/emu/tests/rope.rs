//! rope.cu against kernels/src/cpu/rope.rs: the forward and backward rotations, bit for bit,
//! on layouts with an offset rope part inside longer rows, positions restarting every `seq`
//! tokens, and pair counts that are not multiples of the block.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::{RopeRows, RopeTable};
use tokenmill_kernels::cpu::rope::{rope_bwd_ref, rope_fwd_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn rope_fwd_f32(
        cos: *const f32,
        sin: *const f32,
        d_rope: i32,
        x: *mut f32,
        tokens: i64,
        seq: i32,
        heads: i32,
        row_len: i32,
        offset: i32,
    );
    fn rope_bwd_f32(
        cos: *const f32,
        sin: *const f32,
        d_rope: i32,
        dx: *mut f32,
        tokens: i64,
        seq: i32,
        heads: i32,
        row_len: i32,
        offset: i32,
    );
}

const BLOCK: u32 = 256;

/// The launch of the comment above the kernels: min(ceil(total / 256), 65535) blocks.
fn grid(total: usize) -> u32 {
    total.div_ceil(BLOCK as usize).clamp(1, 65535) as u32
}

fn run(t: &RopeTable<f32>, x: &mut [f32], tokens: usize, r: RopeRows, inverse: bool) {
    let total = tokens * r.heads * (t.d_rope / 2);
    let (cp, sp, xp) = (Ptr::of_const(t.cos()), Ptr::of_const(t.sin()), Ptr::of(x));
    let d_rope = t.d_rope as i32;
    let args = (
        tokens as i64,
        r.seq as i32,
        r.heads as i32,
        r.row_len as i32,
        r.offset as i32,
    );
    launch((grid(total), 1, 1), (BLOCK, 1, 1), 0, || {
        let (tk, seq, heads, row_len, offset) = args;
        // SAFETY: cos, sin: the table's [max_pos, d_rope/2]; x: tokens × heads × row_len with
        // the rope part inside each row; every position < seq ≤ max_pos; alive for the launch.
        unsafe {
            if inverse {
                rope_bwd_f32(
                    cp.c(),
                    sp.c(),
                    d_rope,
                    xp.p(),
                    tk,
                    seq,
                    heads,
                    row_len,
                    offset,
                )
            } else {
                rope_fwd_f32(
                    cp.c(),
                    sp.c(),
                    d_rope,
                    xp.p(),
                    tk,
                    seq,
                    heads,
                    row_len,
                    offset,
                )
            }
        }
    });
}

#[test]
fn forward_and_backward_are_the_reference_bit_for_bit() {
    let mut rng = Rng::new(5);
    // (d_rope, tokens, seq, heads, row_len, offset)
    for (d_rope, tokens, seq, heads, row_len, offset) in [
        (64, 10, 4, 3, 192, 128), // DeepSeek-V3's q layout: rope part after the nope part
        (8, 7, 7, 1, 8, 0),       // the whole row
        (6, 9, 5, 2, 11, 3),      // odd row length and offset
        (2, 300, 300, 1, 2, 0),   // one pair per row, more pairs than a block
    ] {
        let t = RopeTable::<f32>::new(d_rope, 10000.0, seq.max(8));
        let r = RopeRows {
            seq,
            heads,
            row_len,
            offset,
        };
        let x: Vec<f32> = (0..tokens * heads * row_len)
            .map(|_| rng.normal() as f32 * 3.0)
            .collect();
        for inverse in [false, true] {
            let (mut a, mut b) = (x.clone(), x.clone());
            run(&t, &mut a, tokens, r, inverse);
            if inverse {
                rope_bwd_ref(&t, &mut b, r);
            } else {
                rope_fwd_ref(&t, &mut b, r);
            }
            for i in 0..a.len() {
                assert_eq!(
                    a[i].to_bits(),
                    b[i].to_bits(),
                    "d_rope {d_rope} tokens {tokens} inverse {inverse}: x[{i}] {} vs {}",
                    a[i],
                    b[i]
                );
            }
        }
    }
}

#[test]
fn a_grid_smaller_than_the_work_strides_over_it() {
    let (d_rope, tokens, seq, heads, row_len) = (16, 40, 16, 4, 16);
    let t = RopeTable::<f32>::new(d_rope, 10000.0, seq);
    let r = RopeRows {
        seq,
        heads,
        row_len,
        offset: 0,
    };
    let x: Vec<f32> = (0..tokens * heads * row_len)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let (mut a, mut b) = (x.clone(), x);
    let (cp, sp, xp) = (
        Ptr::of_const(t.cos()),
        Ptr::of_const(t.sin()),
        Ptr::of(&mut a),
    );
    launch((2, 1, 1), (64, 1, 1), 0, || {
        // SAFETY: as in `run`.
        unsafe { rope_fwd_f32(cp.c(), sp.c(), 16, xp.p(), 40, 16, 4, 16, 0) }
    });
    rope_fwd_ref(&t, &mut b, r);
    assert_eq!(a, b);
}
