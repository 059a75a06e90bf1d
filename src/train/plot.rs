//! The loss curve of a training run as a PNG (plotters): the train loss per step, its moving
//! average, and the eval loss where it was measured.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Steps in the moving average of the train loss.
const WINDOW: usize = 10;

/// Registers the font compiled in (once): a PNG must not depend on what fonts the machine has.
pub(crate) fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// Draws the curve of `metrics` (the run's `metrics.jsonl`) into `png`.
pub fn loss_curve(metrics: &Path, png: &Path, title: &str) -> Result<(), String> {
    let text =
        std::fs::read_to_string(metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    let mut train: Vec<(f64, f64)> = Vec::new();
    let mut eval: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(loss)) = (v["step"].as_f64(), v["loss"].as_f64()) else {
            continue;
        };
        if loss.is_finite() {
            train.push((step, loss));
        }
        if let Some(e) = v["eval_loss"].as_f64().filter(|e| e.is_finite()) {
            eval.push((step, e));
        }
    }
    if train.is_empty() {
        return Err(format!("{}: no steps to plot", metrics.display()));
    }
    let smooth: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let w = &train[i.saturating_sub(WINDOW - 1)..=i];
            (
                train[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    let x_max = train.last().map_or(1.0, |p| p.0).max(1.0);
    let y_max = train
        .iter()
        .chain(&eval)
        .map(|p| p.1)
        .fold(0f64, f64::max)
        .max(1e-3)
        * 1.05;
    register_font();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", png.display());
    let root = BitMapBackend::new(png, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss on answer tokens (nats)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    let light = RGBColor(150, 180, 230);
    chart
        .draw_series(LineSeries::new(
            train.iter().copied(),
            light.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label("train loss")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label(format!("train loss, mean of {WINDOW} steps"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if !eval.is_empty() {
        chart
            .draw_series(LineSeries::new(eval.iter().copied(), RED.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("eval loss (held out)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(eval.iter().map(|&p| Circle::new(p, 4, RED.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let lines: Vec<String> = (1..=30)
            .map(|s| {
                let eval = if s % 10 == 0 {
                    format!(",\"eval_loss\":{}", 2.0 / s as f64 + 0.3)
                } else {
                    String::new()
                };
                format!("{{\"step\":{s},\"loss\":{}{eval}}}", 3.0 / s as f64)
            })
            .collect();
        std::fs::write(&m, lines.join("\n")).unwrap();
        let png = dir.path().join("loss.png");
        loss_curve(&m, &png, "test run").unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 960);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 540);
        // A blank image compresses to almost nothing; axes, text and three series do not.
        assert!(bytes.len() > 8_000, "{} bytes", bytes.len());
        // No steps, no picture.
        std::fs::write(&m, "").unwrap();
        assert!(loss_curve(&m, &png, "empty").is_err());
    }
}
