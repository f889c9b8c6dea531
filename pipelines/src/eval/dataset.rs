//! Loss and perplexity of a model on a built dataset, broken down by provenance.
//!
//! The dataset is read by the training loader in storage order (no shuffling), `batch` samples
//! of `seq_len + 1` tokens per forward; with [`Packing::Windows`] (the default, Megatron's
//! layout) every token of the dataset but the first is a target exactly once. Each target's
//! loss goes to the document its token belongs to (the sample's spans, as the training loss
//! table attributes them), and documents are grouped by their provenance row: the input file
//! (`source`), the language (`lang`), the URL's host (`domain`, without a leading `www.`) or
//! the shard. A group's loss is the token-weighted mean of its targets' losses, so the groups'
//! loss sums add up to the whole dataset's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokenmill_shards::loader::{Loader, LoaderConfig, Packing, Shuffle};

use super::EvalModel;
use crate::error::{Error, Result};

/// The provenance field a breakdown groups documents by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The input file the document was read from.
    Source,
    /// The document's language (`(none)` when the build recorded none).
    Lang,
    /// The host of the document's URL, without a leading `www.` (`(none)` without a URL).
    Domain,
    /// The shard the document is stored in.
    Shard,
}

impl GroupBy {
    /// Every grouping, in display order.
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Source,
        GroupBy::Lang,
        GroupBy::Domain,
        GroupBy::Shard,
    ];

    /// Its name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Source => "source",
            GroupBy::Lang => "lang",
            GroupBy::Domain => "domain",
            GroupBy::Shard => "shard",
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| format!("{s:?}: expected one of source, lang, domain, shard"))
    }
}

/// How to read the dataset.
#[derive(Debug, Clone)]
pub struct DatasetEvalConfig {
    /// Input tokens per sample.
    pub seq_len: u64,
    /// Samples per forward.
    pub batch: usize,
    /// How the token stream is cut into samples.
    pub packing: Packing,
    /// Evaluate only the first this many samples (`None`: all of them, one epoch).
    pub max_samples: Option<u64>,
    /// Hide the progress bar.
    pub quiet: bool,
}

impl Default for DatasetEvalConfig {
    fn default() -> Self {
        DatasetEvalConfig {
            seq_len: 1024,
            batch: 8,
            packing: Packing::Windows,
            max_samples: None,
            quiet: true,
        }
    }
}

/// Loss figures of a set of targets (in JSON with their `loss` and `perplexity`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossSum {
    /// Targets counted.
    pub targets: u64,
    /// Σ of their losses (nats).
    pub loss_sum: f64,
    /// Documents with at least one target.
    pub documents: u64,
}

impl LossSum {
    /// Mean loss per target (NaN without targets).
    pub fn loss(&self) -> f64 {
        if self.targets == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.targets as f64
        }
    }
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }
    fn add(&mut self, other: &LossSum) {
        self.targets += other.targets;
        self.loss_sum += other.loss_sum;
        self.documents += other.documents;
    }
}

impl Serialize for LossSum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("LossSum", 5)?;
        st.serialize_field("documents", &self.documents)?;
        st.serialize_field("targets", &self.targets)?;
        st.serialize_field("loss_sum", &self.loss_sum)?;
        st.serialize_field("loss", &self.loss())?;
        st.serialize_field("perplexity", &self.perplexity())?;
        st.end()
    }
}

/// One group of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The provenance value.
    pub key: String,
    /// Its targets' loss figures.
    #[serde(flatten)]
    pub sum: LossSum,
}

/// What [`evaluate_dataset`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetEval {
    /// The model directory.
    pub model: PathBuf,
    /// The dataset directory.
    pub dataset: PathBuf,
    /// Input tokens per sample.
    pub seq_len: u64,
    /// Samples evaluated.
    pub samples: u64,
    /// Samples in one epoch of the dataset.
    pub epoch_samples: u64,
    /// The whole: every counted target.
    pub total: LossSum,
    /// Per grouping, its groups by descending loss.
    pub breakdowns: BTreeMap<GroupBy, Vec<Group>>,
}

impl DatasetEval {
    /// The groups of `by`.
    pub fn groups(&self, by: GroupBy) -> &[Group] {
        self.breakdowns.get(&by).map_or(&[], Vec::as_slice)
    }
}

