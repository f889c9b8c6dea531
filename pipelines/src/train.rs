//! `tokenmill train --config train.toml [--resume]`: reads the TOML (paths relative to it),
//! runs the trainer with a progress bar, and prints a summary.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use tokenmill_trainer::train::{LogKind, StepLog, TrainConfig, Trainer};

use crate::error::{Error, Result};

/// Reads a training configuration; relative paths are taken from the file's directory.
pub fn read_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut cfg: TrainConfig =
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    fix(&mut cfg.data.train);
    cfg.data.exclude_from.iter_mut().for_each(&fix);
    if let Some(e) = cfg.data.eval.as_mut() {
        fix(e);
    }
    fix(&mut cfg.train.out);
    cfg.train.eval_tasks.iter_mut().for_each(&fix);
    if let Some(c) = cfg.model.config.as_mut() {
        fix(c);
    }
    if let Some(i) = cfg.model.init.as_mut() {
        fix(i);
    }
    if let Some(dc) = cfg.train.distill.as_mut() {
        fix(&mut dc.data);
    }
    Ok(cfg)
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Steps done.
    pub steps: u64,
    /// Next-token loss of the last step.
    pub last_loss: f64,
    /// Last evaluation loss.
    pub eval_loss: Option<f64>,
    /// Mean tokens/s over the run.
    pub tokens_per_s: f64,
}

/// Runs (or resumes) a training run in this process.
pub fn train(cfg: TrainConfig, resume: bool, quiet: bool) -> Result<TrainOutcome> {
    train_in(cfg, resume, quiet, None)
}

/// Where rank `rank`'s timeline goes in a run directory.
pub fn timeline_path(run: &Path, rank: usize) -> PathBuf {
    run.join("timeline").join(format!("rank-{rank:04}.json"))
}

/// The GPU a process drives: its local rank under a launcher (Open MPI, Slurm), else 0,
/// modulo the GPUs it sees (more ranks than GPUs share them; NCCL refuses two ranks of one
/// communicator on one GPU, saying so).
pub fn local_gpu() -> usize {
    let local: usize = ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0);
    match tokenmill_cuda::device::device_count() {
        Ok(n) if n > 0 => local % n,
        // No driver or no GPU: opening the device says so.
        _ => local,
    }
}

/// The compute backend of `[train] device`.
pub fn backend(
    device: tokenmill_trainer::train::ComputeDevice,
) -> Result<Box<dyn tokenmill_kernels::Backend<f32>>> {
    use tokenmill_trainer::train::ComputeDevice;
    Ok(match device {
        ComputeDevice::Cpu => Box::new(tokenmill_kernels::Cpu),
        ComputeDevice::Cuda => Box::new(tokenmill_cuda::Cuda::new(local_gpu())?),
        ComputeDevice::CudaHmm => Box::new(tokenmill_cuda::Cuda::with_memory(
            local_gpu(),
            tokenmill_cuda::device::Memory::Host,
        )?),
        ComputeDevice::CudaManaged => Box::new(tokenmill_cuda::Cuda::with_memory(
            local_gpu(),
            tokenmill_cuda::device::Memory::Managed,
        )?),
    })
}

