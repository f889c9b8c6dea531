//! Expert parallelism on real MPI ranks against one process (`tokenmill-parallel-check`, run
//! under `mpirun --oversubscribe -np 2` and `-np 4`; see that binary for what is compared).

#![cfg(feature = "mpi")]

use tokenmill_comm::launch::mpirun;

fn run(np: usize, args: &[&str]) -> String {
    let out = mpirun(np)
        .arg(env!("CARGO_BIN_EXE_tokenmill-parallel-check"))
        .args(args)
        .output()
        .expect("run mpirun");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "np {np} {args:?}:\n{text}");
    text
}

#[test]
fn expert_parallel_layer_and_model_equal_one_process() {
    for np in [2, 4] {
        let text = run(np, &[]);
        eprintln!("{text}");
        let passes = text.lines().filter(|l| l.contains(": PASS ")).count();
        assert_eq!(passes, np * 14, "np {np}: 14 checks per rank\n{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
}

#[test]
fn training_in_every_layout_equals_one_process_and_repeats_bit_for_bit() {
    for (np, dp, ep) in [(2, 2, 1), (2, 1, 2), (4, 1, 4), (4, 2, 2)] {
        let (dp, ep) = (dp.to_string(), ep.to_string());
        let text = run(np, &["--dp", &dp, "--ep", &ep]);
        eprintln!("{text}");
        let passes = text.lines().filter(|l| l.contains(": PASS ")).count();
        assert_eq!(passes, np * 2, "np {np}: 2 checks per rank\n{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
    // The same layout twice: the same bits (the reductions sum in rank order).
    let bits = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.split("last loss bits ").nth(1))
            .map(|r| r[..16].to_string())
            .collect()
    };
    let (a, b) = (
        run(4, &["--dp", "2", "--ep", "2"]),
        run(4, &["--dp", "2", "--ep", "2"]),
    );
    let (mut ba, mut bb) = (bits(&a), bits(&b));
    ba.sort();
    bb.sort();
    assert_eq!(ba.len(), 4);
    assert_eq!(ba, bb, "two runs of one layout differ");
}

#[test]
fn a_layout_that_does_not_fit_is_refused_with_a_clear_message() {
    let out = mpirun(3)
        .arg(env!("CARGO_BIN_EXE_tokenmill-parallel-check"))
        .args(["--dp", "2", "--ep", "2"])
        .output()
        .expect("mpirun");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("dp 2 × ep 2 × pp 1 = 4 ranks, but the job has 3"),
        "{text}"
    );
}

#[test]
fn pipelines_equal_one_process_as_dualpipe_measures_it() {
    // (ranks, extra arguments): every schedule on 2 ranks, DualPipeV with experts over 2
    // ranks, DualPipe with 2 data-parallel replicas and with experts over 2 ranks.
    for (np, args) in [
        (2, &["--pp", "2", "--schedule", "dualpipev"][..]),
        (2, &["--pp", "2", "--schedule", "1f1b"][..]),
        (2, &["--pp", "2", "--schedule", "dualpipe"][..]),
        (
            4,
            &["--pp", "2", "--ep", "2", "--schedule", "dualpipev"][..],
        ),
        (4, &["--pp", "2", "--dp", "2", "--schedule", "dualpipe"][..]),
        // DualPipe's pairs with experts: a pair's forward and backward exchange at once.
        (4, &["--pp", "2", "--ep", "2", "--schedule", "dualpipe"][..]),
    ] {
        let text = run(np, args);
        eprintln!("{text}");
        // Every rank checks the loss and the gradients; each pipeline's rank 0 the tokens'.
        let passes = text.lines().filter(|l| l.contains(": PASS ")).count();
        assert_eq!(passes, np * 2 + np / 2, "np {np} {args:?}\n{text}");
        assert!(!text.contains("FAIL"), "{text}");
        if np == 2 {
            assert!(text.contains("the step's loss, bitwise"), "{text}");
        }
    }
}

#[test]
fn a_pipeline_with_too_few_micro_batches_or_layers_is_refused() {
    // 3 ranks of DualPipe: not even.
    let out = mpirun(3)
        .arg(env!("CARGO_BIN_EXE_tokenmill-parallel-check"))
        .args(["--pp", "3", "--schedule", "dualpipe"])
        .output()
        .expect("mpirun");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("DualPipe needs an even number of ranks (got 3)"),
        "{text}"
    );
}
