//! An SVG of the cost/quality trade-off of a strong-score threshold sweep, with the policy as
//! configured marked: people would rather look than read.

/// One point of the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub cost_usd: f64,
    /// Quality (labelled traffic) or share of cloud calls (unlabelled).
    pub y: f64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws the sweep as a line, the chosen policy as a red dot.
pub fn svg(title: &str, y_label: &str, sweep: &[Point], chosen: Point) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let xs = sweep.iter().map(|p| p.cost_usd).chain([chosen.cost_usd]);
    let ys = sweep.iter().map(|p| p.y).chain([chosen.y]);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let sx = |x: f64| m + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(1e-12) * (h - 2.0 * m);
    let mut pts: Vec<Point> = sweep.to_vec();
    pts.sort_by(|a, b| a.cost_usd.total_cmp(&b.cost_usd));
    let line: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", sx(p.cost_usd), sy(p.y)))
        .collect();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">estimated cost (USD)</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>\n",
        w / 2.0,
        esc(title),
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 16.0,
        h / 2.0,
        h / 2.0,
        esc(y_label)
    );
    for (x, anchor) in [(x0, "start"), (x1, "end")] {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{x:.4}</text>\n",
            sx(x),
            h - m + 16.0
        );
    }
    for y in [y0, y1] {
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.3}</text>\n",
            m - 6.0,
            sy(y) + 4.0
        );
    }
    s += &format!(
        "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{}\"/>\n",
        line.join(" ")
    );
    for p in &pts {
        s += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"steelblue\"/>\n",
            sx(p.cost_usd),
            sy(p.y)
        );
    }
    s += &format!(
        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"crimson\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"crimson\">this policy</text>\n</svg>\n",
        sx(chosen.cost_usd),
        sy(chosen.y),
        sx(chosen.cost_usd) + 9.0,
        sy(chosen.y) - 8.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_point_and_the_marker() {
        let sweep = [
            Point {
                cost_usd: 0.0,
                y: 0.5,
            },
            Point {
                cost_usd: 1.0,
                y: 0.9,
            },
            Point {
                cost_usd: 0.5,
                y: 0.8,
            },
        ];
        let s = svg(
            "t <x>",
            "quality",
            &sweep,
            Point {
                cost_usd: 0.5,
                y: 0.8,
            },
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("r=\"2.5\"").count(), 3);
        assert!(s.contains("this policy") && s.contains("t &lt;x&gt;"));
    }
}
