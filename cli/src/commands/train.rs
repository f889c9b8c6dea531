//! `tokenmill train --config train.toml [--resume]`.

use std::path::PathBuf;
use std::sync::Arc;

use tokenmill_comm::Communicator;

use tokenmill_pipelines::train::{read_config, timeline_path, train_in, train_with_timeline};
use tokenmill_trainer::parallel::Transport;

/// `tokenmill train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The training TOML ([model], [data], [lr], [train], ...; see docs/trainer.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar; evaluation lines and warnings only.
    #[arg(long)]
    pub quiet: bool,
    /// Record each rank's compute and communication spans as a Chrome/Perfetto trace
    /// (RUN/timeline/rank-N.json) and print how much of the communication time had compute
    /// running beside it.
    #[arg(long)]
    pub timeline: bool,
}

/// The world when this process was started by a launcher (`mpirun`, `srun`): MPI's, or NCCL
/// over the GPUs bootstrapped on it (`[parallel] transport`).
#[cfg(feature = "mpi")]
fn world(transport: Transport) -> anyhow::Result<Option<Arc<dyn Communicator>>> {
    if !tokenmill_comm::launched() {
        return Ok(None);
    }
    let mpi = tokenmill_comm::MpiComm::world()?;
    let w: Arc<dyn Communicator> = match transport {
        Transport::Mpi => Arc::new(mpi),
        Transport::Nccl => nccl_world(mpi)?,
    };
    Ok(Some(w))
}

/// NCCL over the ranks of `mpi`, each rank on its node's GPU of its local rank.
#[cfg(all(feature = "mpi", feature = "nccl"))]
fn nccl_world(mpi: tokenmill_comm::MpiComm) -> anyhow::Result<Arc<dyn Communicator>> {
    let gpu = tokenmill_pipelines::train::local_gpu();
    Ok(Arc::new(tokenmill_comm::NcclComm::new(Box::new(mpi), gpu)?))
}

#[cfg(all(feature = "mpi", not(feature = "nccl")))]
fn nccl_world(_: tokenmill_comm::MpiComm) -> anyhow::Result<Arc<dyn Communicator>> {
    anyhow::bail!(
        "[parallel] transport = \"nccl\": this binary was built without the nccl feature \
         (cargo build -p tokenmill-cli --features nccl)"
    )
}

/// Built without MPI: one process only.
#[cfg(not(feature = "mpi"))]
fn world(_: Transport) -> anyhow::Result<Option<Arc<dyn Communicator>>> {
    Ok(None)
}

/// Runs `tokenmill train` (under `mpirun -np N` with a `[parallel]` layout: across processes).
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = read_config(&a.config)?;
    if cfg.train.device == tokenmill_trainer::train::ComputeDevice::CudaHmm {
        // The GPU first to touch each buffer's pages (crate::alloc).
        crate::alloc::fresh_pages();
    }
    let out = cfg.train.out.clone();
    let world = world(cfg.parallel.transport)?;
    let lead = world.as_ref().is_none_or(|w| w.rank() == 0);
    // A rank that fails ends the job: the others would wait for it in the next collective.
    let guard = world.clone().filter(|w| w.size() > 1);
    let rank = world.as_ref().map_or(0, |w| w.rank());
    let result = if a.timeline {
        train_with_timeline(cfg, a.resume, a.quiet, world).map(|(o, comm, hidden)| {
            println!(
                "rank {rank}: timeline {}; communication {:.1} ms, of which {:.1} ms ({:.0} %) with compute running beside it",
                timeline_path(&out, rank).display(),
                comm / 1e3,
                hidden / 1e3,
                100.0 * hidden / comm.max(1e-9)
            );
            o
        })
    } else {
        train_in(cfg, a.resume, a.quiet, world)
    };
    let o = match (result, guard) {
        (Ok(o), _) => o,
        (Err(e), Some(w)) => {
            let other = matches!(
                &e,
                tokenmill_pipelines::Error::Trainer(tokenmill_trainer::Error::RankFailed { .. })
            );
            eprintln!(
                "error: rank {rank} of {}: {}; ending the job",
                w.size(),
                crate::error_message(&e.into())
            );
            if other {
                // The rank that failed ends the job after reporting its own error: give it
                // the time to (an abort here could cut its report short).
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            w.abort(1)
        }
        (Err(e), None) => return Err(e.into()),
    };
    if !lead {
        return Ok(());
    }
    println!(
        "trained {} steps: last loss {:.4}, eval loss {}, {:.0} tokens/s; run in {}",
        o.steps,
        o.last_loss,
        o.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
        o.tokens_per_s,
        out.display()
    );
    Ok(())
}
