//! tokenmill's filters as DataFusion scalar functions, so a recipe's SQL condition
//! (`[sql] where = "lang = 'en' AND gopher_quality(text)"`) and `tokenmill sql` queries
//! can use them without Rust:
//!
//! | function | returns |
//! |---|---|
//! | `gopher_quality(text)`, `gopher_repetition(text)`, `c4_quality(text)`, `fineweb_quality(text)` | whether the text passes the filter (default thresholds, or the recipe's) |
//! | `drop_reason(text)` | the first failing `filter/rule` of the quality filters, in FineWeb's order, or NULL |
//! | `lang(text)`, `lang_score(text)` | the detected language (ISO 639-1 where it has one, else 639-3) and its confidence |
//! | `word_count(text)` | words, as the filters count them |

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray, UInt64Array,
};
use arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use tokenmill_filters::{Doc, Filter, FiltersConfig, UrlFilterConfig};

use crate::error::Result;

/// Applies `f` to every string of the one argument (any string type; NULL in, NULL out).
fn map_text<T>(args: &[ColumnarValue], f: impl Fn(&str) -> T) -> DfResult<Vec<Option<T>>> {
    let arr = match &args[0] {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => s.to_array()?,
    };
    let arr = arrow::compute::cast(&arr, &DataType::Utf8)?;
    let s = arr.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| s.is_valid(i).then(|| f(s.value(i))))
        .collect())
}

fn udf(
    name: &str,
    ret: DataType,
    fun: impl Fn(&[ColumnarValue]) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    let sig = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::Utf8View]),
            TypeSignature::Exact(vec![DataType::LargeUtf8]),
        ],
        Volatility::Immutable,
    );
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        name,
        sig,
        ret,
        Arc::new(move |args: &[ColumnarValue]| Ok(ColumnarValue::Array(fun(args)?))),
    ))
}

/// Registers the functions in `ctx`, with `filters`' settings: a pass/fail function for each
/// quality filter, enabled or not (a disabled one passes every text), and `drop_reason` over
/// the enabled ones.
pub fn register(ctx: &SessionContext, filters: &FiltersConfig) -> Result<()> {
    // The functions judge text, never URLs: the URL filter is left out, so its blocklists are
    // not read again.
    let filters = FiltersConfig {
        url: UrlFilterConfig {
            enabled: false,
            ..filters.url.clone()
        },
        ..filters.clone()
    };
    for f in filters.filters()? {
        let Some(name) = f.kind().sql() else {
            continue;
        };
        let f: Arc<dyn Filter> = Arc::from(f);
        ctx.register_udf(udf(name, DataType::Boolean, move |args| {
            let pass = map_text(args, |t| f.apply(&mut Doc::new(None, t)).is_ok())?;
            Ok(Arc::new(BooleanArray::from(pass)) as ArrayRef)
        }));
    }
    let chain = Arc::new(filters.chain()?);
    ctx.register_udf(udf("drop_reason", DataType::Utf8, move |args| {
        let v = map_text(args, |t| chain.drop_reason(t))?;
        Ok(Arc::new(v.into_iter().map(Option::flatten).collect::<StringArray>()) as ArrayRef)
    }));
    ctx.register_udf(udf("lang", DataType::Utf8, |args| {
        let v = map_text(args, |t| {
            tokenmill_filters::detect(t).map(|g| g.iso639_1.unwrap_or(g.code))
        })?;
        Ok(Arc::new(v.into_iter().map(Option::flatten).collect::<StringArray>()) as ArrayRef)
    }));
    ctx.register_udf(udf("lang_score", DataType::Float64, |args| {
        let v = map_text(args, |t| tokenmill_filters::detect(t).map(|g| g.confidence))?;
        Ok(Arc::new(v.into_iter().map(Option::flatten).collect::<Float64Array>()) as ArrayRef)
    }));
    ctx.register_udf(udf("word_count", DataType::UInt64, |args| {
        let v = map_text(args, |t| tokenmill_filters::words::words(t).count() as u64)?;
        Ok(Arc::new(v.into_iter().collect::<UInt64Array>()) as ArrayRef)
    }));
    Ok(())
}
