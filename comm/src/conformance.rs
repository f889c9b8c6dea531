//! Conformance checks for any [`Communicator`]: each collective against a reference built
//! from an all-gather of what every rank holds (so the reference shares no code path with the
//! operation under test), on random counts with zeros, blocking and overlapped, in the world
//! and in split groups.
//!
//! Every rank calls [`run`] with the same seed; each check returns `Err` with what differed.

use crate::Communicator;
use crate::collectives::{Collectives, chunk_range};
use crate::error::Result;

/// A check's name and its outcome (`Err`: what differed).
pub type Outcome = (String, std::result::Result<(), String>);

/// SplitMix64: every rank derives the same numbers from the same seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many elements rank `src` sends to rank `dst` in round `round`: 0 about a third of
/// the time, else 1..=max.
fn count(seed: u64, round: u64, src: usize, dst: usize, max: u64) -> usize {
    let h = mix(seed ^ mix(round ^ mix(((src as u64) << 32) | dst as u64)));
    if h.is_multiple_of(3) {
        0
    } else {
        (1 + (h >> 8) % max) as usize
    }
}

/// The value of element `i` that `src` sends to `dst`.
fn value(src: usize, dst: usize, i: usize) -> f32 {
    (src * 1_000_000 + dst * 1_000 + i) as f32 + 0.25
}

fn expect<T: PartialEq + std::fmt::Debug>(
    got: &T,
    want: &T,
    what: &str,
) -> std::result::Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// All-to-all-v on `comm`, blocking or with work overlapped, against the gather reference.
fn all_to_all_v(
    comm: &dyn Communicator,
    seed: u64,
    round: u64,
    overlapped: bool,
) -> Result<std::result::Result<(), String>> {
    let (p, me) = (comm.size(), comm.rank());
    let send_counts: Vec<usize> = (0..p).map(|j| count(seed, round, me, j, 7)).collect();
    let send: Vec<f32> = (0..p)
        .flat_map(|j| (0..send_counts[j]).map(move |i| value(me, j, i)))
        .collect();
    // The counts exchange is itself under test: compare it with the counts every rank can derive.
    let got_counts =
        comm.all_to_all_counts(&send_counts.iter().map(|&c| c as u64).collect::<Vec<_>>())?;
    let recv_counts: Vec<usize> = (0..p).map(|i| count(seed, round, i, me, 7)).collect();
    if let Err(e) = expect(
        &got_counts,
        &recv_counts.iter().map(|&c| c as u64).collect(),
        "all-to-all counts",
    ) {
        return Ok(Err(e));
    }
    let mut ticks = 0u64;
    let got = if overlapped {
        comm.all_to_all_v_with(&send, &send_counts, &recv_counts, &mut || {
            // Work that runs while the exchange is in flight.
            ticks = (0..10_000u64).fold(ticks, |a, x| a.wrapping_add(mix(x)));
            ticks |= 1;
        })?
    } else {
        comm.all_to_all_v(&send, &send_counts, &recv_counts)?
    };
    if overlapped && ticks == 0 {
        return Ok(Err("the overlapped work did not run".into()));
    }
    // Reference: every rank's whole send buffer, gathered, cut by the known counts.
    let (all, lens) = comm.all_gather_v(&send)?;
    let mut want = Vec::new();
    let mut at = 0;
    for (src, &len) in lens.iter().enumerate() {
        let counts: Vec<usize> = (0..p).map(|j| count(seed, round, src, j, 7)).collect();
        let off: usize = counts[..me].iter().sum();
        want.extend_from_slice(&all[at + off..at + off + counts[me]]);
        at += len;
    }
    Ok(expect(&got, &want, "all-to-all-v"))
}

