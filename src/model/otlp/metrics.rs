//! Metrics → metricsets: data points of one scope with the same timestamp
//! and attributes become one `app` metricset, one sample per metric.
//!
//! Invariants: gauges give `gauge` samples, sums (monotonic or not)
//! `counter` samples, histograms `histogram` samples (bucket midpoints and
//! counts; a histogram without bounds is one bucket at its mean), summaries
//! `summary` samples (count and sum; quantiles are not kept), as apm-data
//! does; exponential histograms have no model equivalent in apm-data and
//! are rejected per data point; a point without a finite value is rejected.

use super::super::event::{Body, Labels, Metricset, Sample};
use super::super::{Event, RequestBase};
use super::{attrs, merge_labels, resource, set_label, Rejected};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, NumberDataPoint};

/// Data points of one scope grouped by (timestamp, attributes).
#[derive(Default)]
struct Groups {
    groups: Vec<(u64, Vec<KeyValue>, Vec<Sample>)>,
}

impl Groups {
    fn add(&mut self, ts: u64, attributes: &[KeyValue], s: Sample) {
        match self
            .groups
            .iter_mut()
            .find(|(t, a, _)| *t == ts && a.as_slice() == attributes)
        {
            Some(g) => g.2.push(s),
            None => self.groups.push((ts, attributes.to_vec(), vec![s])),
        }
    }
}

pub(crate) fn translate(
    m: ExportMetricsServiceRequest,
    base: &RequestBase,
    out: &mut Vec<Event>,
    rejected: &mut Vec<Rejected>,
) {
    for rm in &m.resource_metrics {
        for sm in &rm.scope_metrics {
            let meta = resource::metadata(rm.resource.as_ref(), sm.scope.as_ref(), base);
            let mut g = Groups::default();
            for metric in &sm.metrics {
                let sample = |type_: &str| Sample {
                    name: metric.name.clone(),
                    type_: type_.into(),
                    unit: metric.unit.clone(),
                    ..Default::default()
                };
                match &metric.data {
                    Some(Data::Gauge(d)) => {
                        numbers(&d.data_points, sample("gauge"), &mut g, rejected)
                    }
                    Some(Data::Sum(d)) => {
                        numbers(&d.data_points, sample("counter"), &mut g, rejected)
                    }
                    Some(Data::Histogram(d)) => {
                        for p in &d.data_points {
                            match histogram(p, sample("histogram")) {
                                Ok(s) => g.add(p.time_unix_nano, &p.attributes, s),
                                Err(r) => rejected.push(r),
                            }
                        }
                    }
                    Some(Data::Summary(d)) => {
                        for p in &d.data_points {
                            let s = Sample {
                                summary: Some((p.count, p.sum)),
                                ..sample("summary")
                            };
                            g.add(p.time_unix_nano, &p.attributes, s);
                        }
                    }
                    Some(Data::ExponentialHistogram(d)) => {
                        unsupported(d.data_points.len(), "exponential histogram", rejected)
                    }
                    None => rejected.push(Rejected {
                        message: format!("metric {:?} has no data", metric.name),
                    }),
                }
            }
            for (ts, attributes, samples) in g.groups {
                let mut ev = Event::new(
                    &meta,
                    Body::Metricset(Box::new(Metricset {
                        name: "app".into(),
                        samples,
                        ..Default::default()
                    })),
                );
                if ts != 0 {
                    ev.timestamp_ns = i64::try_from(ts).unwrap_or(i64::MAX);
                }
                let mut labels = Labels::default();
                for (k, v) in attrs(&attributes) {
                    set_label(&mut labels, k, v);
                }
                merge_labels(&mut ev, labels);
                out.push(ev);
            }
        }
    }
}

fn unsupported(points: usize, what: &str, rejected: &mut Vec<Rejected>) {
    for _ in 0..points {
        rejected.push(Rejected {
            message: format!("{what} data points are not supported"),
        });
    }
}

fn numbers(
    points: &[NumberDataPoint],
    proto: Sample,
    g: &mut Groups,
    rejected: &mut Vec<Rejected>,
) {
    for p in points {
        let value = match p.value {
            Some(Value::AsDouble(d)) if d.is_finite() => d,
            Some(Value::AsInt(i)) => i as f64,
            Some(Value::AsDouble(_)) | None => {
                rejected.push(Rejected {
                    message: format!("data point of {:?} has no finite value", proto.name),
                });
                continue;
            }
        };
        g.add(
            p.time_unix_nano,
            &p.attributes,
            Sample {
                value,
                ..proto.clone()
            },
        );
    }
}

/// Explicit-bucket histogram → midpoints and counts, as apm-data does (no
/// bounds: one bucket, the mean, holding every value); the
/// first bucket's value is half its upper bound (when positive), the last
/// bucket's value its lower bound; empty buckets are left out.
fn histogram(p: &HistogramDataPoint, proto: Sample) -> Result<Sample, Rejected> {
    let b = &p.explicit_bounds;
    if b.is_empty() {
        let mean = p.sum.unwrap_or(0.0) / p.count as f64;
        return Ok(Sample {
            values: vec![if mean.is_finite() { mean } else { 0.0 }],
            counts: vec![i64::try_from(p.count).unwrap_or(i64::MAX)],
            ..proto
        });
    }
    if p.bucket_counts.len() != b.len() + 1 {
        return Err(Rejected {
            message: format!(
                "histogram {:?}: {} bucket counts for {} bounds",
                proto.name,
                p.bucket_counts.len(),
                b.len()
            ),
        });
    }
    let mut values = Vec::new();
    let mut counts = Vec::new();
    for (i, &c) in p.bucket_counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let v = if i == 0 {
            match b.first() {
                Some(&ub) if ub > 0.0 => ub / 2.0,
                Some(&ub) => ub,
                None => 0.0,
            }
        } else if i == b.len() {
            b[i - 1]
        } else {
            b[i - 1] + (b[i] - b[i - 1]) / 2.0
        };
        values.push(v);
        counts.push(i64::try_from(c).unwrap_or(i64::MAX));
    }
    Ok(Sample {
        values,
        counts,
        ..proto
    })
}
