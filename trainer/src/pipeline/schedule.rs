//! Pipeline schedules as data, and a simulator that runs them.
//!
//! A schedule is, per rank, the ordered list of what it computes: forward chunks (F), backward
//! chunks that compute the input gradient only (B, their weight gradient deferred to a later W)
//! or both (B with `full`), weight-gradient chunks (W), and DualPipe's overlapped pair of a
//! forward and a backward of two micro-batches (F&B). Each op names its micro-batch and its
//! direction: 0 for micro-batches that enter at rank 0, 1 for those that enter at the last rank
//! (DualPipe feeds the pipeline from both ends; every rank holds a stage of each direction).
//!
//! - **1F1B**: P ranks, one stage each; warm-up of P − 1 − r forwards, then one forward one
//!   backward, then the remaining backwards.
//! - **DualPipe** (DeepSeek-V3, §3.2.1): P even, N micro-batches (N even, ≥ 2P), half from each
//!   end; rank r holds stage r of direction 0 and stage P − 1 − r of direction 1. Built in the
//!   eight steps of deepseek-ai/DualPipe: nF0, nF0F1, nB1W1F1, the main nF0B1F1B0 with the
//!   forward of one micro-batch overlapped with the backward of another, nB1F1B0, nB1B0 (the
//!   second half with deferred W), nWB0, nW. Phases 0/1 are the two directions, swapped on the
//!   second half of the ranks.
//!
//! - **DualPipeV**: DualPipe cut in half — P ranks hold 2P stages in a V (rank r: stages r and
//!   2P − 1 − r), every micro-batch entering at rank 0 and leaving there; the same eight steps
//!   with P ranks on one side of the turn.
//!
//! [`simulate`] runs a schedule with given op times: an op starts when its rank is free and its
//! inputs are there (the previous stage's forward, the next stage's backward, the own forward;
//! W after its B), and reports each rank's busy time and the pipeline's makespan. The bubble of
//! a rank is the makespan minus its busy time. Tests check the simulated bubbles against the
//! DeepSeek-V3 report's formulas (Table 2): 1F1B (P−1)(F+B), DualPipe (P/2−1)(F&B+B−3W), with B
//! a full backward and W its weight part; DualPipeV matches DualPipe's with PP = its 2P stages.

use std::fmt::Write;

/// What an op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Forward.
    F,
    /// Backward: input gradient, and the weight gradient too when `full`.
    B {
        /// Weight gradient computed here too (else a W follows).
        full: bool,
    },
    /// The deferred weight gradient of the oldest split B.
    W,
}

/// One chunk of work: a stage's op on one micro-batch of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// What it computes.
    pub kind: Kind,
    /// 0: micro-batches entering at rank 0; 1: entering at the last rank.
    pub dir: u8,
    /// The micro-batch, counted within its direction.
    pub micro: usize,
}

/// A rank's step: one chunk, or DualPipe's forward and backward of two micro-batches
/// overlapped (each one's communication hidden behind the other's compute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// One chunk.
    One(Chunk),
    /// A forward and a (full) backward, overlapped.
    Pair(Chunk, Chunk),
}

/// The schedules (`[parallel] schedule = "1f1b" | "dualpipe" | "dualpipev"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// One forward, one backward.
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// DeepSeek-V3's bidirectional schedule.
    DualPipe,
    /// DualPipe cut in half: P ranks hold 2P stages in a V (rank r stages r and 2P − 1 − r),
    /// every micro-batch entering at rank 0.
    DualPipeV,
}

/// A schedule's plan: per rank, its ops in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The schedule it follows (its stage topology).
    pub schedule: Schedule,
    /// Per rank, its ops in order.
    pub ops: Vec<Vec<Op>>,
}

impl Plan {
    /// Ranks.
    pub fn ranks(&self) -> usize {
        self.ops.len()
    }

