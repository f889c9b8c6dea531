//! `tokenmill inspect`: the manifest, and any document by id, by (shard, index) or by global
//! token position, with its provenance and detokenized text.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use tokenmill_shards::{Dataset, DocProvenance, TextTokenizer, TokenizeConfig};

use crate::error::{Error, Result};

/// A document found in a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DocView {
    /// Ordinal of the shard in the manifest.
    pub shard_ordinal: usize,
    /// Where the document came from (id, source file, byte offset, URL, language) and where it
    /// lies in its shard.
    pub provenance: DocProvenance,
    /// Position of the document's first token in the whole dataset.
    pub global_token_start: u64,
    /// The token ids (EOS included).
    pub token_ids: Vec<u32>,
    /// Detokenized text (special tokens shown).
    pub text: String,
    /// SFT datasets: the per-token loss mask (1 = trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<u8>>,
    /// SFT datasets: the text with the trained spans marked `⟦…⟧`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marked_text: Option<String>,
}

/// The text of `ids` with the runs that `mask` trains on between `⟦` and `⟧`.
pub fn marked_text(tok: &TextTokenizer, ids: &[u32], mask: &[u8]) -> Result<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let m = mask.get(i).copied().unwrap_or(0);
        let j = (i..ids.len())
            .find(|&j| mask.get(j).copied().unwrap_or(0) != m)
            .unwrap_or(ids.len());
        let text = tok.decode(&ids[i..j])?;
        if m == 1 {
            out.push('⟦');
            out.push_str(&text);
            out.push('⟧');
        } else {
            out.push_str(&text);
        }
        i = j;
    }
    Ok(out)
}

/// Opens the tokenizer stored beside the shards and checks it is the one the manifest names.
pub fn dataset_tokenizer(ds: &Dataset) -> Result<TextTokenizer> {
    let path = ds.dir().join("tokenizer.json");
    let tok = TextTokenizer::load(&path, &TokenizeConfig::default())?;
    if tok.identity().sha256 != ds.manifest().tokenizer.sha256 {
        return Err(Error::Config(format!(
            "{}: sha256 {} differs from the manifest's {}",
            path.display(),
            tok.identity().sha256,
            ds.manifest().tokenizer.sha256
        )));
    }
    Ok(tok)
}

fn global_start(ds: &Dataset, shard: usize) -> u64 {
    ds.manifest().shards[..shard].iter().map(|s| s.tokens).sum()
}

/// Document `index` of shard `shard`.
pub fn by_position(
    ds: &Dataset,
    tok: &TextTokenizer,
    shard: usize,
    index: usize,
) -> Result<DocView> {
    let sh = ds.shard(shard)?;
    let prov = ds.provenance(shard)?;
    let p = prov.get(index).cloned().ok_or_else(|| {
        Error::NotFound(format!(
            "shard {shard} has {} documents, no index {index}",
            prov.len()
        ))
    })?;
    let ids = sh.document(index)?;
    let mask = sh.document_mask(index).map(<[u8]>::to_vec);
    let marked_text = match &mask {
        Some(m) => Some(marked_text(tok, &ids, m)?),
        None => None,
    };
    Ok(DocView {
        shard_ordinal: shard,
        global_token_start: global_start(ds, shard) + p.token_start,
        text: tok.decode(&ids)?,
        mask,
        marked_text,
        token_ids: ids,
        provenance: p,
    })
}

/// The document holding global token position `t`, in O(log shards + log documents).
pub fn by_token(ds: &Dataset, tok: &TextTokenizer, t: u64) -> Result<DocView> {
    let (s, d, _) = ds.locate_token(t)?;
    by_position(ds, tok, s, d)
}

/// Documents with id `id`, found with a DataFusion query over all provenance tables.
pub fn by_id(ds: &Dataset, tok: &TextTokenizer, id: &str) -> Result<Vec<DocView>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(ds.dir(), e))?;
    let hits: Vec<(String, u64)> = rt.block_on(async {
        let ctx = SessionContext::new();
        let opts = ParquetReadOptions {
            file_extension: ".prov.parquet",
            ..Default::default()
        };
        ctx.register_parquet("provenance", ds.dir().to_string_lossy().as_ref(), opts)
            .await?;
        let df = ctx
            .sql("SELECT shard, \"index\" FROM provenance WHERE id = $1 ORDER BY shard, \"index\"")
            .await?
            .with_param_values(vec![ScalarValue::Utf8(Some(id.to_string()))])?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            let shard = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let shard = shard.as_string::<i32>();
            let index = b.column(1).as_primitive::<UInt64Type>();
            for i in 0..b.num_rows() {
                if shard.is_valid(i) {
                    out.push((shard.value(i).to_string(), index.value(i)));
                }
            }
        }
        Ok::<_, datafusion::error::DataFusionError>(out)
    })?;
    if hits.is_empty() {
        let why = rt
            .block_on(why_not_kept(ds.dir(), id))
            .map_err(|e| crate::sql::explain(&e, &[], ds.dir()))?;
        return Err(Error::NotFound(match why {
            Some(why) => format!("`{id}` is not in {}: {why}", ds.dir().display()),
            None => format!(
                "no document with id `{id}` in {} (nor among the documents its build dropped)",
                ds.dir().display()
            ),
        }));
    }
    hits.into_iter()
        .map(|(name, index)| {
            let s = ds
                .manifest()
                .shards
                .iter()
                .position(|e| e.name == name)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "provenance names shard {name}, which the manifest does not list"
                    ))
                })?;
            by_position(ds, tok, s, index as usize)
        })
        .collect()
}

