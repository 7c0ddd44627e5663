//! PNG plot of a run: events per second (sent and accepted) on top, request
//! latency p50/p99 per second below. Drawn with plotters' bitmap backend;
//! text uses the Hack font embedded by the `epaint_default_fonts` crate
//! through plotters' `ab_glyph` feature, so no system font is needed.
//! Latency lines skip seconds in which no request finished.

use crate::stats::Report;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;

const FONT: &str = "sans-serif";

/// Draws `report`'s time series into the PNG at `path`.
pub fn draw(report: &Report, title: &str, path: &Path) -> Result<(), String> {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        let _ = register_font(FONT, FontStyle::Normal, epaint_default_fonts::HACK_REGULAR);
    });
    draw_inner(report, title, path).map_err(|e| e.to_string())
}

fn draw_inner(report: &Report, title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1100, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let (top, bottom) = root.split_vertically(380);
    let n = report.series.len().max(2) as u64;

    let max_ev = report
        .series
        .iter()
        .map(|p| p.events_sent.max(p.events_accepted))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut c = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .caption("events per second", (FONT, 16))
        .build_cartesian_2d(0u64..n, 0f64..max_ev)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("events/s")
        .label_style((FONT, 12))
        .draw()?;
    c.draw_series(LineSeries::new(
        report.series.iter().map(|p| (p.t, p.events_sent as f64)),
        BLUE.stroke_width(2),
    ))?
    .label("sent")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    c.draw_series(LineSeries::new(
        report
            .series
            .iter()
            .map(|p| (p.t, p.events_accepted as f64)),
        GREEN.stroke_width(2),
    ))?
    .label("accepted (202 + partial)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN));
    c.configure_series_labels()
        .label_font((FONT, 12))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    let max_lat = report
        .series
        .iter()
        .map(|p| p.p99_ms)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .caption("request latency (ms)", (FONT, 16))
        .build_cartesian_2d(0u64..n, 0f64..max_lat)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .label_style((FONT, 12))
        .draw()?;
    c.draw_series(LineSeries::new(
        report
            .series
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| (p.t, p.p50_ms)),
        BLUE.stroke_width(2),
    ))?
    .label("p50")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    c.draw_series(LineSeries::new(
        report
            .series
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| (p.t, p.p99_ms)),
        RED.stroke_width(2),
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    c.configure_series_labels()
        .label_font((FONT, 12))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