fn reductions(comm: &dyn Communicator, seed: u64) -> Result<std::result::Result<(), String>> {
    let (p, me) = (comm.size(), comm.rank());
    let n = 37;
    let mine: Vec<f64> = (0..n)
        .map(|i| (mix(seed ^ (me * 100 + i) as u64) % 1000) as f64 / 8.0)
        .collect();
    let (all, _) = comm.all_gather_v(&mine)?;
    let mut want = vec![0.0f64; n];
    for r in 0..p {
        for i in 0..n {
            want[i] += all[r * n + i];
        }
    }
    let mut got = mine.clone();
    comm.all_reduce_sum(&mut got)?;
    if let Err(e) = expect(&got, &want, "all-reduce") {
        return Ok(Err(e));
    }
    let rs = comm.reduce_scatter_sum(&mine)?;
    if let Err(e) = expect(&rs, &want[chunk_range(n, p, me)].to_vec(), "reduce-scatter") {
        return Ok(Err(e));
    }
    let mut b = if me == p - 1 {
        vec![7u32, 8, 9]
    } else {
        vec![0u32; 3]
    };
    comm.broadcast(p - 1, &mut b)?;
    Ok(expect(&b, &vec![7u32, 8, 9], "broadcast"))
}

fn ring(comm: &dyn Communicator) -> Result<std::result::Result<(), String>> {
    let (p, me) = (comm.size(), comm.rank());
    if p == 1 {
        return Ok(Ok(()));
    }
    let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
    let msg: Vec<u32> = (0..(me + 1) * 1000).map(|i| i as u32 ^ me as u32).collect();
    let got: Vec<u32> = comm.send_recv(next, &msg, prev, 3)?;
    let want: Vec<u32> = (0..(prev + 1) * 1000)
        .map(|i| i as u32 ^ prev as u32)
        .collect();
    if let Err(e) = expect(&got.len(), &want.len(), "send-receive length").and(expect(
        &got,
        &want,
        "send-receive",
    )) {
        return Ok(Err(e));
    }
    // Plain send/receive: even ranks send first, odd ranks receive first (no deadlock).
    let small = vec![me as u64; 4];
    let got: Vec<u64> = if me % 2 == 0 {
        if next != me {
            comm.send(next, 4, &small)?;
        }
        comm.recv(prev, 4)?
    } else {
        let r = comm.recv(prev, 4)?;
        comm.send(next, 4, &small)?;
        r
    };
    Ok(expect(&got, &vec![prev as u64; 4], "send/receive"))
}

/// Runs every check on `comm` (the world) and on groups split from it; every rank must call
/// it with the same `seed`.
pub fn run(comm: &dyn Communicator, seed: u64) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for round in 0..4 {
        out.push((
            format!("all-to-all-v blocking #{round}"),
            all_to_all_v(comm, seed, round, false)?,
        ));
        out.push((
            format!("all-to-all-v overlapped #{round}"),
            all_to_all_v(comm, seed, round + 100, true)?,
        ));
    }
    out.push(("reductions and broadcast".into(), reductions(comm, seed)?));
    out.push(("point-to-point ring".into(), ring(comm)?));
    // Groups: even and odd ranks, ordered in reverse by key.
    let (p, me) = (comm.size(), comm.rank());
    let g = comm.split(me % 2, p - me)?;
    let want_size = (0..p).filter(|r| r % 2 == me % 2).count();
    let order = (0..p).filter(|r| r % 2 == me % 2 && *r > me).count();
    out.push((
        "split: group size and rank by key".into(),
        expect(&(g.size(), g.rank()), &(want_size, order), "split"),
    ));
    for round in 0..2 {
        out.push((
            format!("group all-to-all-v #{round}"),
            all_to_all_v(g.as_ref(), seed ^ 0xABCD, round, round == 1)?,
        ));
    }
    out.push((
        "group reductions".into(),
        reductions(g.as_ref(), seed ^ 0x1234)?,
    ));
    out.push(("group ring".into(), ring(g.as_ref())?));
    comm.barrier()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn solo_passes_every_check() {
        let out = super::run(&crate::Solo, 7).unwrap();
        assert!(out.len() > 10);
        for (name, r) in out {
            assert!(r.is_ok(), "{name}: {r:?}");
        }
    }
}
