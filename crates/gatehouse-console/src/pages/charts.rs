//! Inline SVG charts drawn on the server: stacked bars of events per
//! source and a line of the delivery failure rate. The templates draw
//! the shapes from these numbers; labels go through HTML escaping like
//! everything else.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_core::UnixMillis;
use gatehouse_store::{ActivityBucket, AttemptBucket};

/// Drawing area, in SVG user units (the SVG scales to its box).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 36.0;
const RIGHT: f64 = 20.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
/// Colour classes in the stylesheet (`c0`…`c5`); sources past them reuse.
const PALETTE: usize = 6;

/// One rectangle.
pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub class: String,
    pub title: String,
}

/// A label under the x axis.
pub struct Tick {
    pub x: String,
    pub text: String,
}

/// One legend entry.
pub struct Legend {
    pub class: String,
    pub label: String,
}

/// A point of a line chart with its tooltip.
pub struct Dot {
    pub x: String,
    pub y: String,
    pub title: String,
}

/// A chart ready for the template.
pub struct Chart {
    pub width: String,
    pub height: String,
    /// x of the y axis, y of the x axis.
    pub axis_x: String,
    pub axis_y: String,
    pub right: String,
    pub top: String,
    /// The largest value, shown at the top of the y axis.
    pub max_label: String,
    pub bars: Vec<Bar>,
    /// `points` of the polyline (line charts), numbers only.
    pub line: String,
    pub dots: Vec<Dot>,
    pub ticks: Vec<Tick>,
    pub legend: Vec<Legend>,
    /// Whether there is anything to draw.
    pub empty: bool,
}

fn num(value: f64) -> String {
    format!("{value:.1}")
}

/// The bucket starts from `since` to `now`.
fn slots(since: UnixMillis, now: UnixMillis, bucket: Duration) -> Vec<i64> {
    let width = bucket.as_millis().max(1) as i64;
    let first = since.0.div_euclid(width) * width;
    let mut starts = Vec::new();
    let mut start = first;
    while start <= now.0 && starts.len() < 500 {
        starts.push(start);
        start += width;
    }
    starts
}

/// A short label for a bucket start: the time of day for ranges within a
/// day or two, else the date.
fn tick_label(start: i64, bucket: Duration) -> String {
    let text = super::view::time(UnixMillis(start));
    // "2026-11-27 09:00:11Z"
    if bucket < Duration::from_secs(3 * 3600) {
        text.get(11..16).unwrap_or_default().to_string()
    } else {
        text.get(5..16).unwrap_or_default().to_string()
    }
}

fn frame(max_label: String) -> Chart {
    Chart {
        width: num(WIDTH),
        height: num(HEIGHT),
        axis_x: num(LEFT),
        axis_y: num(HEIGHT - BOTTOM),
        right: num(WIDTH - RIGHT),
        top: num(TOP),
        max_label,
        bars: Vec::new(),
        line: String::new(),
        dots: Vec::new(),
        ticks: Vec::new(),
        legend: Vec::new(),
        empty: true,
    }
}

fn ticks(starts: &[i64], bucket: Duration, slot_width: f64) -> Vec<Tick> {
    let every = (starts.len() / 6).max(1);
    starts
        .iter()
        .enumerate()
        .filter(|(index, _)| index % every == 0)
        .map(|(index, start)| Tick {
            x: num(LEFT + slot_width * index as f64 + slot_width / 2.0),
            text: tick_label(*start, bucket),
        })
        .collect()
}

