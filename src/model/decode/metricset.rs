//! v2 metricsets: samples (`value`, or `values` with `counts`), span and
//! transaction references, tags and a service override.
//!
//! Invariants: a metricset with transaction references is a span breakdown
//! (kept only with a span reference and a self-time count or sum); any
//! other is an `app` metricset whose unknown sample types are cleared. A
//! line with a violation yields nothing.

use super::context::faas;
use super::fields::*;
use super::*;
use crate::model::event::*;

pub(crate) fn metricset(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Option<Event>> {
    let mut ev = Event::new(meta, Body::Metricset(Box::default()));
    let mut ms = Metricset::default();
    if let Some(ts) = timestamp(o, "timestamp")? {
        ev.timestamp_ns = ts;
    }
    let samples = obj(o, "samples")?;
    match samples {
        Some(s) if !s.is_empty() => {
            for (k, v) in s.iter() {
                let so = match v {
                    V::Object(so) => so,
                    V::Static(StaticNode::Null) => {
                        ctx.push("samples");
                        ctx.fail(|| "requires at least one of the fields 'value;values'".into());
                        ctx.pop();
                        continue;
                    }
                    _ => return Err(LineError::Decode("samples: expected object".into())),
                };
                let smp = Sample {
                    name: k.to_string(),
                    type_: string(so, "type")?,
                    unit: string(so, "unit")?,
                    values: match arr(so, "values")? {
                        Some(a) => a
                            .iter()
                            .map(|v| {
                                v.cast_f64().ok_or_else(|| {
                                    LineError::Decode("values: expected number".into())
                                })
                            })
                            .collect::<R<Vec<f64>>>()?,
                        None => Vec::new(),
                    },
                    counts: match arr(so, "counts")? {
                        Some(a) => a
                            .iter()
                            .map(|v| match v {
                                V::Static(StaticNode::I64(i)) => Ok(i),
                                V::Static(StaticNode::U64(i)) => Ok(i as i64),
                                _ => Err(LineError::Decode("counts: expected integer".into())),
                            })
                            .collect::<R<Vec<i64>>>()?,
                        None => Vec::new(),
                    },
                    value: 0.0,
                    summary: None,
                };
                let value = num(so, "value")?;
                ctx.push("samples");
                if value.is_none() && smp.values.is_empty() {
                    ctx.fail(|| "requires at least one of the fields 'value;values'".into());
                }
                if smp.values.is_empty() && !smp.counts.is_empty() {
                    ctx.fail(|| "'values' required when 'counts' is set".into());
                }
                if smp.counts.is_empty() && !smp.values.is_empty() {
                    ctx.fail(|| "'counts' required when 'values' is set".into());
                }
                ctx.pop();
                if k.contains('*') || k.contains('"') {
                    ctx.fail(|| {
                        "'samples': validation rule 'patternKeys(patternNoAsteriskQuote)' violated"
                            .into()
                    });
                }
                ms.samples.push(Sample {
                    value: value.unwrap_or(0.0),
                    ..smp
                });
            }
        }
        _ => ctx.required("samples", false),
    }
    let span_ref = set_obj(o, "span")?;
    if let Some(s) = span_ref {
        ctx.push("span");
        ms.span_subtype = str_field(ctx, s, "subtype")?;
        ms.span_type = str_field(ctx, s, "type")?;
        ctx.pop();
    }
    let mut tags = None;
    labels(ctx, o, "tags", &mut tags)?;
    merge_labels(&mut ev, tags);
    let tx_ref = set_obj(o, "transaction")?;
    if let Some(t) = tx_ref {
        ctx.push("transaction");
        ms.transaction_name = str_field(ctx, t, "name")?;
        ms.transaction_type = str_field(ctx, t, "type")?;
        ctx.pop();
    }
    if let Some(s) = set_obj(o, "service")? {
        ctx.push("service");
        let name = opt_str(s, "name")?;
        ctx.max1024("name", name);
        let version = opt_str(s, "version")?;
        ctx.max1024("version", version);
        ctx.pop();
        if let Some(n) = name {
            let sv = Service::make_mut(&mut ev.service);
            sv.name = n.to_owned();
            sv.version = version.unwrap_or_default().to_owned();
        }
    }
    ev.faas = faas(o)?;
    if ctx.failed() {
        return Ok(None);
    }
    ms.has_refs = tx_ref.is_some() || span_ref.is_some();
    if tx_ref.is_some() {
        ms.name = "span_breakdown".into();
        for s in &ms.samples {
            match s.name.as_str() {
                "span.self_time.count" => ms.self_time_count = Some(s.value as i64),
                "span.self_time.sum.us" => {
                    ms.self_time_sum_us = Some(((s.value * 1000.0) as i64) / 1000)
                }
                _ => {}
            }
        }
        ms.samples.clear();
        if span_ref.is_none() || (ms.self_time_count.is_none() && ms.self_time_sum_us.is_none()) {
            return Ok(None);
        }
    } else {
        ms.name = "app".into();
        for s in ms.samples.iter_mut() {
            if !matches!(
                s.type_.as_str(),
                "gauge" | "counter" | "histogram" | "summary"
            ) {
                s.type_.clear();
            }
        }
    }
    ev.body = Body::Metricset(Box::new(ms));
    Ok(Some(ev))
}
