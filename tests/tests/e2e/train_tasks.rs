//! `[train] eval_tasks`: the fixture tasks scored at every evaluation of a tiny run — logged in
//! each eval line, equal to what `tokenmill eval --tasks` gives for that step's checkpoint, and
//! drawn by `tokenmill plot`; a missing or malformed task file refused before training.

use std::path::Path;
use std::process::Command;

use tokenmill_pipelines::train::{read_config, train};
use tokenmill_tests::{fixture, tokenmill_bin};
use tokenmill_trainer::train::LogKind;

use super::train::{datasets, log, write_config};

fn p(x: &Path) -> String {
    x.display().to_string()
}

#[test]
fn eval_lines_carry_task_scores_equal_to_eval_of_the_checkpoint_and_plot_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let (caps, arith) = (
        fixture("tasks/capitals.jsonl"),
        fixture("tasks/arithmetic.jsonl"),
    );
    let tasks = format!(
        "steps = 6\neval_every = 2\ncheckpoint_every = 2\n\
         eval_tasks = [{:?}, {:?}]\neval_tasks_fewshot = 1\neval_tasks_seed = 9\neval_tasks_limit = 6",
        p(&caps),
        p(&arith)
    );
    let cfg = write_config(d, "run", &tasks, "peak = 3e-3\nwarmup = 2");
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    let run = d.join("run");
    let evals: Vec<_> = log(&run)
        .into_iter()
        .filter(|l| l.kind == LogKind::Eval)
        .collect();
    assert_eq!(
        evals.iter().map(|l| l.step).collect::<Vec<_>>(),
        [2, 4, 6],
        "an eval line every 2 steps and at the end"
    );
    for l in &evals {
        let names: Vec<&str> = l.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["capitals", "arithmetic"], "step {}", l.step);
        let (c, a) = (&l.tasks[0], &l.tasks[1]);
        assert_eq!((c.examples, a.examples), (6, 6));
        assert!(c.acc.is_some() && c.acc_norm.is_some() && c.exact.is_none());
        assert!(a.acc.is_none() && a.exact.is_some());
        // The same checkpoint through `tokenmill eval`: the same numbers, exactly.
        let ckpt = run.join(format!("checkpoints/step-{:08}", l.step));
        let o = Command::new(tokenmill_bin())
            .args(["eval", "--model", &p(&ckpt), "--tokenizer"])
            .arg(d.join("tokenizer.json"))
            .arg("--tasks")
            .args([&caps, &arith])
            .args(["--num-fewshot", "1", "--seed", "9", "--limit", "6"])
            .args(["--threads", "2", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        assert_eq!(
            c.acc,
            Some(f(&j[0]["choice"]["acc"]["value"])),
            "step {}",
            l.step
        );
        assert_eq!(c.acc_norm, Some(f(&j[0]["choice"]["acc_norm"]["value"])));
        assert_eq!(a.exact, Some(f(&j[1]["answer"]["exact"]["value"])));
        // a continuous figure: the same forward passes, bit for bit
        assert_eq!(a.nats_per_token, Some(f(&j[1]["answer"]["nats_per_token"])));
        assert_eq!(j[0]["examples"].as_array().unwrap().len(), 6);
        eprintln!(
            "step {}: capitals acc {:?} acc_norm {:?}, arithmetic exact {:?} nats/token {:?}",
            l.step, c.acc, c.acc_norm, a.exact, a.nats_per_token
        );
    }

    // `tokenmill plot`: the loss chart as before, and a task chart with a line per task.
    let o = Command::new(tokenmill_bin())
        .arg("plot")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("loss.svg").is_file());
    let svg = std::fs::read_to_string(run.join("tasks.svg")).unwrap();
    let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
    assert_eq!(lines.len(), 2, "{svg}");
    for (line, (task, metric)) in lines
        .iter()
        .zip([("capitals", "acc"), ("arithmetic", "exact")])
    {
        assert!(
            line.contains(&format!(r#"data-task="{task}" data-metric="{metric}""#)),
            "{line}"
        );
        let pts = line.split("points=\"").nth(1).unwrap();
        assert_eq!(pts.trim_end_matches("\"/>").split(' ').count(), 3, "{line}");
    }
    assert_eq!(
        svg.matches(r#"class="task-norm""#).count(),
        3,
        "acc_norm of capitals"
    );
}

#[test]
fn a_missing_or_malformed_task_file_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let bad = d.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"context\": \"a\", \"answer\": \" b\"}\n{\"context\": \"a\", \"choices\": [\" x\"], \"gold\": 0}\n",
    )
    .unwrap();
    for (name, file, want) in [
        ("absent", d.join("absent.jsonl"), p(&d.join("absent.jsonl"))),
        ("malformed", bad.clone(), format!("{}:2: ", p(&bad))),
    ] {
        let cfg = write_config(
            d,
            name,
            &format!("steps = 2\neval_tasks = [{:?}]", p(&file)),
            "peak = 3e-3",
        );
        let e = train(read_config(&cfg).unwrap(), false, true).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(&want), "{name}: {e}");
        assert!(!d.join(name).exists(), "{name}: the run started: {e}");
    }
    // More shots than a file has other examples.
    let cfg = write_config(
        d,
        "shots",
        &format!(
            "steps = 2\neval_tasks = [{:?}]\neval_tasks_fewshot = 3\neval_tasks_limit = 3",
            p(&fixture("tasks/capitals.jsonl"))
        ),
        "peak = 3e-3",
    );
    let e = format!(
        "{:#}",
        train(read_config(&cfg).unwrap(), false, true).unwrap_err()
    );
    assert!(e.contains("capitals.jsonl: eval_tasks_fewshot = 3"), "{e}");
}
