//! PNG plots of the invocation scenarios, drawn with `plotters` into an RGB buffer and encoded
//! with `png`: latency percentile curves at the constant rate, closed-loop throughput bars, and
//! the proxies' CPU and memory. Text needs a TrueType font: DejaVu Sans (or `MECHA_BENCH_FONT`);
//! without one no plot is drawn and the report says so.

use std::path::Path;

use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::invoke::{BASELINE, HAPROXY, MECHA, QUANTILES, RATE, Results, Target};

const SIZE: (u32, u32) = (900, 520);
const FONT: &str = "sans-serif";

fn colour(name: &str) -> RGBColor {
    match name {
        BASELINE => RGBColor(90, 90, 90),
        HAPROXY => RGBColor(31, 119, 180),
        MECHA => RGBColor(214, 39, 40),
        crate::invoke::MECHA_MTLS => RGBColor(148, 103, 189),
        _ => RGBColor(44, 160, 44),
    }
}

/// Registers a font for the plots' text; false when none is found.
fn register_font() -> bool {
    let candidates = [
        std::env::var("MECHA_BENCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/dejavu/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".to_owned(),
    ];
    for path in candidates.iter().filter(|p| !p.is_empty()) {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

fn save_png(path: &Path, buf: &[u8]) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(buf)?;
    Ok(())
}

/// Draws every plot into `dir`; returns (title, file name) of those written.
pub(crate) fn draw(inv: &Results, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if !register_font() {
        anyhow::bail!("no TrueType font found for the plots (set MECHA_BENCH_FONT)");
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (grpc, list) in [(false, &inv.http), (true, &inv.grpc)] {
        if list.is_empty() {
            continue;
        }
        let proto = if grpc { "gRPC" } else { "HTTP" };
        let file = format!("invoke-latency-{}.png", proto.to_lowercase());
        let title = format!("{proto} invocation latency at {RATE} req/s (1 KB, 16 connections)");
        latency(&dir.join(&file), &title, list)?;
        written.push((title, file));
    }
    let file = "invoke-throughput.png".to_owned();
    let title = "Closed-loop throughput, 16 connections (req/s)".to_owned();
    throughput(&dir.join(&file), &title, inv)?;
    written.push((title, file));
    let file = "invoke-footprint.png".to_owned();
    let title = format!("Proxy CPU per 1000 requests and RSS at {RATE} req/s (HTTP)");
    footprint(&dir.join(&file), &title, &inv.http)?;
    written.push((title, file));
    Ok(written)
}

fn latency(path: &Path, title: &str, list: &[Target]) -> anyhow::Result<()> {
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let values = list
            .iter()
            .flat_map(|t| t.rate.pct_us.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0);
        let max = values.clone().fold(1.0, f64::max) * 1.5;
        let min = values.fold(f64::MAX, f64::min).min(max / 2.0) / 1.5;
        let n = QUANTILES.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(n - 1) as f64, (min.max(1.0)..max).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    QUANTILES
                        .get(i as usize)
                        .map_or(String::new(), |(p, _)| (*p).to_owned())
                } else {
                    String::new()
                }
            })
            .y_desc("latency µs (log)")
            .x_desc("percentile")
            .label_style((FONT, 14))
            .draw()?;
        for t in list {
            let c = colour(t.name);
            let points: Vec<(f64, f64)> = t
                .rate
                .pct_us
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(i, v)| (i as f64, *v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
                .label(t.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    save_png(path, &buf)
}

/// Bars of `values` (label, value, colour) with their value written above each bar.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    values: &[(String, f64, RGBColor)],
    decimals: usize,
) -> anyhow::Result<()> {
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    let n = values.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..n.saturating_sub(1)).into_segmented(), 0f64..max)?;
    let labels: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(values.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()?;
    for (i, (_, v, c)) in values.iter().enumerate() {
        let i = i as u32;
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *v),
            ],
            c.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.decimals$}"),
            (SegmentValue::CenterOf(i), *v + max * 0.02),
            (FONT, 14),
        )))?;
    }
    Ok(())
}

fn throughput(path: &Path, title: &str, inv: &Results) -> anyhow::Result<()> {
    let mut values = Vec::new();
    for (proto, list) in [("HTTP", &inv.http), ("gRPC", &inv.grpc)] {
        for t in list {
            values.push((format!("{proto} {}", t.name), t.sat.rps, colour(t.name)));
        }
    }
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        bars(&root, title, "req/s", &values, 0)?;
        root.present()?;
    }
    save_png(path, &buf)
}

fn footprint(path: &Path, title: &str, list: &[Target]) -> anyhow::Result<()> {
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for t in list {
        for (i, p) in t.processes.iter().enumerate() {
            let short = p.replace(" sidecar", "");
            let label = short;
            cpu.push((
                label.clone(),
                t.rate.cpu_per_1000(i).unwrap_or(0.0),
                colour(t.name),
            ));
            rss.push((
                label,
                t.rate.rss_kb.get(i).copied().unwrap_or(0) as f64 / 1024.0,
                colour(t.name),
            ));
        }
    }
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, (FONT, 20))?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        bars(&left, "CPU-s per 1000 requests", "CPU s", &cpu, 3)?;
        bars(&right, "RSS MB (red: Mecha, blue: HAProxy)", "MB", &rss, 1)?;
        root.present()?;
    }
    save_png(path, &buf)
}