    /// Where an op of direction `dir` on rank `r` sits: (its stream of micro-batches, its
    /// stage in that stream, the stream's stages). DualPipe has two streams of P stages, one
    /// entering at each end; DualPipeV one stream of 2P stages going down the ranks and back.
    pub fn place(&self, dir: u8, r: usize) -> (u8, usize, usize) {
        let p = self.ranks();
        match (self.schedule, dir) {
            (Schedule::OneFOneB, _) => (0, r, p),
            (Schedule::DualPipe, 0) => (0, r, p),
            (Schedule::DualPipe, _) => (1, p - 1 - r, p),
            (Schedule::DualPipeV, 0) => (0, r, 2 * p),
            (Schedule::DualPipeV, _) => (0, 2 * p - 1 - r, 2 * p),
        }
    }
}

/// The plan of `schedule` for `ranks` ranks and `micro` micro-batches (in all, both
/// directions for DualPipe).
pub fn plan(schedule: Schedule, ranks: usize, micro: usize) -> Result<Plan, String> {
    let ops = match schedule {
        Schedule::OneFOneB => one_f_one_b(ranks, micro),
        Schedule::DualPipe => dualpipe(ranks, micro),
        Schedule::DualPipeV => dualpipe_v(ranks, micro),
    }?;
    Ok(Plan { schedule, ops })
}

fn f(dir: u8, micro: usize) -> Chunk {
    Chunk {
        kind: Kind::F,
        dir,
        micro,
    }
}

fn b(dir: u8, micro: usize, full: bool) -> Chunk {
    Chunk {
        kind: Kind::B { full },
        dir,
        micro,
    }
}

fn one_f_one_b(p: usize, m: usize) -> Result<Vec<Vec<Op>>, String> {
    if p == 0 || m == 0 {
        return Err("1F1B needs at least one rank and one micro-batch".into());
    }
    Ok((0..p)
        .map(|r| {
            let warm = (p - 1 - r).min(m);
            let mut ops: Vec<Op> = (0..warm).map(|i| Op::One(f(0, i))).collect();
            for i in 0..m - warm {
                ops.push(Op::One(f(0, warm + i)));
                ops.push(Op::One(b(0, i, true)));
            }
            for i in m - warm..m {
                ops.push(Op::One(b(0, i, true)));
            }
            ops
        })
        .collect())
}

/// Builds one rank's DualPipe list by replaying the eight steps with counters per phase.
struct DualBuilder {
    flip: u8,
    next_f: [usize; 2],
    next_b: [usize; 2],
    deferred: std::collections::VecDeque<Chunk>,
    ops: Vec<Op>,
}

impl DualBuilder {
    fn dir(&self, phase: u8) -> u8 {
        phase ^ self.flip
    }
    fn take_f(&mut self, phase: u8) -> Chunk {
        let d = self.dir(phase);
        let c = f(d, self.next_f[d as usize]);
        self.next_f[d as usize] += 1;
        c
    }
    fn take_b(&mut self, phase: u8, zero_bubble: bool) -> Chunk {
        let d = self.dir(phase);
        let c = b(d, self.next_b[d as usize], !zero_bubble);
        self.next_b[d as usize] += 1;
        if zero_bubble {
            self.deferred.push_back(Chunk { kind: Kind::W, ..c });
        }
        c
    }
    fn fwd(&mut self, phase: u8) {
        let c = self.take_f(phase);
        self.ops.push(Op::One(c));
    }
    fn bwd(&mut self, phase: u8, zero_bubble: bool) {
        let c = self.take_b(phase, zero_bubble);
        self.ops.push(Op::One(c));
    }
    fn weight(&mut self) {
        let w = self
            .deferred
            .pop_front()
            .expect("a deferred weight gradient");
        self.ops.push(Op::One(w));
    }
    fn pair(&mut self, f_phase: u8, b_phase: u8) {
        let fc = self.take_f(f_phase);
        let bc = self.take_b(b_phase, false);
        self.ops.push(Op::Pair(fc, bc));
    }
}

