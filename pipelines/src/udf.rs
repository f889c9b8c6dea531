//! tokenmill's filters as DataFusion scalar functions, so a recipe's SQL condition
//! (`[sql] where = "lang = 'en' AND gopher_quality(text)"`) and `tokenmill sql` queries
//! can use them without Rust:
//!
//! | function | returns |
//! |---|---|
//! | `gopher_quality(text)`, `gopher_repetition(text)`, `c4_quality(text)`, `fineweb_quality(text)` | whether the text passes the filter (default thresholds, or the recipe's) |
//! | `drop_reason(text)` | the first failing `filter/rule` of the four, in FineWeb's order, or NULL |
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
use tokenmill_filters::FiltersConfig;

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

/// Registers the functions in `ctx`, with `filters`' thresholds.
pub fn register(ctx: &SessionContext, filters: &FiltersConfig) {
    let f = Arc::new(filters.clone());
    let pass = |name: &str, check: fn(&FiltersConfig, &str) -> bool| {
        let f = f.clone();
        udf(name, DataType::Boolean, move |args| {
            Ok(Arc::new(BooleanArray::from(map_text(args, |t| check(&f, t))?)) as ArrayRef)
        })
    };
    ctx.register_udf(pass("gopher_quality", |f, t| {
        f.gopher_quality.check(t).is_ok()
    }));
    ctx.register_udf(pass("gopher_repetition", |f, t| {
        f.gopher_repetition.check(t).is_ok()
    }));
    ctx.register_udf(pass("c4_quality", |f, t| f.c4.apply(t).is_ok()));
    ctx.register_udf(pass("fineweb_quality", |f, t| f.fineweb.check(t).is_ok()));
    let fr = f.clone();
    ctx.register_udf(udf("drop_reason", DataType::Utf8, move |args| {
        let v = map_text(args, |t| fr.quality(t).err().map(|d| d.key()))?;
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
}