/// The host of `url` in lower case without a leading `www.`, or `None` when it has none.
pub fn domain(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host
        .strip_prefix("www.")
        .map(str::to_string)
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

const NONE: &str = "(none)";

/// Runs `m` over the dataset in `dir` and attributes every target's loss to its document.
pub fn evaluate_dataset(m: &EvalModel, dir: &Path, cfg: &DatasetEvalConfig) -> Result<DatasetEval> {
    if cfg.batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let lc = LoaderConfig {
        seq_len: cfg.seq_len,
        global_batch: cfg.batch as u64,
        packing: cfg.packing,
        shuffle: Shuffle::None,
        ..LoaderConfig::default()
    };
    let loader = Loader::open(dir, lc)?;
    let ds = loader.dataset(0);
    let vocab = ds.manifest().tokenizer.vocab_size;
    if vocab as usize > m.vocab_size() {
        return Err(Error::Config(format!(
            "{}: the dataset's tokenizer has {vocab} tokens, more than the model's vocab_size {} ({})",
            dir.display(),
            m.vocab_size(),
            m.dir.display()
        )));
    }
    let s = cfg.seq_len as usize;
    if s > m.max_positions() {
        return Err(Error::Config(format!(
            "--seq-len {s} exceeds the model's max_position_embeddings {}",
            m.max_positions()
        )));
    }
    let epoch = loader.samples_of(0);
    let n = cfg.max_samples.map_or(epoch, |k| k.min(epoch));
    let bar = if cfg.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(n)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} samples ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    // (shard, document) → its targets' figures.
    let mut docs: HashMap<(u32, u64), (u64, f64)> = HashMap::new();
    let mut id = 0u64;
    while id < n {
        let b = (n - id).min(cfg.batch as u64) as usize;
        let samples: Vec<_> = (id..id + b as u64).map(|i| loader.sample(0, i)).collect();
        let tokens: Vec<u32> = samples
            .iter()
            .flat_map(|x| x.tokens.iter().copied())
            .collect();
        let mask: Vec<u8> = samples
            .iter()
            .flat_map(|x| x.loss_mask.iter().copied())
            .collect();
        let f = m.forward(&tokens, Some(&mask), b, s)?;
        for (k, smp) in samples.iter().enumerate() {
            let tl = &f.token_losses[k * s..(k + 1) * s];
            // Target t - 1 predicts token t; token t belongs to the span holding position t.
            for sp in &smp.spans {
                let (a, e) = ((sp.start as usize).max(1), (sp.start + sp.len) as usize);
                let entry = docs.entry((sp.shard, sp.doc)).or_default();
                for t in (a..e.min(s + 1)).filter(|&t| smp.loss_mask[t - 1] != 0) {
                    entry.0 += 1;
                    entry.1 += tl[t - 1] as f64;
                }
            }
        }
        id += b as u64;
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let mut total = LossSum::default();
    let mut breakdowns: BTreeMap<GroupBy, BTreeMap<String, LossSum>> = BTreeMap::new();
    let mut by_shard: BTreeMap<u32, Vec<(u64, u64, f64)>> = BTreeMap::new();
    for (&(shard, doc), &(targets, sum)) in &docs {
        if targets > 0 {
            by_shard.entry(shard).or_default().push((doc, targets, sum));
        }
    }
    for (shard, mut rows) in by_shard {
        rows.sort_by_key(|r| r.0);
        let name = &ds.manifest().shards[shard as usize].name;
        let prov = ds.provenance(shard as usize)?;
        for (doc, targets, loss_sum) in rows {
            let p = prov.get(doc as usize).ok_or_else(|| {
                Error::Internal(format!(
                    "shard {name}: document {doc} has no provenance row ({} rows)",
                    prov.len()
                ))
            })?;
            let one = LossSum {
                targets,
                loss_sum,
                documents: 1,
            };
            total.add(&one);
            for by in GroupBy::ALL {
                let key = match by {
                    GroupBy::Source => p.source.clone(),
                    GroupBy::Lang => p.lang.clone().unwrap_or_else(|| NONE.into()),
                    GroupBy::Domain => p
                        .url
                        .as_deref()
                        .and_then(domain)
                        .unwrap_or_else(|| NONE.into()),
                    GroupBy::Shard => name.clone(),
                };
                breakdowns
                    .entry(by)
                    .or_default()
                    .entry(key)
                    .or_default()
                    .add(&one);
            }
        }
    }
    let breakdowns = breakdowns
        .into_iter()
        .map(|(by, groups)| {
            let mut v: Vec<Group> = groups
                .into_iter()
                .map(|(key, sum)| Group { key, sum })
                .collect();
            v.sort_by(|a, b| {
                b.sum
                    .loss()
                    .total_cmp(&a.sum.loss())
                    .then(a.key.cmp(&b.key))
            });
            (by, v)
        })
        .collect();
    Ok(DatasetEval {
        model: m.dir.clone(),
        dataset: dir.to_path_buf(),
        seq_len: cfg.seq_len,
        samples: n,
        epoch_samples: epoch,
        total,
        breakdowns,
    })
}

/// The result as a table: the whole, then the groups of `by`.
pub fn render_table(r: &DatasetEval, by: GroupBy) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}\ndataset {} · seq_len {} · {} of {} samples",
        r.model.display(),
        r.dataset.display(),
        r.seq_len,
        r.samples,
        r.epoch_samples
    );
    let groups = r.groups(by);
    let width = groups
        .iter()
        .map(|g| g.key.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 60);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>12}  {:>8}  {:>10}",
        by.name(),
        "documents",
        "targets",
        "loss",
        "perplexity"
    );
    let row = |out: &mut String, key: &str, s: &LossSum| {
        let key: String = if key.chars().count() > width {
            let tail: Vec<char> = key.chars().collect();
            format!(
                "…{}",
                tail[tail.len() - (width - 1)..].iter().collect::<String>()
            )
        } else {
            key.to_string()
        };
        let _ = writeln!(
            out,
            "{key:<width$}  {:>10}  {:>12}  {:>8.4}  {:>10.3}",
            s.documents,
            s.targets,
            s.loss(),
            s.perplexity()
        );
    };
    for g in groups {
        row(&mut out, &g.key, &g.sum);
    }
    row(&mut out, "all", &r.total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_hosts_without_www_port_or_user() {
        assert_eq!(
            domain("https://www.Example.org/a/b?c").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            domain("http://user:pw@news.example.com:8080/x").as_deref(),
            Some("news.example.com")
        );
        assert_eq!(domain("example.net/page").as_deref(), Some("example.net"));
        assert_eq!(domain("http://[::1]:80/").as_deref(), Some("[::1]"));
        assert_eq!(domain("https:///nohost"), None);
        assert_eq!(domain(""), None);
    }

    #[test]
    fn group_by_parses_its_names() {
        for g in GroupBy::ALL {
            assert_eq!(g.name().parse::<GroupBy>().unwrap(), g);
        }
        assert!("url".parse::<GroupBy>().is_err());
    }
}
