//! The recipe's own SQL (`[sql]`): a condition that drops documents and derived columns, as
//! DataFusion expressions over the kept documents of a batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::{Dropped, KeptRow};
use crate::error::{Error, Result};

/// The columns of a kept document as the SQL condition and `tokenmill extract` see them.
pub fn kept_fields() -> Vec<Field> {
    vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("lang", DataType::Utf8, true),
        Field::new("lang_score", DataType::Float64, true),
        Field::new("text", DataType::Utf8, false),
    ]
}

/// A compiled `[sql]`: the condition and the derived columns, parsed and planned once.
pub struct SqlWhere {
    expr: Option<Arc<dyn PhysicalExpr>>,
    columns: Vec<(String, Arc<dyn PhysicalExpr>)>,
    schema: SchemaRef,
    text: String,
}

impl std::fmt::Debug for SqlWhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlWhere")
            .field("where", &self.text)
            .finish()
    }
}

impl SqlWhere {
    /// Parses and plans the condition `sql` (if any) and the derived `columns` once, with the
    /// filters' SQL functions at `filters`' settings.
    pub fn new(
        sql: Option<&str>,
        columns: &BTreeMap<String, String>,
        filters: &tokenmill_filters::FiltersConfig,
    ) -> Result<Self> {
        let schema = Arc::new(Schema::new(kept_fields()));
        let ctx = datafusion::prelude::SessionContext::new();
        crate::udf::register(&ctx, filters)?;
        let df = datafusion::common::DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| Error::Config(format!("[sql]: {e}")))?;
        let plan = |what: String, sql: &str| {
            let bad = |e: datafusion::error::DataFusionError| {
                Error::Config(format!("[sql] {what} = {sql:?}: {e}"))
            };
            let logical = ctx.parse_sql_expr(sql, &df).map_err(bad)?;
            ctx.create_physical_expr(logical, &df).map_err(bad)
        };
        let expr = match sql {
            Some(w) => Some(plan("where".into(), w)?),
            None => None,
        };
        let columns = columns
            .iter()
            .map(|(name, e)| Ok((name.clone(), plan(format!("columns.{name}"), e)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SqlWhere {
            expr,
            columns,
            schema,
            text: sql.unwrap_or("").to_string(),
        })
    }

    /// Whether there is a condition (`[sql] where`), so documents can be dropped.
    pub fn has_condition(&self) -> bool {
        self.expr.is_some()
    }

    /// The documents as the table the expressions see.
    fn batch(&self, rows: &[KeptRow<'_>]) -> Result<RecordBatch> {
        use arrow::array::{Float64Array, StringArray, UInt64Array};
        let cols: Vec<ArrayRef> = vec![
            Arc::new(
                rows.iter()
                    .map(|k| Some(k.meta.id))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|k| Some(k.meta.source))
                    .collect::<StringArray>(),
            ),
            Arc::new(rows.iter().map(|k| k.meta.offset).collect::<UInt64Array>()),
            Arc::new(rows.iter().map(|k| k.meta.url).collect::<StringArray>()),
            Arc::new(
                rows.iter()
                    .map(|k| k.kept.lang.as_ref().map(|l| l.0.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|k| k.kept.lang.as_ref().map(|l| l.1))
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|k| Some(k.kept.text.as_ref()))
                    .collect::<StringArray>(),
            ),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// Whether each document passes (NULL counts as no; all pass without a condition).
    pub fn eval(&self, rows: &[KeptRow<'_>]) -> Result<Vec<bool>> {
        let Some(expr) = &self.expr else {
            return Ok(vec![true; rows.len()]);
        };
        let batch = self.batch(rows)?;
        let v = expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| Error::Config(format!("[sql] where = {:?}: {e}", self.text)))?;
        let b = v
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .ok_or_else(|| {
                Error::Config(format!(
                    "[sql] where = {:?} is not a boolean condition ({})",
                    self.text,
                    v.data_type()
                ))
            })?;
        Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
    }

    /// The derived columns of each document, as JSON values by name.
    pub fn derive(
        &self,
        rows: &[KeptRow<'_>],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let mut out = vec![serde_json::Map::new(); rows.len()];
        if self.columns.is_empty() || rows.is_empty() {
            return Ok(out);
        }
        let batch = self.batch(rows)?;
        for (name, expr) in &self.columns {
            let arr = expr
                .evaluate(&batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|e| Error::Config(format!("[sql] columns.{name}: {e}")))?;
            for (i, row) in out.iter_mut().enumerate() {
                let v = ScalarValue::try_from_array(&arr, i)
                    .map_err(|e| Error::Config(format!("[sql] columns.{name}: {e}")))?;
                row.insert(name.clone(), scalar_json(&v));
            }
        }
        Ok(out)
    }
}

/// Why `[sql] where` dropped a document.
pub(super) fn dropped() -> Dropped {
    Dropped {
        stage: "sql",
        rule: "where".into(),
        value: f64::NAN,
        threshold: f64::NAN,
        text: None,
    }
}

/// A SQL value as JSON: numbers and booleans as themselves, NULL as null, the rest as text.
fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    use ScalarValue as S;
    match v {
        _ if v.is_null() => serde_json::Value::Null,
        S::Boolean(Some(b)) => (*b).into(),
        S::Int8(Some(x)) => (*x).into(),
        S::Int16(Some(x)) => (*x).into(),
        S::Int32(Some(x)) => (*x).into(),
        S::Int64(Some(x)) => (*x).into(),
        S::UInt8(Some(x)) => (*x).into(),
        S::UInt16(Some(x)) => (*x).into(),
        S::UInt32(Some(x)) => (*x).into(),
        S::UInt64(Some(x)) => (*x).into(),
        S::Float32(Some(x)) => serde_json::json!(*x),
        S::Float64(Some(x)) => serde_json::json!(*x),
        S::Utf8(Some(t)) | S::LargeUtf8(Some(t)) | S::Utf8View(Some(t)) => t.clone().into(),
        other => other.to_string().into(),
    }
}
