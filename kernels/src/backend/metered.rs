//! [`Metered`]: any backend with a count, per operation, of the calls and of the bytes a
//! device backend behind this seam copies. The seam passes host slices, so a device backend
//! (the CUDA one) copies every input slice to the device and every output slice back — both
//! ways for outputs it updates in place or accumulates into — and waits for the copy back:
//! each call is one round trip. On the CPU this measures, for any model and batch, what the
//! seam would move across PCIe, without a GPU. Given the host ranges of named buffers (the
//! parameters, their gradients), it also splits the bytes by the buffer they belong to: what
//! keeping those buffers on the device would save.

use std::collections::BTreeMap;
use std::mem::size_of_val;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::held::Held;
use super::{
    AdamStep, AttnShape, Backend, Balance, Grouped, GroupedForm, KeyStarts, LowpGemm, MatMul,
    RopeRows, RopeTable, Route, Strided,
};
use crate::real::Real;

/// The traffic of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Calls (round trips: each waits for its results).
    pub calls: u64,
    /// Bytes copied to the device.
    pub to_device: u64,
    /// Bytes copied back.
    pub to_host: u64,
}

impl Traffic {
    fn add(&mut self, o: Traffic) {
        self.calls += o.calls;
        self.to_device += o.to_device;
        self.to_host += o.to_host;
    }
}

/// What bytes not in a named region are counted as.
pub const ACTIVATIONS: &str = "activations";

/// `inner` with its traffic counted per operation, and per named host region.
#[derive(Debug)]
pub struct Metered<'a, T> {
    inner: &'a dyn Backend<T>,
    ops: Mutex<BTreeMap<&'static str, Traffic>>,
    regions: Vec<(&'static str, Range<usize>)>,
    kinds: Mutex<BTreeMap<&'static str, Traffic>>,
    /// Under residency ([`Metered::resident`]): what the device holds, and what it would copy.
    resident: Option<Mutex<Resident>>,
    /// With [`Metered::reaching`]: which slices a backend takes by address, and what it would
    /// copy of the others.
    reach: Option<(Reached, Mutex<Partial>)>,
    /// With [`Metered::reaching`]: the deferred scopes open (the model's, which this backend
    /// opens so as to count the waits of [`Partial::waits_deferred`]; the inner backend's
    /// operations are done when they return either way).
    depth: AtomicU32,
}

/// Whether a backend takes the slice at an address, of a length in bytes, by address.
pub type Reached = fn(u64, usize) -> bool;

/// What a backend that takes some slices by their address and copies the others — the CUDA
/// backend in managed memory, whose large blocks it reaches ([`Metered::reaching`]) — would
/// copy: each slice it does not reach, inputs up, outputs back, both ways for outputs it
/// updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Partial {
    /// Calls that copy anything.
    pub calls: u64,
    /// Slices copied, either way.
    pub copies: u64,
    /// Bytes copied to the device.
    pub to_device: u64,
    /// Bytes copied back.
    pub to_host: u64,
    /// Waits for the device, as the CUDA backend makes them ([`Metered::reaching`]): one for
    /// each output it copies back, each output it took by address, and each FP8 GEMM's count
    /// of non-finite tiles.
    pub waits: u64,
    /// The same with `[train] defer_waits`: inside the model's deferred scopes
    /// ([`Backend::begin_deferred`]) only the outputs copied back wait, and each outermost
    /// scope's end waits once.
    pub waits_deferred: u64,
}

/// The counts under residency.
#[derive(Debug, Default)]
struct Resident {
    held: Held,
    ops: BTreeMap<&'static str, Traffic>,
    kinds: BTreeMap<&'static str, Traffic>,
    edge: u64,
}

/// What a device that keeps every buffer it has seen would still copy in: the inputs the host
/// wrote since the device last saw them (`backend/held.rs`). The host's reads of what the device
/// wrote are not seen, so `to_host` stays 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Residency {
    /// By operation (`calls`: calls that copied anything).
    pub ops: BTreeMap<&'static str, Traffic>,
    /// By region (`calls`: slices copied).
    pub by_kind: BTreeMap<&'static str, Traffic>,
    /// Bytes counted as copied that the device may hold inside a larger range (an upper bound
    /// on the counts' error).
    pub edge: u64,
}