fn dualpipe(p: usize, n: usize) -> Result<Vec<Vec<Op>>, String> {
    if p < 2 || !p.is_multiple_of(2) {
        return Err(format!("DualPipe needs an even number of ranks (got {p})"));
    }
    if !n.is_multiple_of(2) || n < 2 * p {
        return Err(format!(
            "DualPipe on {p} ranks needs an even number of micro-batches, at least {} (got {n})",
            2 * p
        ));
    }
    let half = p / 2;
    Ok((0..p)
        .map(|r| {
            let h = r.min(p - 1 - r);
            // Phases 0/1 are the two directions, swapped on the second half of the ranks.
            eight_steps(u8::from(r >= half), half, h, n / 2, h == half - 1)
        })
        .collect())
}

fn dualpipe_v(p: usize, n: usize) -> Result<Vec<Vec<Op>>, String> {
    if p == 0 || n < 2 * p {
        return Err(format!(
            "DualPipeV on {p} ranks needs at least {} micro-batches (got {n})",
            2 * p
        ));
    }
    // Phase 0: going down (stage r), phase 1: coming back (stage 2P − 1 − r); the turn is at
    // the last rank.
    Ok((0..p)
        .map(|r| eight_steps(0, p, r, n, r == p - 1))
        .collect())
}

/// The eight steps of deepseek-ai/DualPipe for one rank, as counts: `width` ranks on each side
/// of the turn (DualPipe: P/2; DualPipeV: P), `h` this rank's distance from the edge,
/// `per_phase` micro-batches through each of its two stages, `turn` whether it is next to the
/// turn (its first F0 and B1 are not overlapped).
fn eight_steps(flip: u8, width: usize, h: usize, per_phase: usize, turn: bool) -> Vec<Op> {
    let mut x = DualBuilder {
        flip,
        next_f: [0; 2],
        next_b: [0; 2],
        deferred: Default::default(),
        ops: Vec::new(),
    };
    // 1: nF0
    for _ in 0..(width - h - 1) * 2 {
        x.fwd(0);
    }
    // 2: nF0F1
    for _ in 0..h + 1 {
        x.fwd(0);
        x.fwd(1);
    }
    // 3: nB1W1F1 (zero bubble)
    for _ in 0..width - h - 1 {
        x.bwd(1, true);
        x.weight();
        x.fwd(1);
    }
    // 4: nF0B1F1B0, the main step
    for i in 0..per_phase + h + 1 - 2 * width {
        if i == 0 && turn {
            x.fwd(0);
            x.bwd(1, false);
        } else {
            x.pair(0, 1);
        }
        x.pair(1, 0);
    }
    // 5: nB1F1B0
    for _ in 0..width - h - 1 {
        x.bwd(1, false);
        x.pair(1, 0);
    }
    // 6: nB1B0, the second half with deferred weight gradients
    let (mut zb, steps) = (false, h + 1);
    let switch = steps / 2;
    for i in 0..steps {
        if i == switch && h % 2 == 1 {
            zb = true;
        }
        x.bwd(1, zb);
        if i == switch && h.is_multiple_of(2) {
            zb = true;
        }
        x.bwd(0, zb);
    }
    // 7: nWB0
    for _ in 0..width - h - 1 {
        x.weight();
        x.bwd(0, true);
    }
    // 8: nW
    while !x.deferred.is_empty() {
        x.weight();
    }
    x.ops
}

/// The time each kind of op takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Times {
    /// A forward chunk.
    pub f: f64,
    /// A full backward chunk (input and weight gradients).
    pub b: f64,
    /// The weight-gradient part of a backward.
    pub w: f64,
    /// A forward and a full backward overlapped.
    pub fb: f64,
}

impl Times {
    fn of(&self, op: &Op) -> f64 {
        match op {
            Op::Pair(..) => self.fb,
            Op::One(c) => match c.kind {
                Kind::F => self.f,
                Kind::B { full: true } => self.b,
                Kind::B { full: false } => self.b - self.w,
                Kind::W => self.w,
            },
        }
    }
}

/// A simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// Per rank, per op: (start, end).
    pub spans: Vec<Vec<(f64, f64)>>,
    /// When the last op ends.
    pub makespan: f64,
    /// Per rank: time spent computing.
    pub busy: Vec<f64>,
    /// Per rank: the most micro-batches whose activations it holds at once (forwards done whose
    /// backward has not run), counted per stage-pass.
    pub peak_activations: Vec<usize>,
}

