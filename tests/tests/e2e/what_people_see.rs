//! What a person sees after the quickstart (issue 20): one meaning of "loss", `trace` saying
//! what `--top` cut, documents the build dropped named with the reason, the run's losses
//! queryable with document ids, the report leading with the documents behind the spikes, the
//! funnel starting at every document read, values printed as a person writes them.

use std::path::Path;
use std::sync::OnceLock;

use arrow::array::{Array, AsArray};
use tokenmill_cli::commands::quickstart::{QuickstartConfig, quickstart};
use tokenmill_trainer::train::LogKind;

/// One small quickstart shared by the tests of this file (it trains long enough to spike).
fn qs() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        quickstart(&QuickstartConfig {
            out: dir.path().to_path_buf(),
            docs: 400,
            files: 2,
            vocab_size: 1024,
            seed: 7,
            threads: 2,
            quiet: true,
            train_steps: 120,
        })
        .unwrap();
        dir
    })
    .path()
}

fn strings(batches: &[arrow::array::RecordBatch], col: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let a = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Utf8).unwrap();
        let a = a.as_string::<i32>();
        out.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
    }
    out
}

#[test]
fn trace_calls_the_next_token_loss_loss_and_says_what_top_cut() {
    let run = qs().join("run");
    let log = tokenmill_pipelines::plot::read_log(&run).unwrap();
    let line = log
        .iter()
        .find(|l| l.kind == LogKind::Train && l.step == 30)
        .unwrap();
    assert!(
        line.loss > line.main_loss + 1e-3,
        "MTP makes the total larger"
    );
    let t = tokenmill_pipelines::trace::trace_step(&run, 30, None, 3).unwrap();
    assert_eq!(t.loss, line.main_loss);
    assert_eq!(t.total_loss, line.loss);
    let text = tokenmill_pipelines::trace::render(&t, 3);
    let head = text.lines().next().unwrap();
    assert!(
        head.starts_with(&format!(
            "step 30: loss {:.4} (next-token), total loss {:.4}",
            line.main_loss, line.loss
        )),
        "{head}"
    );
    assert_eq!(t.samples.len(), 8);
    assert!(
        text.contains("8 samples, highest loss first; the first 3 shown (--top 3)"),
        "{text}"
    );
    assert_eq!(text.matches("  sample ").count(), 3);
    // `trace --doc` reports the same loss for the step
    let d = &t.samples[0].docs[0];
    let (_, seen) = tokenmill_pipelines::trace::trace_doc(&run, &d.id).unwrap();
    let s = seen.iter().find(|s| s.step == 30).unwrap();
    assert_eq!(s.step_loss, t.loss);
}

#[test]
fn inspect_names_why_a_document_is_not_in_the_dataset() {
    let ds_dir = qs().join("dataset");
    let r = tokenmill_pipelines::sql::query_dir(
        &ds_dir,
        "SELECT id, kept_id FROM dedup_removed ORDER BY id LIMIT 1",
    )
    .unwrap();
    let (id, kept) = (
        strings(&r, 0)[0].clone().unwrap(),
        strings(&r, 1)[0].clone().unwrap(),
    );
    let ds = tokenmill_pipelines::inspect::open(&ds_dir).unwrap();
    let tok = tokenmill_pipelines::inspect::dataset_tokenizer(&ds).unwrap();
    let e = tokenmill_pipelines::inspect::by_id(&ds, &tok, &id)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dedup removed it"), "{e}");
    assert!(
        e.contains(&format!("`{kept}`")) && e.contains("which was kept"),
        "{e}"
    );
    // a document a filter dropped: the stage, the rule, the value and the threshold
    let web_dir = qs().join("dataset-web");
    let r = tokenmill_pipelines::sql::query_dir(
        &web_dir,
        "SELECT id, stage, rule FROM excluded WHERE value IS NOT NULL ORDER BY id LIMIT 1",
    )
    .unwrap();
    let (id, stage, rule) = (
        strings(&r, 0)[0].clone().unwrap(),
        strings(&r, 1)[0].clone().unwrap(),
        strings(&r, 2)[0].clone().unwrap(),
    );
    let web = tokenmill_pipelines::inspect::open(&web_dir).unwrap();
    let e = tokenmill_pipelines::inspect::by_id(&web, &tok, &id)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("at stage `{stage}`, rule `{rule}`: value ")),
        "{e}"
    );
    assert!(e.contains("threshold"), "{e}");
    // an id nobody has seen
    let e = tokenmill_pipelines::inspect::by_id(&ds, &tok, "never-seen")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no document with id `never-seen`"), "{e}");
}