/// The compute backend for training `cfg`. On a GPU it carries the memory model's estimate
/// for the run (the training state of every parameter, MTP modules included, and one
/// micro-batch's saved activations: [`tokenmill_trainer::cost::memory_model`]), which an
/// out-of-memory error reports beside the bytes asked for.
pub fn training_backend(cfg: &TrainConfig) -> Result<Box<dyn tokenmill_kernels::Backend<f32>>> {
    use tokenmill_cuda::device::Memory;
    use tokenmill_trainer::ops::Precision;
    use tokenmill_trainer::train::{ComputeDevice, Fp8GemmChoice};
    let fast = cfg.train.fp8_gemm;
    let tensor_cores = fast != Fp8GemmChoice::Model;
    if tensor_cores && cfg.train.precision != Precision::Fp8 {
        return Err(Error::Config(format!(
            "[train] fp8_gemm = \"{}\" applies to precision = \"fp8\"",
            fast.name()
        )));
    }
    if cfg.train.defer_waits && cfg.train.device != ComputeDevice::CudaManaged {
        return Err(Error::Config(format!(
            "[train] defer_waits needs device = \"cuda-managed\" (the data left in managed \
             memory, whose freed blocks wait for the device before they are handed out again), \
             not \"{}\"",
            cfg.train.device.name()
        )));
    }
    let memory = match cfg.train.device {
        ComputeDevice::Cpu if tensor_cores => {
            return Err(Error::Config(format!(
                "[train] fp8_gemm = \"{}\" needs device = \"cuda\", \"cuda-hmm\" or \"cuda-managed\"",
                fast.name()
            )));
        }
        ComputeDevice::Cpu => return backend(cfg.train.device),
        ComputeDevice::Cuda => Memory::Copy,
        ComputeDevice::CudaHmm => Memory::Host,
        ComputeDevice::CudaManaged => Memory::Managed,
    };
    let model = cfg.model.resolve()?;
    let (per_param, per_tok) = tokenmill_trainer::cost::memory_model(&model);
    let p = model.param_counts();
    let tokens = cfg.data.micro_batch.unwrap_or(cfg.data.batch) * cfg.data.seq_len;
    let mut cuda = tokenmill_cuda::Cuda::with_memory(local_gpu(), memory)?;
    cuda.set_estimate(((p.total + p.mtp) as f64 * per_param + tokens as f64 * per_tok) as u64);
    match fast {
        Fp8GemmChoice::Model => {}
        Fp8GemmChoice::Cublaslt => cuda.set_fp8_gemm(tokenmill_cuda::backend::Fp8Gemm::Cublaslt)?,
        Fp8GemmChoice::Mma => cuda.set_fp8_gemm(tokenmill_cuda::backend::Fp8Gemm::Mma)?,
        Fp8GemmChoice::CublasltMma => {
            cuda.set_fp8_gemm(tokenmill_cuda::backend::Fp8Gemm::CublasltMma)?
        }
    }
    if cfg.train.defer_waits {
        cuda.set_defer_waits(true)?;
    }
    Ok(Box::new(cuda))
}

/// [`train_in`] with a timeline: every rank records its compute and communication spans and
/// writes them as a Chrome/Perfetto trace to [`timeline_path`]; returns the outcome and this
/// rank's communication wall time and the part of it during which compute ran (µs).
pub fn train_with_timeline(
    cfg: TrainConfig,
    resume: bool,
    quiet: bool,
    world: Option<std::sync::Arc<dyn tokenmill_comm::Communicator>>,
) -> Result<(TrainOutcome, f64, f64)> {
    let rank = world.as_ref().map_or(0, |w| w.rank());
    let out = cfg.train.out.clone();
    tokenmill_trainer::timeline::enable();
    let o = train_in(cfg, resume, quiet, world)?;
    let events = tokenmill_trainer::timeline::events();
    let path = timeline_path(&out, rank);
    tokenmill_trainer::timeline::write_chrome(&path, rank, &events)
        .map_err(|e| Error::io(&path, e))?;
    let (comm, hidden) = tokenmill_trainer::timeline::overlap(&events);
    Ok((o, comm, hidden))
}

/// The progress bar's account of a training step: the next-token loss as `loss` (the number
/// comparable with the held-out loss), the optimised total under its own name.
/// On a device, the step's waits for it, the time blocked in them and the bytes copied.
fn progress_message(log: &StepLog) -> String {
    let mut m = format!(
        "loss {:.4}  total {:.4}  lr {:.2e}  gnorm {:.2}  {:.0} tok/s  MFU {:.1}%",
        log.main_loss,
        log.loss,
        log.lr,
        log.grad_norm,
        log.tokens_per_s,
        100.0 * log.mfu
    );
    if let Some(d) = &log.device {
        m.push_str(&format!(
            "  device: {} waits, {:.1} ms blocked, {:.3} GB copied",
            d.waits,
            d.blocked_ns as f64 / 1e6,
            (d.to_device + d.to_host) as f64 / 1e9
        ));
    }
    m
}

/// The progress bar's layout: elapsed time, the bar, steps, an ETA, then [`BarText`].
const BAR_TEMPLATE: &str = "{elapsed_precise} [{bar:30}] {pos}/{len} steps, ETA {eta}  {msg}";

/// The progress bar's message: the last training step's figures and the last evaluation's
/// loss. Each log line updates its part, and an evaluation refreshes the whole message (the
/// last evaluation comes after the last step, so the bar ends showing it).
#[derive(Debug, Default)]
struct BarText {
    train: String,
    eval: String,
}

impl BarText {
    /// Takes one log line; returns the message to show.
    fn on_log(&mut self, log: &StepLog) -> String {
        if log.kind == LogKind::Eval {
            self.eval = format!("  eval loss {:.4}", log.loss);
        } else {
            self.train = progress_message(log);
        }
        format!("{}{}", self.train, self.eval)
    }
}

