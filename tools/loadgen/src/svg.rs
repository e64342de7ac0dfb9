//! Hand-written SVG plots for the perf reports: the cumulative distribution of one or more sets
//! of durations, as step lines on shared axes (like the original Zatt's "leader election
//! duration" figure). Owns drawing only.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A "nice" axis maximum and tick step covering `max` (1, 2 or 5 times a power of ten).
fn axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let raw = max / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One CDF per series `(label, samples, colour)`, under a title and a smaller subtitle.
pub fn cdf(title: &str, subtitle: &str, x_label: &str, series: &[(&str, &[f64], &str)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v, _)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let (xmax, xstep) = axis(max);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + pw * v / xmax;
    let y = |p: f64| TOP + ph * (1.0 - p);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{0}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{1}</text>\
         <text x=\"{0}\" y=\"33\" text-anchor=\"middle\" font-size=\"10\" fill=\"#555\">{2}</text>",
        W / 2.0,
        esc(title),
        esc(subtitle)
    );
    // Grid and ticks.
    let mut t = 0.0;
    while t <= xmax + xstep / 2.0 {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
            x(t),
            TOP,
            TOP + ph,
            TOP + ph + 16.0,
            if xstep < 1.0 {
                format!("{t:.1}")
            } else {
                format!("{t:.0}")
            }
        );
        t += xstep;
    }
    for i in 0..=10 {
        let p = i as f64 / 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>",
            y(p),
            LEFT + pw,
            LEFT - 6.0,
            y(p) + 4.0,
            i * 10
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        H - 10.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">trials at or below</text>",
        TOP + ph / 2.0
    );
    // The step lines.
    for (k, (label, v, colour)) in series.iter().enumerate() {
        let mut sorted: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len().max(1) as f64;
        let mut d = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        for (i, v) in sorted.iter().enumerate() {
            let _ = write!(d, " H{:.1} V{:.1}", x(*v), y((i + 1) as f64 / n));
        }
        let _ = write!(d, " H{:.1}", x(xmax));
        let _ = writeln!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>"
        );
        // The legend sits top left, where a CDF (still near 0 % at small values) leaves room.
        let ly = TOP + 16.0 + 18.0 * k as f64;
        let lx = LEFT + 14.0;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"284\" height=\"18\" fill=\"white\" opacity=\"0.9\"/>\
             <line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"3\"/>\
             <text x=\"{}\" y=\"{}\">{} (n={})</text>",
            lx - 4.0,
            ly - 10.0,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(label),
            sorted.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_covers_the_maximum_with_round_steps() {
        assert_eq!(axis(73.0), (80.0, 10.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
        let (m, s) = axis(1234.0);
        assert!(m >= 1234.0 && s == 200.0);
    }

    #[test]
    fn cdf_is_one_well_formed_svg_with_a_path_per_series() {
        let svg = cdf(
            "t <x>",
            "sub",
            "ms",
            &[("a", &[1.0, 2.0, 3.0], "red"), ("b", &[], "blue")],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("t &lt;x&gt;"));
    }
}