/// Events per bucket, stacked by source.
pub fn events_per_source(buckets: &[ActivityBucket], since: UnixMillis, now: UnixMillis, bucket: Duration) -> Chart {
    let starts = slots(since, now, bucket);
    let mut sources: Vec<&str> = buckets.iter().map(|b| b.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let mut counts: BTreeMap<(i64, &str), u64> = BTreeMap::new();
    for b in buckets {
        *counts.entry((b.start.0, b.source.as_str())).or_default() += b.events;
    }
    let totals: Vec<u64> = starts
        .iter()
        .map(|start| {
            sources
                .iter()
                .map(|s| counts.get(&(*start, *s)).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    let mut chart = frame(max.to_string());
    if starts.is_empty() {
        return chart;
    }
    let slot_width = (WIDTH - LEFT - RIGHT) / starts.len() as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    for (index, start) in starts.iter().enumerate() {
        let mut y = HEIGHT - BOTTOM;
        for (color, source) in sources.iter().enumerate() {
            let count = counts.get(&(*start, *source)).copied().unwrap_or(0);
            if count == 0 || max == 0 {
                continue;
            }
            let h = plot * count as f64 / max as f64;
            y -= h;
            chart.bars.push(Bar {
                x: num(LEFT + slot_width * index as f64 + slot_width * 0.1),
                y: num(y),
                w: num(slot_width * 0.8),
                h: num(h),
                class: format!("c{}", color % PALETTE),
                title: format!(
                    "{source}: {count} events from {}",
                    super::view::time(UnixMillis(*start))
                ),
            });
        }
    }
    chart.ticks = ticks(&starts, bucket, slot_width);
    chart.legend = sources
        .iter()
        .enumerate()
        .map(|(color, source)| Legend {
            class: format!("c{}", color % PALETTE),
            label: source.to_string(),
        })
        .collect();
    chart.empty = max == 0;
    chart
}

/// The share of attempts that failed, per bucket (buckets without
/// attempts are left out of the line).
pub fn failure_rate(buckets: &[AttemptBucket], since: UnixMillis, now: UnixMillis, bucket: Duration) -> Chart {
    let starts = slots(since, now, bucket);
    let mut chart = frame("100%".into());
    if starts.is_empty() {
        return chart;
    }
    let by_start: BTreeMap<i64, &AttemptBucket> = buckets.iter().map(|b| (b.start.0, b)).collect();
    let slot_width = (WIDTH - LEFT - RIGHT) / starts.len() as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    let mut points = Vec::new();
    for (index, start) in starts.iter().enumerate() {
        let Some(b) = by_start.get(start) else { continue };
        let total = b.succeeded + b.failed;
        if total == 0 {
            continue;
        }
        let rate = b.failed as f64 / total as f64;
        let x = LEFT + slot_width * index as f64 + slot_width / 2.0;
        let y = HEIGHT - BOTTOM - plot * rate;
        points.push(format!("{},{}", num(x), num(y)));
        chart.dots.push(Dot {
            x: num(x),
            y: num(y),
            title: format!(
                "{:.0}% failed ({} of {} attempts) from {}",
                rate * 100.0,
                b.failed,
                total,
                super::view::time(UnixMillis(*start))
            ),
        });
    }
    chart.line = points.join(" ");
    chart.ticks = ticks(&starts, bucket, slot_width);
    chart.empty = chart.dots.is_empty();
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_sources_and_scales_to_the_largest_bucket() {
        let hour = Duration::from_secs(3600);
        let since = UnixMillis(0);
        let now = UnixMillis(3 * 3_600_000 - 1);
        let buckets = vec![
            ActivityBucket {
                start: UnixMillis(0),
                source: "a".into(),
                events: 2,
                verification_failures: 0,
            },
            ActivityBucket {
                start: UnixMillis(0),
                source: "b".into(),
                events: 2,
                verification_failures: 0,
            },
            ActivityBucket {
                start: UnixMillis(3_600_000),
                source: "a".into(),
                events: 1,
                verification_failures: 0,
            },
        ];
        let chart = events_per_source(&buckets, since, now, hour);
        assert_eq!(chart.max_label, "4");
        assert_eq!(chart.bars.len(), 3);
        assert_eq!(chart.legend.len(), 2);
        // The full bucket reaches the top of the plot.
        assert_eq!(chart.bars[1].y, num(TOP));
        assert!(!chart.empty);
        let none = events_per_source(&[], since, now, hour);
        assert!(none.empty && none.bars.is_empty());
    }

    #[test]
    fn failure_rate_skips_quiet_buckets() {
        let hour = Duration::from_secs(3600);
        let buckets = vec![AttemptBucket {
            start: UnixMillis(3_600_000),
            succeeded: 1,
            failed: 3,
        }];
        let chart = failure_rate(&buckets, UnixMillis(0), UnixMillis(3 * 3_600_000 - 1), hour);
        assert_eq!(chart.dots.len(), 1);
        assert!(chart.dots[0].title.starts_with("75% failed (3 of 4"));
        assert!(!chart.line.contains(' '));
    }
}