/// Runs (or resumes) a training run across the ranks of `world` (every rank calls it; rank 0
/// shows progress and writes spike reports).
pub fn train_in(
    cfg: TrainConfig,
    resume: bool,
    quiet: bool,
    world: Option<std::sync::Arc<dyn tokenmill_comm::Communicator>>,
) -> Result<TrainOutcome> {
    let lead = world.as_ref().is_none_or(|w| w.rank() == 0);
    let quiet = quiet || !lead;
    let threads = cfg.train.threads;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        // The task files are checked before anything of the run is touched.
        let tasks = crate::eval::train_tasks::TrainTasks::open(&cfg)?;
        if tasks.is_some() && world.as_ref().is_some_and(|w| w.size() > 1) {
            return Err(Error::Config(
                "[train] eval_tasks run in one process only, not across processes".into(),
            ));
        }
        let be = training_backend(&cfg)?;
        let mut t = Trainer::with_backend(cfg, resume, world, be)?;
        if let Some(tasks) = tasks {
            t.set_eval_hook(Box::new(tasks))?;
        }
        let total = t.cfg.train.steps;
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(BAR_TEMPLATE)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_position(t.step);
        let (mut last, mut tok_s, mut n) = (f64::NAN, 0.0, 0u64);
        let mut text = BarText::default();
        // Spike reports are a by-product: a failure to write one never stops training.
        let mut reporter = match crate::trace::SpikeReporter::open(&t.cfg.train.out, 5) {
            Ok(_) if !lead => None,
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("spike reports off: {e}");
                None
            }
        };
        let eval = t.run(|log: &StepLog| {
            if let Some(r) = reporter.as_mut() {
                match r.observe(log) {
                    Ok(Some(p)) => tracing::info!(report = %p.display(), "spike report"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(step = log.step, "spike report not written: {e}"),
                }
            }
            if log.kind == LogKind::Eval {
                let mut line = format!("step {:>6}  eval loss {:.4}", log.step, log.loss);
                if !log.tasks.is_empty() {
                    line.push_str("  ");
                    line.push_str(&crate::eval::train_tasks::render_scores(&log.tasks));
                }
                bar.println(line);
            } else {
                last = log.main_loss;
                tok_s += log.tokens_per_s;
                n += 1;
                bar.set_position(log.step + 1);
            }
            bar.set_message(text.on_log(log));
        })?;
        bar.finish();
        Ok(TrainOutcome {
            steps: t.step,
            last_loss: last,
            eval_loss: eval,
            tokens_per_s: tok_s / n.max(1) as f64,
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_bar_calls_the_next_token_loss_loss() {
        let l = crate::plot::tests::line(93, 3.1341, &[]);
        let m = super::progress_message(&l);
        assert!(m.starts_with("loss 3.1341  total 4.1341  "), "{m}");
        assert!(!m.contains("device"), "{m}");
    }

    #[test]
    fn on_a_device_the_progress_bar_shows_the_steps_waits_and_copies() {
        let mut l = crate::plot::tests::line(4, 3.0, &[]);
        l.device = Some(tokenmill_kernels::backend::DeviceCounters {
            copies: 12,
            to_device: 1_500_000_000,
            to_host: 250_000_000,
            waits: 641,
            blocked_ns: 37_260_000,
        });
        let m = super::progress_message(&l);
        assert!(
            m.ends_with("  device: 641 waits, 37.3 ms blocked, 1.750 GB copied"),
            "{m}"
        );
    }

    #[test]
    fn the_bar_shows_an_eta_and_the_final_evaluation() {
        use tokenmill_trainer::train::LogKind;
        assert!(super::BAR_TEMPLATE.contains("ETA {eta}"));
        indicatif::ProgressStyle::with_template(super::BAR_TEMPLATE).unwrap();
        let mut text = super::BarText::default();
        let step = crate::plot::tests::line(99, 3.1341, &[]);
        let m = text.on_log(&step);
        assert!(m.starts_with("loss 3.1341") && !m.contains("eval"), "{m}");
        // The final evaluation comes after the last step: the message shows it, and keeps the
        // step's figures.
        let mut eval = crate::plot::tests::line(100, 2.5, &[]);
        eval.kind = LogKind::Eval;
        eval.loss = 2.5;
        let m = text.on_log(&eval);
        assert!(
            m.starts_with("loss 3.1341") && m.ends_with("eval loss 2.5000"),
            "{m}"
        );
        // A later evaluation replaces the earlier one.
        eval.loss = 2.25;
        assert!(text.on_log(&eval).ends_with("eval loss 2.2500"));
    }
}