impl Residency {
    /// Bytes copied in, over all operations.
    pub fn to_device(&self) -> u64 {
        self.ops.values().map(|t| t.to_device).sum()
    }
}

/// A slice as the seam passes it: where it lies and its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Span<'s> {
    addr: usize,
    bytes: u64,
    data: &'s [u8],
}

/// A slice's span.
fn n<X: bytemuck::Pod>(x: &[X]) -> Span<'_> {
    Span {
        addr: x.as_ptr() as usize,
        bytes: size_of_val(x) as u64,
        data: bytemuck::cast_slice(x),
    }
}

impl<'a, T: Real> Metered<'a, T> {
    /// Counts `inner`'s traffic from now on.
    pub fn new(inner: &'a dyn Backend<T>) -> Self {
        Metered {
            inner,
            ops: Mutex::new(BTreeMap::new()),
            regions: Vec::new(),
            kinds: Mutex::new(BTreeMap::new()),
            resident: None,
            reach: None,
            depth: AtomicU32::new(0),
        }
    }

    /// Also counts what a backend that takes the slices for which `reached(address, bytes)` is
    /// true by address, and copies the others, would copy ([`Metered::partial`]).
    pub fn reaching(mut self, reached: Reached) -> Self {
        self.reach = Some((reached, Mutex::new(Partial::default())));
        self
    }

