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
    Ok(DocView {
        shard_ordinal: shard,
        global_token_start: global_start(ds, shard) + p.token_start,
        text: tok.decode(&ids)?,
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
        return Err(Error::NotFound(format!(
            "no document with id `{id}` in {}",
            ds.dir().display()
        )));
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

/// Human rendering of a document view; `max_chars` caps the text shown.
pub fn render(v: &DocView, max_chars: usize) -> String {
    let p = &v.provenance;
    let mut text: String = v.text.chars().take(max_chars).collect();
    if v.text.chars().count() > max_chars {
        text.push_str(&format!(
            "\n[… {} more characters]",
            v.text.chars().count() - max_chars
        ));
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
    let mut s = format!(
        "dataset    {}\nformat     {} v{}\ntokenizer  {} (sha256 {}…, vocab {}, eos {:?} = {:?})\ndtype      {:?}\ndocuments  {}\ntokens     {}\nshards     {}\n",
        ds.dir().display(),
        m.format,
        m.format_version,
        m.tokenizer.file,
        &m.tokenizer.sha256[..12.min(m.tokenizer.sha256.len())],
        m.tokenizer.vocab_size,
        m.tokenizer.eos_token,
        m.tokenizer.eos_id,
        m.dtype,
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