impl Simulation {
    /// Per rank: idle time between time 0 and the end of the run.
    pub fn bubbles(&self) -> Vec<f64> {
        self.busy.iter().map(|b| self.makespan - b).collect()
    }
}

/// Runs `plan` with `times`: ops in each rank's order, each as soon as its inputs are there.
/// An error names a deadlock (a plan whose ops wait on each other).
pub fn simulate(plan: &Plan, times: Times) -> Result<Simulation, String> {
    use std::collections::HashMap;
    let p = plan.ranks();
    let plan_ops = &plan.ops;
    // When (stream, stage, micro) finished its forward / its backward's input gradient.
    let mut f_done: HashMap<(u8, usize, usize), f64> = HashMap::new();
    let mut b_done: HashMap<(u8, usize, usize), f64> = HashMap::new();
    let mut next = vec![0usize; p];
    let mut free = vec![0f64; p];
    let mut spans = vec![Vec::new(); p];
    let mut busy = vec![0f64; p];
    let mut live = vec![0usize; p];
    let mut peak = vec![0usize; p];
    let total: usize = plan_ops.iter().map(Vec::len).sum();
    let mut done = 0;
    let ready = |c: &Chunk, r: usize, f_done: &HashMap<_, f64>, b_done: &HashMap<_, f64>| {
        let (st, s, stages) = plan.place(c.dir, r);
        match c.kind {
            Kind::F if s == 0 => Some(0.0),
            Kind::F => f_done.get(&(st, s - 1, c.micro)).copied(),
            Kind::B { .. } => {
                let own = f_done.get(&(st, s, c.micro)).copied()?;
                if s == stages - 1 {
                    Some(own)
                } else {
                    b_done.get(&(st, s + 1, c.micro)).map(|t| t.max(own))
                }
            }
            Kind::W => b_done.get(&(st, s, c.micro)).copied(),
        }
    };
    while done < total {
        let mut progressed = false;
        for r in 0..p {
            while next[r] < plan_ops[r].len() {
                let op = plan_ops[r][next[r]];
                let chunks: Vec<Chunk> = match op {
                    Op::One(c) => vec![c],
                    Op::Pair(a, b) => vec![a, b],
                };
                let mut at = free[r];
                let mut ok = true;
                for c in &chunks {
                    match ready(c, r, &f_done, &b_done) {
                        Some(t) => at = at.max(t),
                        None => ok = false,
                    }
                }
                if !ok {
                    break;
                }
                let end = at + times.of(&op);
                for c in &chunks {
                    let (st, s, _) = plan.place(c.dir, r);
                    match c.kind {
                        Kind::F => {
                            f_done.insert((st, s, c.micro), end);
                            live[r] += 1;
                            peak[r] = peak[r].max(live[r]);
                        }
                        Kind::B { .. } => {
                            b_done.insert((st, s, c.micro), end);
                            live[r] -= 1;
                        }
                        Kind::W => {}
                    }
                }
                spans[r].push((at, end));
                busy[r] += times.of(&op);
                free[r] = end;
                next[r] += 1;
                done += 1;
                progressed = true;
            }
        }
        if !progressed {
            let stuck: Vec<String> = (0..p)
                .filter(|&r| next[r] < plan_ops[r].len())
                .map(|r| format!("rank {r} at {:?}", plan_ops[r][next[r]]))
                .collect();
            return Err(format!("deadlock: {}", stuck.join("; ")));
        }
    }
    let makespan = free.iter().copied().fold(0.0, f64::max);
    Ok(Simulation {
        spans,
        makespan,
        busy,
        peak_activations: peak,
    })
}

fn label(c: &Chunk) -> String {
    let k = match c.kind {
        Kind::F => "F",
        Kind::B { full: true } => "B",
        Kind::B { full: false } => "b",
        Kind::W => "W",
    };
    // Direction 1 (entering at the last rank) marked with a prime.
    format!("{k}{}{}", c.micro, if c.dir == 1 { "'" } else { "" })
}