    /// What the backend of [`Metered::reaching`] would have copied so far.
    pub fn partial(&self) -> Option<Partial> {
        let (_, p) = self.reach.as_ref()?;
        Some(*p.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// An FP8 GEMM's count of non-finite tiles, which the CUDA backend copies back (a wait)
    /// unless a deferred scope is open ([`Partial::waits`]).
    fn counted(&self) {
        if let Some((_, p)) = &self.reach {
            let deferring = self.depth.load(Ordering::Relaxed) > 0;
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            p.waits += 1;
            p.waits_deferred += u64::from(!deferring);
        }
    }

    /// Also counts what a device-resident backend would copy ([`Metered::residency`]): one
    /// that keeps every buffer it has been given or has written. Call it before
    /// [`Metered::region`]: the regions named after it (parameters, gradients) are held from
    /// the start, as if the optimizer ran on the device too.
    pub fn resident(mut self) -> Self {
        self.resident = Some(Mutex::new(Resident::default()));
        self
    }

    /// What a device-resident backend would have copied so far (`None` unless
    /// [`Metered::resident`]).
    pub fn residency(&self) -> Option<Residency> {
        let r = self.resident.as_ref()?;
        let r = r.lock().unwrap_or_else(|e| e.into_inner());
        Some(Residency {
            ops: r.ops.clone(),
            by_kind: r.kinds.clone(),
            edge: r.edge,
        })
    }

    /// Under residency, the device holds these outputs as the call left them.
    fn landed(&self, outs: &[Span<'_>]) {
        if let Some(r) = &self.resident {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            for s in outs {
                r.held.hold(s.addr, s.data);
            }
        }
    }

    /// Counts the bytes of slices inside `buf` as `name` ([`Metered::by_kind`]); the rest are
    /// [`ACTIVATIONS`].
    pub fn region(mut self, name: &'static str, buf: &[T]) -> Self {
        let a = buf.as_ptr() as usize;
        self.regions.push((name, a..a + size_of_val(buf)));
        if let Some(r) = &mut self.resident {
            let r = r.get_mut().unwrap_or_else(|e| e.into_inner());
            r.held.hold(a, bytemuck::cast_slice(buf));
        }
        self
    }

    /// Under residency, the device also holds each of these element ranges of `buf` (the
    /// tensors inside a region), so that an operation given one tensor finds it held as it is
    /// rather than as a page edge of the whole region. No effect without residency.
    pub fn holding(self, buf: &[T], parts: impl IntoIterator<Item = Range<usize>>) -> Self {
        self.hold(buf, parts);
        self
    }

    /// [`Metered::holding`] later on: the device holds these element ranges of `buf` as they
    /// are now (a buffer an operation wrote whole, such as the parameters after AdamW, held
    /// again tensor by tensor).
    pub fn hold(&self, buf: &[T], parts: impl IntoIterator<Item = Range<usize>>) {
        if let Some(r) = &self.resident {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            for part in parts {
                let s = &buf[part];
                r.held.hold(s.as_ptr() as usize, bytemuck::cast_slice(s));
            }
        }
    }

    fn kind(&self, s: Span<'_>) -> &'static str {
        self.regions
            .iter()
            .find(|(_, r)| r.contains(&s.addr))
            .map_or(ACTIVATIONS, |(name, _)| name)
    }

    fn note(&self, op: &'static str, up: &[Span<'_>], down: &[Span<'_>]) {
        self.note_finishing(op, up, down, down)
    }

    /// [`Metered::note`] of an operation that finishes (copies back, or waits for) `finished`,
    /// which may cover the outputs `down` are counted in.
    fn note_finishing(
        &self,
        op: &'static str,
        up: &[Span<'_>],
        down: &[Span<'_>],
        finished: &[Span<'_>],
    ) {
        let t = Traffic {
            calls: 1,
            to_device: up.iter().map(|s| s.bytes).sum(),
            to_host: down.iter().map(|s| s.bytes).sum(),
        };
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default()
            .add(t);
        if let Some(r) = &self.resident {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            let mut copied = 0;
            for s in up {
                let u = r.held.input(s.addr, s.data);
                if u.bytes > 0 {
                    copied += u.bytes;
                    r.edge += u.edge;
                    let k = r.kinds.entry(self.kind(*s)).or_default();
                    k.calls += 1;
                    k.to_device += u.bytes;
                }
            }
            let o = r.ops.entry(op).or_default();
            o.calls += u64::from(copied > 0);
            o.to_device += copied;
        }
        if let Some((reached, p)) = &self.reach {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let mut copied = false;
            for (spans, up) in [(up, true), (down, false)] {
                for s in spans
                    .iter()
                    .filter(|s| s.bytes > 0 && !reached(s.addr as u64, s.bytes as usize))
                {
                    copied = true;
                    p.copies += 1;
                    if up {
                        p.to_device += s.bytes;
                    } else {
                        p.to_host += s.bytes;
                    }
                }
            }
            p.calls += u64::from(copied);
            let deferring = self.depth.load(Ordering::Relaxed) > 0;
            for s in finished.iter().filter(|s| s.bytes > 0) {
                let by_address = reached(s.addr as u64, s.bytes as usize);
                p.waits += 1;
                p.waits_deferred += u64::from(!by_address || !deferring);
            }
        }
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        for (spans, up) in [(up, true), (down, false)] {
            for &s in spans.iter().filter(|s| s.bytes > 0) {
                let k = kinds.entry(self.kind(s)).or_default();
                k.calls += 1;
                if up {
                    k.to_device += s.bytes;
                } else {
                    k.to_host += s.bytes;
                }
            }
        }
    }

    /// The bytes so far by the region their slices lie in (`calls`: the slices copied).
    pub fn by_kind(&self) -> BTreeMap<&'static str, Traffic> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counts so far, by operation.
    pub fn traffic(&self) -> BTreeMap<&'static str, Traffic> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The sum over operations.
    pub fn total(&self) -> Traffic {
        let mut t = Traffic::default();
        for v in self.traffic().values() {
            t.add(*v);
        }
        t
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if let Some(r) = &self.resident {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            (r.ops, r.kinds, r.edge) = Default::default();
        }
        if let Some((_, p)) = &self.reach {
            *p.lock().unwrap_or_else(|e| e.into_inner()) = Partial::default();
        }
    }
}

/// Starts' bytes (copied with the attention inputs).
fn starts_n<'s>(s: &Option<KeyStarts<'s>>) -> Span<'s> {
    s.map_or(Span::default(), |k| n(k.first))
}

impl<T: Real> Backend<T> for Metered<'_, T> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    /// As the copying device backend it measures, none: the model moves rows on the host.
    /// Under residency, all: the data movement is the device's too.
    fn moves_data(&self) -> bool {
        self.resident.is_some()
    }
    /// With [`Metered::reaching`], opens the scope itself (to count the waits it would save);
    /// else the inner backend's.
    fn begin_deferred(&self) -> bool {
        if self.reach.is_none() {
            return self.inner.begin_deferred();
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn settle(&self) -> u64 {
        let Some((_, p)) = &self.reach else {
            return self.inner.settle();
        };
        let was = self.depth.fetch_sub(1, Ordering::Relaxed);
        if was == 1 {
            p.lock().unwrap_or_else(|e| e.into_inner()).waits_deferred += 1;
        }
        0
    }
    fn matmul(&self, p: MatMul, a: &[T], bm: &[T], c: &mut [T]) {
        let acc = if p.accumulate { n(c) } else { Span::default() };
        self.note("matmul", &[n(a), n(bm), acc], &[n(c)]);
        self.inner.matmul(p, a, bm, c);
        self.landed(&[n(c)]);
    }
    fn matmul_lowp(&self, p: MatMul, a: &[T], bm: &[T], c: &mut [T], f: LowpGemm) -> u64 {
        let acc = if p.accumulate { n(c) } else { Span::default() };
        self.note("matmul_lowp", &[n(a), n(bm), acc], &[n(c)]);
        if matches!(f, LowpGemm::Fp8 { .. }) {
            self.counted();
        }
        let bad = self.inner.matmul_lowp(p, a, bm, c, f);
        self.landed(&[n(c)]);
        bad
    }
    fn grouped_matmul(
        &self,
        g: Grouped<'_>,
        a: &[T],
        bm: &[T],
        c: &mut [T],
        f: Option<LowpGemm>,
    ) -> u64 {
        // The weight blocks go one by one (not the other projections between them): those of
        // experts with rows, or every expert's weight gradient block.
        let weights = g.form != GroupedForm::Weight;
        let with_rows: Vec<_> = (0..g.groups())
            .filter(|&e| g.offsets[e + 1] > g.offsets[e])
            .map(|e| g.block(e))
            .collect();
        let all: Vec<_> = (0..g.groups()).map(|e| g.block(e)).collect();
        let mut up: Vec<Span<'_>> = vec![n(a)];
        let mut down: Vec<Span<'_>> = Vec::new();
        if weights {
            up.extend(with_rows.iter().map(|r| n(&bm[r.clone()])));
            if g.accumulate {
                up.push(n(c));
            }
            down.push(n(c));
        } else {
            up.push(n(bm));
            if g.accumulate {
                up.extend(all.iter().map(|r| n(&c[r.clone()])));
            }
            down.extend(all.iter().map(|r| n(&c[r.clone()])));
        }
        // One output, C, copied back or waited for whole.
        self.note_finishing("grouped_matmul", &up, &down, &[n(c)]);
        if matches!(f, Some(LowpGemm::Fp8 { .. })) {
            self.counted();
        }
        let bad = self.inner.grouped_matmul(g, a, bm, c, f);
        let outs: Vec<Span<'_>> = if weights {
            vec![n(c)]
        } else {
            all.iter().map(|r| n(&c[r.clone()])).collect()
        };
        self.landed(&outs);
        bad
    }
    fn rmsnorm_fwd(&self, x: &[T], w: &[T], eps: f64, y: &mut [T], rstd: &mut [T]) {
        self.note("rmsnorm_fwd", &[n(x), n(w)], &[n(y), n(rstd)]);
        self.inner.rmsnorm_fwd(x, w, eps, y, rstd);
        self.landed(&[n(y), n(rstd)]);
    }
    fn rmsnorm_bwd_input(
        &self,
        x: &[T],
        w: &[T],
        rstd: &[T],
        dy: &[T],
        dx: &mut [T],
        accumulate: bool,
    ) {
        let acc = if accumulate { n(dx) } else { Span::default() };
        self.note(
            "rmsnorm_bwd_input",
            &[n(x), n(w), n(rstd), n(dy), acc],
            &[n(dx)],
        );
        self.inner.rmsnorm_bwd_input(x, w, rstd, dy, dx, accumulate);
        self.landed(&[n(dx)]);
    }
    fn rmsnorm_bwd_weight(&self, x: &[T], rstd: &[T], dy: &[T], dw: &mut [T]) {
        self.note(
            "rmsnorm_bwd_weight",
            &[n(x), n(rstd), n(dy), n(dw)],
            &[n(dw)],
        );
        self.inner.rmsnorm_bwd_weight(x, rstd, dy, dw);
        self.landed(&[n(dw)]);
    }
    fn rope_fwd(&self, t: &RopeTable<T>, x: &mut [T], r: RopeRows) {
        self.note("rope_fwd", &[n(t.cos()), n(t.sin()), n(x)], &[n(x)]);
        self.inner.rope_fwd(t, x, r);
        self.landed(&[n(x)]);
    }
    fn rope_bwd(&self, t: &RopeTable<T>, dx: &mut [T], r: RopeRows) {
        self.note("rope_bwd", &[n(t.cos()), n(t.sin()), n(dx)], &[n(dx)]);
        self.inner.rope_bwd(t, dx, r);
        self.landed(&[n(dx)]);
    }
    fn swiglu_fwd(&self, g: &[T], u: &[T], h: &mut [T]) {
        self.note("swiglu_fwd", &[n(g), n(u)], &[n(h)]);
        self.inner.swiglu_fwd(g, u, h);
        self.landed(&[n(h)]);
    }
    fn swiglu_bwd(&self, g: &[T], u: &[T], dh: &[T], dg: &mut [T], du: &mut [T]) {
        self.note("swiglu_bwd", &[n(g), n(u), n(dh)], &[n(dg), n(du)]);
        self.inner.swiglu_bwd(g, u, dh, dg, du);
        self.landed(&[n(dg), n(du)]);
    }
    fn attention_fwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &mut [T],
        lse: &mut [T],
    ) {
        self.note(
            "attention_fwd",
            &[n(q), n(k), n(v), starts_n(&starts)],
            &[n(o), n(lse)],
        );
        self.inner.attention_fwd(s, starts, q, k, v, o, lse);
        self.landed(&[n(o), n(lse)]);
    }
    fn attention_bwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        lse: &[T],
        d_o: &[T],
        dq: &mut [T],
        dk: &mut [T],
        dv: &mut [T],
    ) {
        self.note(
            "attention_bwd",
            &[n(q), n(k), n(v), n(o), n(lse), n(d_o), starts_n(&starts)],
            &[n(dq), n(dk), n(dv)],
        );
        self.inner
            .attention_bwd(s, starts, q, k, v, o, lse, d_o, dq, dk, dv);
        self.landed(&[n(dq), n(dk), n(dv)]);
    }
    fn cross_entropy_fwd(
        &self,
        logits: &[T],
        targets: &[u32],
        vocab: usize,
        losses: &mut [T],
        lse: &mut [T],
    ) {
        self.note(
            "cross_entropy_fwd",
            &[n(logits), n(targets)],
            &[n(losses), n(lse)],
        );
        self.inner
            .cross_entropy_fwd(logits, targets, vocab, losses, lse);
        self.landed(&[n(losses), n(lse)]);
    }
    fn cross_entropy_bwd(
        &self,
        logits: &mut [T],
        targets: &[u32],
        lse: &[T],
        g: &[T],
        vocab: usize,
    ) {
        self.note(
            "cross_entropy_bwd",
            &[n(logits), n(targets), n(lse), n(g)],
            &[n(logits)],
        );
        self.inner.cross_entropy_bwd(logits, targets, lse, g, vocab);
        self.landed(&[n(logits)]);
    }
    fn cross_entropy_fused(
        &self,
        logits: &mut [T],
        targets: &[u32],
        g: &[T],
        vocab: usize,
        losses: &mut [T],
        lse: &mut [T],
    ) {
        self.note(
            "cross_entropy_fused",
            &[n(logits), n(targets), n(g)],
            &[n(logits), n(losses), n(lse)],
        );
        self.inner
            .cross_entropy_fused(logits, targets, g, vocab, losses, lse);
        self.landed(&[n(logits), n(losses), n(lse)]);
    }
    fn embedding_fwd(&self, table: &[T], d: usize, ids: &[u32], y: &mut [T]) {
        self.note("embedding_fwd", &[n(table), n(ids)], &[n(y)]);
        self.inner.embedding_fwd(table, d, ids, y);
        self.landed(&[n(y)]);
    }
    fn embedding_bwd(&self, dy: &[T], d: usize, ids: &[u32], dtable: &mut [T]) {
        self.note("embedding_bwd", &[n(dy), n(ids), n(dtable)], &[n(dtable)]);
        self.inner.embedding_bwd(dy, d, ids, dtable);
        self.landed(&[n(dtable)]);
    }
    fn route(
        &self,
        r: Route,
        logits: &[T],
        bias: &[T],
        scores: &mut [T],
        idx: &mut [u32],
        gates: &mut [T],
    ) {
        self.note(
            "route",
            &[n(logits), n(bias)],
            &[n(scores), n(idx), n(gates)],
        );
        self.inner.route(r, logits, bias, scores, idx, gates);
        self.landed(&[n(scores), n(idx), n(gates)]);
    }
    fn route_bwd(
        &self,
        r: Route,
        scores: &[T],
        idx: &[u32],
        dgates: &[T],
        balance: Option<Balance<'_>>,
        ds: &mut [T],
    ) {
        let coef = balance.map_or(Span::default(), |b| n(b.coef));
        self.note("route_bwd", &[n(scores), n(idx), n(dgates), coef], &[n(ds)]);
        self.inner.route_bwd(r, scores, idx, dgates, balance, ds);
        self.landed(&[n(ds)]);
    }
    fn fake_quantize_fp8(&self, x: &mut [T], cols: usize, tile: (usize, usize)) -> u64 {
        self.note("fake_quantize_fp8", &[n(x)], &[n(x)]);
        self.counted();
        let bad = self.inner.fake_quantize_fp8(x, cols, tile);
        self.landed(&[n(x)]);
        bad
    }
    fn round_bf16(&self, x: &mut [T]) {
        self.note("round_bf16", &[n(x)], &[n(x)]);
        self.inner.round_bf16(x);
        self.landed(&[n(x)]);
    }
    // A copying device fills and scales on the host (as the CUDA backend does): no traffic.
    fn fill(&self, x: &mut [T], v: T) {
        if !self.moves_data() {
            x.fill(v);
            return;
        }
        self.note("fill", &[], &[n(x)]);
        self.inner.fill(x, v);
        self.landed(&[n(x)]);
    }
    fn scale(&self, x: &mut [T], s: T) {
        if !self.moves_data() {
            x.iter_mut().for_each(|v| *v *= s);
            return;
        }
        self.note("scale", &[n(x)], &[n(x)]);
        self.inner.scale(x, s);
        self.landed(&[n(x)]);
    }
    fn copy(&self, c: Strided, src: &[T], dst: &mut [T]) {
        // The destination goes up too unless the copy overwrites all of it.
        let prior = if c.covers(dst.len()) {
            Span::default()
        } else {
            n(dst)
        };
        self.note("copy", &[n(src), prior], &[n(dst)]);
        self.inner.copy(c, src, dst);
        self.landed(&[n(dst)]);
    }
    fn gather_rows(&self, src: &[T], d: usize, rows: &[u32], scale: Option<&[T]>, dst: &mut [T]) {
        let s = scale.map_or(Span::default(), n);
        self.note("gather_rows", &[n(src), n(rows), s], &[n(dst)]);
        self.inner.gather_rows(src, d, rows, scale, dst);
        self.landed(&[n(dst)]);
    }
    fn scatter_add_rows(
        &self,
        src: &[T],
        d: usize,
        rows: &[u32],
        scale: Option<&[T]>,
        dst: &mut [T],
    ) {
        let s = scale.map_or(Span::default(), n);
        self.note("scatter_add_rows", &[n(src), n(rows), s, n(dst)], &[n(dst)]);
        self.inner.scatter_add_rows(src, d, rows, scale, dst);
        self.landed(&[n(dst)]);
    }
    fn dot_rows(&self, table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]) {
        self.note("dot_rows", &[n(table), n(rows), n(src)], &[n(out)]);
        self.inner.dot_rows(table, d, rows, src, out);
        self.landed(&[n(out)]);
    }
    fn adamw(
        &self,
        s: AdamStep,
        kind: &[u8],
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        self.note(
            "adamw",
            &[n(kind), n(p), n(g), n(m), n(v)],
            &[n(p), n(m), n(v)],
        );
        self.inner.adamw(s, kind, p, g, m, v);
        self.landed(&[n(p), n(m), n(v)]);
    }
    fn sum_squares(&self, x: &[T], segments: &[Range<usize>], out: &mut [f64]) {
        // The segment table goes up as (start, end) pairs of 64-bit integers, from where the
        // caller keeps it: a table kept from step to step is held.
        let table: Vec<u64> = segments
            .iter()
            .flat_map(|r| [r.start as u64, r.end as u64])
            .collect();
        let segs = Span {
            addr: segments.as_ptr() as usize,
            bytes: size_of_val(&table[..]) as u64,
            data: bytemuck::cast_slice(&table),
        };
        self.note("sum_squares", &[n(x), segs], &[n(out)]);
        self.inner.sum_squares(x, segments, out);
        self.landed(&[n(out)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn counts_each_call_and_the_bytes_both_ways() {
        let m = Metered::new(&Cpu as &dyn Backend<f32>);
        let (a, bm) = (vec![1.0f32; 6], vec![1.0f32; 12]);
        let mut c = vec![0.0f32; 8];
        // C [2, 4] = A [2, 3] · Bᵀ, B [4, 3]; then accumulated: C goes up too.
        m.matmul(MatMul::linear(2, 4, 3), &a, &bm, &mut c);
        assert_eq!(c, vec![3.0; 8]);
        let acc = MatMul {
            accumulate: true,
            ..MatMul::linear(2, 4, 3)
        };
        m.matmul(acc, &a, &bm, &mut c);
        assert_eq!(c, vec![6.0; 8]);
        let (x, w) = (vec![1.0f32; 8], vec![1.0f32; 4]);
        let (mut y, mut r) = (vec![0.0f32; 8], vec![0.0f32; 2]);
        m.rmsnorm_fwd(&x, &w, 1e-6, &mut y, &mut r);
        let t = m.traffic();
        assert_eq!(
            t["matmul"],
            Traffic {
                calls: 2,
                to_device: (6 + 12) * 4 * 2 + 8 * 4,
                to_host: 8 * 4 * 2,
            }
        );
        assert_eq!(
            t["rmsnorm_fwd"],
            Traffic {
                calls: 1,
                to_device: (8 + 4) * 4,
                to_host: (8 + 2) * 4,
            }
        );
        assert_eq!(m.total().calls, 3);
        m.reset();
        assert_eq!(m.total(), Traffic::default());
    }

    /// The slices inside the one range [`REACHED`] holds are taken by address.
    static REACHED: Mutex<Range<u64>> = Mutex::new(0..0);

    fn reached(p: u64, bytes: usize) -> bool {
        let r = REACHED.lock().unwrap().clone();
        r.start <= p && p + bytes as u64 <= r.end
    }

    #[test]
    fn a_backend_reaching_some_slices_copies_the_others_only() {
        let big = vec![1.0f32; 64];
        let r = big.as_ptr() as u64;
        *REACHED.lock().unwrap() = r..r + 64 * 4;
        let m = Metered::new(&Cpu as &dyn Backend<f32>).reaching(reached);
        // x reached (a part of `big`), w copied up; y copied back, rstd too.
        let w = vec![1.0f32; 4];
        let (mut y, mut rstd) = (vec![0.0f32; 8], vec![0.0f32; 2]);
        m.rmsnorm_fwd(&big[8..16], &w, 1e-6, &mut y, &mut rstd);
        // Everything reached: no call copies.
        let mut inside = big.clone();
        *REACHED.lock().unwrap() = {
            let r = inside.as_ptr() as u64;
            r..r + 64 * 4
        };
        let (x, rest) = inside.split_at_mut(8);
        let (yy, rest) = rest.split_at_mut(8);
        // Twice in a deferred scope (which `Metered` opens itself to count its waits).
        assert!(m.begin_deferred());
        m.swiglu_fwd(x, &rest[..8], yy);
        m.swiglu_fwd(x, &rest[..8], yy);
        assert_eq!(m.settle(), 0);
        let p = m.partial().expect("reaching");
        assert_eq!(
            p,
            Partial {
                calls: 1,
                copies: 3,
                to_device: 4 * 4,
                to_host: (8 + 2) * 4,
                // Each output: y and rstd copied back, yy twice by address.
                waits: 4,
                // Deferred: the copies back, and the scope's end once.
                waits_deferred: 3,
            }
        );
        m.reset();
        assert_eq!(m.partial(), Some(Partial::default()));
    }

    #[test]
    fn bytes_are_split_by_the_region_their_slice_lies_in() {
        // A weight inside "parameters", its gradient accumulated inside "gradients".
        let params = vec![1.0f32; 20];
        let mut grads = vec![0.0f32; 20];
        let m = Metered::new(&Cpu as &dyn Backend<f32>)
            .region("parameters", &params)
            .region("gradients", &grads);
        let x = vec![1.0f32; 6];
        let mut y = vec![0.0f32; 8];
        // y [2, 4] = x [2, 3] · Wᵀ, W = params[4..16] as [4, 3].
        m.matmul(MatMul::linear(2, 4, 3), &x, &params[4..16], &mut y);
        // dW [4, 3] += yᵀ · x, into grads[8..20].
        let wgrad = MatMul {
            ta: true,
            accumulate: true,
            ..MatMul::linear(4, 3, 2)
        };
        m.matmul(wgrad, &y, &x, &mut grads[8..20]);
        assert_eq!(grads[8], 6.0);
        let k = m.by_kind();
        assert_eq!(
            k["parameters"],
            Traffic {
                calls: 1,
                to_device: 48,
                to_host: 0
            }
        );
        assert_eq!(
            k["gradients"],
            Traffic {
                calls: 2,
                to_device: 48,
                to_host: 48
            }
        );
        assert_eq!(
            k[ACTIVATIONS],
            Traffic {
                calls: 4,
                to_device: (6 + 8 + 6) * 4,
                to_host: 8 * 4,
            }
        );
        let t = m.total();
        assert_eq!(t.to_device, k.values().map(|v| v.to_device).sum::<u64>());
    }

    #[test]
    fn under_residency_only_what_the_host_wrote_is_copied() {
        let params = vec![0.5f32; 12];
        let m = Metered::new(&Cpu as &dyn Backend<f32>)
            .resident()
            .region("parameters", &params);
        let x = vec![1.0f32; 6];
        let mut y = vec![0.0f32; 8];
        // y [2, 4] = x [2, 3] · Wᵀ: x is the host's (copied), W is held, y is the device's.
        m.matmul(MatMul::linear(2, 4, 3), &x, &params, &mut y);
        let (w, mut z, mut r) = (vec![1.0f32; 4], vec![0.0f32; 8], vec![0.0f32; 2]);
        // RMSNorm of y: y is held; w is the host's.
        m.rmsnorm_fwd(&y, &w, 1e-6, &mut z, &mut r);
        let res = m.residency().unwrap();
        assert_eq!(res.ops["matmul"].to_device, 6 * 4);
        assert_eq!(res.ops["rmsnorm_fwd"].to_device, 4 * 4);
        // The host adds into y: it is copied again; z (held) is not.
        y[3] += 1.0;
        m.rmsnorm_fwd(&y, &w, 1e-6, &mut z, &mut r);
        m.rmsnorm_fwd(&z, &w, 1e-6, &mut y, &mut r);
        let res = m.residency().unwrap();
        assert_eq!(res.ops["rmsnorm_fwd"].to_device, 4 * 4 + 8 * 4);
        assert_eq!(res.ops["rmsnorm_fwd"].calls, 2);
        assert_eq!(res.by_kind.get("parameters"), None);
        assert_eq!(res.to_device(), 6 * 4 + 4 * 4 + 8 * 4);
        assert_eq!(res.edge, 0);
        // The copying seam's counts are unchanged by the residency model.
        assert_eq!(m.traffic()["rmsnorm_fwd"].calls, 3);
    }

    #[test]
    fn tensors_held_inside_a_region_are_not_page_edges() {
        let params = vec![0.5f32; 5000];
        let x = vec![1.0f32; 2 * 40];
        let run = |m: &Metered<'_, f32>| {
            let mut y = vec![0.0f32; 2 * 50];
            // y [2, 50] = x [2, 40] · Wᵀ with W = params[1000..3000] as [50, 40].
            m.matmul(MatMul::linear(2, 50, 40), &x, &params[1000..3000], &mut y);
            m.residency().unwrap()
        };
        let whole = Metered::new(&Cpu as &dyn Backend<f32>)
            .resident()
            .region("parameters", &params);
        let r = run(&whole);
        let up = r.by_kind["parameters"].to_device;
        assert!(up > 0 && up == r.edge, "{r:?}");
        let parts = Metered::new(&Cpu as &dyn Backend<f32>)
            .resident()
            .region("parameters", &params)
            .holding(&params, [0..1000, 1000..3000, 3000..5000]);
        let r = run(&parts);
        assert_eq!(r.by_kind.get("parameters"), None);
        assert_eq!(r.edge, 0);
    }
}
