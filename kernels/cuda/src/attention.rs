//! Causal attention on the device (cu/attention.cu): the forward with online softmax saving
//! the log-sum-exp, the backward as three kernels without atomics (D = rowsum(dO ⊙ O); dK/dV
//! per key block; dQ per query block), recomputing P from the log-sum-exp as the CPU does.

use cudarc::driver::PushKernelArg;
use tokenmill_kernels::backend::{AttnShape, KeyStarts};

use crate::backend::{Cuda, go};
use crate::error::Result;

/// Launch shapes, as documented above each kernel in cu/attention.cu: 256 threads, 64 rows of
/// queries (forward, dQ) or keys (dK/dV) per block, tiles in dynamic shared memory with rows
/// padded to `LD(d) = 32·ceil(d/32) + 4` floats.
pub(crate) mod shape {
    use cudarc::driver::LaunchConfig;
    use tokenmill_kernels::backend::AttnShape;

    fn ld(d: usize) -> usize {
        32 * d.div_ceil(32) + 4
    }

    fn cfg(s: AttnShape, floats: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (s.seq.div_ceil(64) as u32, s.bh as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (4 * floats) as u32,
        }
    }

    /// The forward.
    pub fn forward(s: AttnShape) -> LaunchConfig {
        cfg(s, 96 * ld(s.d_qk) + 32 * ld(s.d_v) + 2304)
    }
    /// D = rowsum(dO ⊙ O): one warp per row.
    pub fn pre(s: AttnShape) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((s.bh * s.seq).div_ceil(8).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }
    /// dK and dV.
    pub fn dkdv(s: AttnShape) -> LaunchConfig {
        cfg(s, 96 * (ld(s.d_qk) + ld(s.d_v)) + 4672)
    }
    /// dQ.
    pub fn dq(s: AttnShape) -> LaunchConfig {
        cfg(s, 96 * (ld(s.d_qk) + ld(s.d_v)) + 2432)
    }
}

/// The kernels handle head dims 1..=256 and bh ≤ 65,535 (grid.y).
fn supported(s: AttnShape) -> Result<()> {
    if (1..=256).contains(&s.d_qk) && (1..=256).contains(&s.d_v) && s.bh <= 65_535 {
        Ok(())
    } else {
        Err(crate::Error::Unavailable(format!(
            "CUDA attention handles head dims 1..=256 and batch×heads ≤ 65535, not d_qk {} d_v {} bh {}",
            s.d_qk, s.d_v, s.bh
        )))
    }
}

/// The first-key table on the device and the heads per sample (0 = no reset, a one-element
/// placeholder table that the kernels do not read).
fn starts_on_device(
    be: &Cuda,
    starts: Option<KeyStarts<'_>>,
) -> Result<(crate::device::Buf<u32>, i32)> {
    match starts {
        Some(k) => Ok((
            be.dev().input("attention first keys", k.first)?,
            k.heads as i32,
        )),
        None => Ok((be.dev().copy_in("attention first keys", &[0u32])?, 0)),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    be: &Cuda,
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [f32],
    lse: &mut [f32],
) -> Result<()> {
    supported(s)?;
    if s.bh == 0 || s.seq == 0 {
        return Ok(()); // no rows: nothing to write, and no grid of zero blocks
    }
    let dev = be.dev();
    let (gq, gk, gv) = (
        dev.input("attention q", q)?,
        dev.input("attention k", k)?,
        dev.input("attention v", v)?,
    );
    let go_ = dev.output("attention o", o)?;
    let gl = dev.output("attention lse", lse)?;
    let (first, heads) = starts_on_device(be, starts)?;
    let (bh, seq, dqk, dv, scale) = dims(s);
    let mut b = be.kernel("attention_fwd_f32")?;
    b.arg(gq.p())
        .arg(gk.p())
        .arg(gv.p())
        .arg(go_.p())
        .arg(gl.p())
        .arg(first.p())
        .arg(&heads)
        .arg(&bh)
        .arg(&seq)
        .arg(&dqk)
        .arg(&dv)
        .arg(&scale);
    go("attention_fwd_f32", b, shape::forward(s))?;
    dev.finish(&go_, o)?;
    dev.finish(&gl, lse)
}

fn dims(s: AttnShape) -> (i32, i32, i32, i32, f32) {
    (
        s.bh as i32,
        s.seq as i32,
        s.d_qk as i32,
        s.d_v as i32,
        s.scale as f32,
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    be: &Cuda,
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) -> Result<()> {
    supported(s)?;
    if s.bh == 0 || s.seq == 0 {
        return Ok(()); // no rows: nothing to write, and no grid of zero blocks
    }
    let dev = be.dev();
    let (gq, gk, gv) = (
        dev.input("attention q", q)?,
        dev.input("attention k", k)?,
        dev.input("attention v", v)?,
    );
    let (go_, gl, gdo) = (
        dev.input("attention o", o)?,
        dev.input("attention lse", lse)?,
        dev.input("attention dO", d_o)?,
    );
    let mut delta = dev.zeros::<f32>("attention D", lse.len())?;
    let gdq = dev.output("attention dq", dq)?;
    let gdk = dev.output("attention dk", dk)?;
    let gdv = dev.output("attention dv", dv)?;
    let (first, heads) = starts_on_device(be, starts)?;
    let (bh, seq, dqk, d_v, scale) = dims(s);
    {
        let mut b = be.kernel("attention_bwd_pre_f32")?;
        b.arg(go_.p())
            .arg(gdo.p())
            .arg(&mut delta)
            .arg(&bh)
            .arg(&seq)
            .arg(&d_v);
        go("attention_bwd_pre_f32", b, shape::pre(s))?;
    }
    {
        let mut b = be.kernel("attention_bwd_dkdv_f32")?;
        b.arg(gq.p())
            .arg(gk.p())
            .arg(gv.p())
            .arg(gl.p())
            .arg(gdo.p())
            .arg(&delta)
            .arg(gdk.p())
            .arg(gdv.p())
            .arg(first.p())
            .arg(&heads)
            .arg(&bh)
            .arg(&seq)
            .arg(&dqk)
            .arg(&d_v)
            .arg(&scale);
        go("attention_bwd_dkdv_f32", b, shape::dkdv(s))?;
    }
    {
        let mut b = be.kernel("attention_bwd_dq_f32")?;
        b.arg(gq.p())
            .arg(gk.p())
            .arg(gv.p())
            .arg(gl.p())
            .arg(gdo.p())
            .arg(&delta)
            .arg(gdq.p())
            .arg(first.p())
            .arg(&heads)
            .arg(&bh)
            .arg(&seq)
            .arg(&dqk)
            .arg(&d_v)
            .arg(&scale);
        go("attention_bwd_dq_f32", b, shape::dq(s))?;
    }
    dev.finish(&gdq, dq)?;
    dev.finish(&gdk, dk)?;
    dev.finish(&gdv, dv)
}