/// The first value of a string column of any string type (`None`: null).
fn text(a: &arrow::array::ArrayRef) -> Option<String> {
    let a = arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok()?;
    let a = a.as_string::<i32>();
    a.is_valid(0).then(|| a.value(0).to_string())
}

/// Why the build of the dataset in `dir` did not keep document `id`, from the records it
/// wrote beside the shards: `dedup-removed.parquet` (the dedup stage, and the document kept in
/// its place) and `excluded/*.parquet` (the stage, rule, measured value and threshold).
pub async fn why_not_kept(
    dir: &Path,
    id: &str,
) -> std::result::Result<Option<String>, datafusion::error::DataFusionError> {
    let ctx = SessionContext::new();
    let param = || vec![ScalarValue::Utf8(Some(id.to_string()))];
    let removed = dir.join("dedup-removed.parquet");
    if removed.is_file() {
        ctx.register_parquet(
            "removed",
            removed.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        let df = ctx
            .sql(
                "SELECT stage, kept_id, kept_source, kept_offset, kept_url, jaccard, source, \
                 \"offset\" FROM removed WHERE id = $1 LIMIT 1",
            )
            .await?
            .with_param_values(param())?;
        for b in df.collect().await? {
            if b.num_rows() == 0 {
                continue;
            }
            let t = |c: usize| text(b.column(c));
            let u = |c: usize| b.column(c).as_primitive::<UInt64Type>().value(0);
            let jac = b.column(5).as_primitive::<arrow::datatypes::Float64Type>();
            let kind = match t(0).as_deref() {
                Some("exact") => "an exact copy".to_string(),
                Some("url") => "a repeated URL".to_string(),
                Some("fuzzy") if jac.is_valid(0) => {
                    format!("a near-duplicate (Jaccard {:.3})", jac.value(0))
                }
                Some(other) => format!("a duplicate ({other})"),
                None => "a duplicate".to_string(),
            };
            return Ok(Some(format!(
                "dedup removed it ({} @ byte {}) as {kind} of `{}` ({} @ byte {}{}), which was kept",
                t(6).unwrap_or_default(),
                u(7),
                t(1).unwrap_or_default(),
                t(2).unwrap_or_default(),
                u(3),
                t(4).map(|u| format!(", {u}")).unwrap_or_default()
            )));
        }
    }
    let excluded = dir.join("excluded");
    if excluded.is_dir() && std::fs::read_dir(&excluded).is_ok_and(|mut d| d.next().is_some()) {
        ctx.register_parquet(
            "excluded",
            excluded.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        let df = ctx
            .sql(
                "SELECT stage, rule, value, threshold, source, \"offset\" FROM excluded \
                 WHERE id = $1 LIMIT 1",
            )
            .await?
            .with_param_values(param())?;
        for b in df.collect().await? {
            if b.num_rows() == 0 {
                continue;
            }
            let t = |c: usize| text(b.column(c)).unwrap_or_default();
            let f = |c: usize| {
                let a = b.column(c).as_primitive::<arrow::datatypes::Float64Type>();
                a.is_valid(0).then(|| a.value(0))
            };
            let measured = match (f(2), f(3)) {
                (Some(v), Some(th)) => format!(": value {v:.4}, threshold {th:.4}"),
                (Some(v), None) => format!(": value {v:.4}"),
                _ => String::new(),
            };
            return Ok(Some(format!(
                "the build dropped it ({} @ byte {}) at stage `{}`, rule `{}`{measured}",
                t(4),
                b.column(5).as_primitive::<UInt64Type>().value(0),
                t(0),
                t(1)
            )));
        }
    }
    Ok(None)
}

/// Human rendering of a document view; `max_chars` caps the text shown.
pub fn render(v: &DocView, max_chars: usize) -> String {
    let p = &v.provenance;
    let shown = v.marked_text.as_ref().unwrap_or(&v.text);
    let mut text: String = shown.chars().take(max_chars).collect();
    if shown.chars().count() > max_chars {
        text.push_str(&format!(
            "\n[… {} more characters]",
            shown.chars().count() - max_chars
        ));
    }
    if let Some(m) = &v.mask {
        let trained = m.iter().filter(|&&x| x == 1).count();
        text = format!(
            "[loss mask: {trained} of {} tokens trained, shown between ⟦ and ⟧]\n{text}",
            m.len()
        );
    }
    format!(
        "document   {}\nshard      {} (#{}) index {}\nsource     {}\noffset     {}\nurl        {}\ntokens     {} (dataset positions {}..{})\ntext xxh3  {:016x}\n---\n{}\n",
        p.id,
        p.shard,
        v.shard_ordinal,
        p.index,
        p.source,
        p.offset,
        p.url.as_deref().unwrap_or("-"),
        p.tokens,
        v.global_token_start,
        v.global_token_start + p.tokens,
        p.text_xxh3,
        text
    )
}

/// Summary of the manifest.
pub fn summary(ds: &Dataset) -> String {
    let m = ds.manifest();
    let eos = match (&m.tokenizer.eos_token, m.tokenizer.eos_id) {
        (Some(t), Some(id)) => format!("{t} (id {id})"),
        (Some(t), None) => t.clone(),
        (None, Some(id)) => format!("id {id}"),
        (None, None) => "none appended".into(),
    };
    let dtype = match m.dtype {
        tokenmill_shards::TokenDtype::Uint16 => "uint16",
        tokenmill_shards::TokenDtype::Int32 => "int32",
    };
    let mut s = format!(
        "dataset    {}\nformat     {} v{}\ntokenizer  {} (sha256 {}…, vocab {}, EOS {eos})\ndtype      {dtype} (Megatron .bin/.idx)\ndocuments  {}\ntokens     {}\nshards     {}\n",
        ds.dir().display(),
        m.format,
        m.format_version,
        m.tokenizer.file,
        &m.tokenizer.sha256[..12.min(m.tokenizer.sha256.len())],
        m.tokenizer.vocab_size,
        m.documents,
        m.tokens,
        m.shards.len()
    );
    if m.documents > 0 {
        s.push_str(&format!(
            "tokens/doc {:.1}\n",
            m.tokens as f64 / m.documents as f64
        ));
    }
    if m.shards.iter().any(|e| e.masks.is_some()) {
        let trained: u64 = m
            .shards
            .iter()
            .filter_map(|e| e.masks.as_ref())
            .map(|k| k.trained_tokens)
            .sum();
        s.push_str(&format!(
            "loss masks {trained} of {} tokens trained ({:.1} %; .mask.bin/.idx beside each shard)\n",
            m.tokens,
            100.0 * trained as f64 / m.tokens.max(1) as f64
        ));
    }
    s.push_str(&format!(
        "\n  {:<24} {:>10} {:>14} {:>16}\n",
        "shard", "documents", "tokens", "bin xxh3"
    ));
    for e in m.shards.iter().take(20) {
        s.push_str(&format!(
            "  {:<24} {:>10} {:>14} {:>16}\n",
            e.name, e.documents, e.tokens, e.bin_xxh3
        ));
    }
    if m.shards.len() > 20 {
        s.push_str(&format!("  … {} more shards\n", m.shards.len() - 20));
    }
    s
}

/// Opens a dataset directory.
pub fn open(dir: &Path) -> Result<Dataset> {
    Ok(Dataset::open(dir)?)
}

/// One document of a sample, resolved through the provenance tables.
#[derive(Debug, Clone, Serialize)]
pub struct SampleDoc {
    /// Which tokens of the sample come from this document, and from where in it.
    pub span: tokenmill_shards::loader::Span,
    /// Where the document came from and where it lies in its shard.
    pub provenance: DocProvenance,
    /// Detokenized text of the span.
    pub text: String,
}

/// Sample `n` of epoch `epoch` of the shuffled stream a loader with this seed, sequence length
/// and packing would serve: its position, id and documents.
pub fn sample_docs(
    ds: &Dataset,
    tok: &TextTokenizer,
    cfg: tokenmill_shards::loader::LoaderConfig,
    epoch: u64,
    n: u64,
) -> Result<(u64, Vec<SampleDoc>)> {
    let loader = tokenmill_shards::loader::Loader::open(ds.dir(), cfg)?;
    if n >= loader.epoch_len() {
        return Err(Error::NotFound(format!(
            "sample {n} is past the epoch's {} samples",
            loader.epoch_len()
        )));
    }
    let (d, _, id) = loader.resolve(epoch * loader.epoch_len() + n);
    let sample = loader.sample(d, id);
    let docs = loader
        .provenance(&sample)?
        .into_iter()
        .map(|(span, provenance)| {
            let toks = &sample.tokens[span.start as usize..(span.start + span.len) as usize];
            Ok(SampleDoc {
                span,
                provenance,
                text: tok.decode(toks)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((id, docs))
}