#[test]
fn the_losses_of_a_run_join_its_provenance_in_one_query() {
    let run = qs().join("run");
    let q = "SELECT l.id, p.url, avg(l.loss) AS loss, count(*) AS n FROM losses l \
             JOIN provenance p ON p.id = l.id WHERE l.targets > 0 GROUP BY 1, 2 ORDER BY loss DESC";
    let r = tokenmill_pipelines::sql::query_dir(&run, q).unwrap();
    let ids = strings(&r, 0);
    let urls = strings(&r, 1);
    assert!(ids.len() > 50, "{}", ids.len());
    assert!(ids.iter().all(Option::is_some));
    assert!(
        urls.iter()
            .all(|u| u.as_deref().is_some_and(|u| u.starts_with("https://")))
    );
    // every stored row has its document id
    let count = |q: &str| {
        let r = tokenmill_pipelines::sql::query_dir(&run, q).unwrap();
        r[0].column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    let rows = count("SELECT count(*) FROM loss_rows");
    assert!(rows > 0);
    assert_eq!(
        count("SELECT count(*) FROM losses WHERE id IS NOT NULL"),
        rows
    );
    // `shards` maps the loss table's shard ordinals to the provenance's shard names
    assert_eq!(
        count("SELECT count(*) FROM shards"),
        tokenmill_shards::Dataset::open(&qs().join("dataset"))
            .unwrap()
            .manifest()
            .shards
            .len() as i64
    );
}

#[test]
fn trace_on_a_dataset_says_it_wants_a_run() {
    let e = tokenmill_pipelines::trace::trace_step(&qs().join("dataset"), 3, None, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a dataset, not a training run"), "{e}");
    assert!(e.contains("give the run directory"), "{e}");
}

#[test]
fn the_report_leads_with_the_documents_behind_the_spikes() {
    let (rep, html) = tokenmill_pipelines::report::report(&qs().join("run"), 3).unwrap();
    assert!(!rep.spikes.is_empty(), "120 steps of the quickstart spike");
    let n: usize = rep.documents.iter().map(|d| d.spikes.len()).sum();
    assert_eq!(n, rep.spikes.len(), "every spike in one group");
    assert!(
        rep.documents.windows(2).all(|w| w[0].id.is_none()
            || w[1].id.is_none()
            || w[0].spikes.len() >= w[1].spikes.len())
    );
    let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(at("<svg") < at("id=ranking") && at("id=ranking") < at("id=all-spikes"));
    let first = rep.documents[0].id.as_deref().unwrap();
    assert!(html[at("id=ranking")..at("Spikes by document")].contains(first));
}

#[test]
fn the_crawls_funnel_starts_at_every_document_read_and_the_summary_reads_plainly() {
    let web = qs().join("dataset-web");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("stats.json")).unwrap()).unwrap();
    let read = stats["documents_read"].as_u64().unwrap();
    let svg = std::fs::read_to_string(web.join("funnel.svg")).unwrap();
    let first = stats["funnel"]["rows"][0]["docs_in"].as_u64().unwrap();
    assert!(read > first, "the reader skipped pages: {read} vs {first}");
    assert!(svg.contains(&format!("{read} → {first}")), "{svg}");
    assert!(
        svg.contains("http_status 2") && svg.contains(">bytes<"),
        "{svg}"
    );
    let ds = tokenmill_pipelines::inspect::open(&qs().join("dataset")).unwrap();
    let s = tokenmill_pipelines::inspect::summary(&ds);
    assert!(!s.contains("Some(") && !s.contains("Uint16"), "{s}");
    assert!(
        s.contains("EOS <|endoftext|> (id 0)") && s.contains("dtype      uint16"),
        "{s}"
    );
}