/// The plan as a text grid: one row per rank, one cell per op in order, placed at its
/// simulated start (time units of the smallest op time).
pub fn grid(plan: &Plan, sim: &Simulation, unit: f64) -> String {
    let width = 7;
    let cols = (sim.makespan / unit).ceil() as usize;
    let mut s = String::new();
    for (r, ops) in plan.ops.iter().enumerate() {
        let mut row = vec![" ".repeat(width); cols];
        for (op, &(start, _)) in ops.iter().zip(&sim.spans[r]) {
            let text = match op {
                Op::One(c) => label(c),
                Op::Pair(a, b) => format!("{}{}", label(a), label(b)),
            };
            let col = (start / unit).round() as usize;
            if col < cols {
                row[col] = format!("{text:<width$}");
            }
        }
        let _ = writeln!(s, "rank {r:>2} |{}", row.concat().trim_end());
    }
    s
}

/// The plan as an SVG: ranks down, time across, a box per op (forward blue, backward green,
/// split backward light green, weight grey, overlapped pair purple; direction 1 hatched darker).
pub fn svg(plan: &Plan, sim: &Simulation, title: &str) -> String {
    let (left, top, row_h) = (70.0, 40.0, 28.0);
    let scale = 900.0 / sim.makespan.max(1e-9);
    let h = top + row_h * plan.ranks() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"10\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"22\" font-size=\"14\">{title}</text>\n",
        left + 920.0
    );
    for (r, ops) in plan.ops.iter().enumerate() {
        let y = top + row_h * r as f64;
        let _ = write!(
            s,
            "<text x=\"10\" y=\"{:.1}\">rank {r}</text>",
            y + row_h * 0.6
        );
        for (op, &(a, b)) in ops.iter().zip(&sim.spans[r]) {
            let (fill, text) = match op {
                Op::Pair(x, y) => ("#9467bd", format!("{}{}", label(x), label(y))),
                Op::One(c) => (
                    match (c.kind, c.dir) {
                        (Kind::F, 0) => "#1f77b4",
                        (Kind::F, _) => "#0b3d66",
                        (Kind::B { full: true }, 0) => "#2ca02c",
                        (Kind::B { full: true }, _) => "#145214",
                        (Kind::B { full: false }, _) => "#98df8a",
                        (Kind::W, _) => "#aaaaaa",
                    },
                    label(c),
                ),
            };
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"white\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"white\">{text}</text>",
                left + a * scale,
                (b - a) * scale,
                row_h - 4.0,
                left + a * scale + 2.0,
                y + row_h * 0.6
            );
        }
        s.push('\n');
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(plan: &Plan, pred: impl Fn(&Chunk) -> bool) -> Vec<usize> {
        plan.ops
            .iter()
            .map(|ops| {
                ops.iter()
                    .map(|op| match op {
                        Op::One(c) => usize::from(pred(c)),
                        Op::Pair(a, b) => usize::from(pred(a)) + usize::from(pred(b)),
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn every_rank_does_every_micro_batch_once_per_stage() {
        for (p, n) in [(2, 4), (4, 8), (4, 12), (8, 16), (8, 20)] {
            let plan = plan(Schedule::DualPipe, p, n).unwrap();
            assert_eq!(
                count(&plan, |c| c.kind == Kind::F),
                vec![n; p],
                "F, p {p} n {n}"
            );
            assert_eq!(
                count(&plan, |c| matches!(c.kind, Kind::B { .. })),
                vec![n; p]
            );
            // every split backward has its W
            let split = count(&plan, |c| c.kind == Kind::B { full: false });
            assert_eq!(count(&plan, |c| c.kind == Kind::W), split);
            simulate(
                &plan,
                Times {
                    f: 1.0,
                    b: 2.0,
                    w: 1.0,
                    fb: 3.0,
                },
            )
            .unwrap();
        }
        let plan = plan(Schedule::OneFOneB, 4, 8).unwrap();
        assert_eq!(count(&plan, |c| c.kind == Kind::F), vec![8; 4]);
    }

    #[test]
    fn one_f_one_b_bubble_is_the_reports_formula() {
        for (p, m) in [(2, 4), (4, 8), (8, 16), (8, 8)] {
            for t in [
                Times {
                    f: 1.0,
                    b: 2.0,
                    w: 1.0,
                    fb: 3.0,
                },
                Times {
                    f: 3.0,
                    b: 5.0,
                    w: 2.0,
                    fb: 7.0,
                },
            ] {
                let sim = simulate(&plan(Schedule::OneFOneB, p, m).unwrap(), t).unwrap();
                let want = (p - 1) as f64 * (t.f + t.b);
                let got = sim.bubbles().into_iter().fold(0.0, f64::max);
                assert_eq!(got, want, "p {p} m {m} {t:?}");
                // activations: rank 0 holds P micro-batches at once
                assert_eq!(sim.peak_activations[0], p.min(m));
            }
        }
    }

    #[test]
    fn dualpipe_bubble_and_activations_are_the_reports_formulas() {
        let t = |f, b, w, fb| Times { f, b, w, fb };
        for (p, n) in [(2, 4), (4, 8), (4, 16), (8, 16), (8, 32)] {
            // The formula holds exactly when a forward takes as long as an input-gradient
            // backward (F = B − W), as the report's derivation assumes; the pair never takes
            // less than its backward alone (F&B ≥ B).
            for t in [
                t(1.0, 2.0, 1.0, 3.0),
                t(2.0, 3.0, 1.0, 4.0),
                t(2.0, 3.0, 1.0, 3.0),
                t(3.0, 5.0, 2.0, 6.5),
            ] {
                let sim = simulate(&plan(Schedule::DualPipe, p, n).unwrap(), t).unwrap();
                let want = (p / 2 - 1) as f64 * (t.fb + t.b - 3.0 * t.w);
                let got = sim.bubbles().into_iter().fold(0.0, f64::max);
                assert_eq!(got, want, "p {p} n {n} {t:?}");
                // Each rank holds P + 1 micro-batches' activations at most (1F1B: P).
                assert_eq!(sim.peak_activations, vec![p + 1; p], "p {p} n {n}");
            }
            // A forward shorter than an input-gradient backward: the formula bounds it.
            let t = t(2.0, 4.0, 1.0, 5.0);
            let sim = simulate(&plan(Schedule::DualPipe, p, n).unwrap(), t).unwrap();
            let bound = (p / 2 - 1) as f64 * (t.fb + t.b - 3.0 * t.w);
            assert!(sim.bubbles().iter().all(|&x| x <= bound), "p {p} n {n}");
        }
    }

    #[test]
    fn dualpipe_v_runs_every_micro_batch_through_both_stages() {
        let t = |f, b, w, fb| Times { f, b, w, fb };
        for (p, n) in [(2, 4), (4, 8), (4, 12), (8, 16)] {
            let plan = plan(Schedule::DualPipeV, p, n).unwrap();
            assert_eq!(count(&plan, |c| c.kind == Kind::F), vec![2 * n; p]);
            assert_eq!(
                count(&plan, |c| matches!(c.kind, Kind::B { .. })),
                vec![2 * n; p]
            );
            // DualPipe's formulas with PP = the 2P stages: bubble (P − 1)(F&B + B − 3W),
            // activations 2P + 1 on every rank.
            for t in [t(1.0, 2.0, 1.0, 3.0), t(2.0, 3.0, 1.0, 4.0)] {
                let sim = simulate(&plan, t).unwrap();
                let want = (p - 1) as f64 * (t.fb + t.b - 3.0 * t.w);
                let got = sim.bubbles().into_iter().fold(0.0, f64::max);
                assert_eq!(got, want, "p {p} n {n} {t:?}");
                assert_eq!(sim.peak_activations, vec![2 * p + 1; p]);
            }
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        assert!(
            plan(Schedule::DualPipe, 3, 8)
                .unwrap_err()
                .contains("even number of ranks")
        );
        assert!(
            plan(Schedule::DualPipe, 4, 6)
                .unwrap_err()
                .contains("at least 8")
        );
        assert!(
            plan(Schedule::DualPipe, 4, 9)
                .unwrap_err()
                .contains("even number of micro-batches")
        );
    }
}
