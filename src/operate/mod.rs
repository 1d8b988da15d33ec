//! Operating a pipeline from the terminal: `syncline status` (asks the
//! running pipeline's management API), `syncline snapshot` and `syncline dlq list|replay`
//! (reads and writes the dead-letter topics directly, through
//! [`crate::dead_letters`], so it works whether the pipeline runs or not).
//! Progress bars go to stderr when it is a terminal.

mod dlq;
mod progress;
mod snapshot;
mod status;

pub use dlq::{dlq_command, DlqCommand};
pub use snapshot::snapshot_command;
pub use status::{status_command, StatusArgs};

use crate::pipeline::config::PipelineConfig;
use crate::pipeline::{load_or_exit, EXIT_INVALID};

/// After `syncline snapshot`, on a terminal: a progress bar per table of
/// source `source`'s snapshot, from the running pipeline's API, until the
/// snapshot is over or the API cannot be asked (Ctrl-C stops following,
/// not the snapshot). Quiet when stderr is not a terminal.
pub async fn follow_snapshot(pipeline: &PipelineConfig, source: &str) {
    let Some(mut bars) = progress::Bars::new() else {
        return;
    };
    let state_dir = std::env::var_os("SYNCLINE_STATE_DIR")
        .map_or_else(|| std::path::PathBuf::from("syncline-state"), Into::into);
    let url = status::api_url(None, &state_dir, pipeline);
    let token = std::env::var("SYNCLINE_API_TOKEN").ok();
    let client = reqwest::Client::new();
    let path = format!("/api/v1/components/{source}");
    let mut started = false;
    eprintln!("following the snapshot at {url} (Ctrl-C stops following, not the snapshot)");
    for second in 0..86_400 {
        // A request the source has not taken up within a minute (it is
        // not running, or streams a long transaction): stop following.
        if !started && second > 60 {
            eprintln!("the source has not started the snapshot yet; `syncline status` shows it when it does");
            break;
        }
        let Ok(c) = status::get(&client, &url, &path, token.as_deref()).await else {
            break;
        };
        let snapshot = &c["snapshot"];
        let running = snapshot["running"].as_bool().unwrap_or(false);
        for t in snapshot["tables"].as_array().into_iter().flatten() {
            bars.set(
                t["table"].as_str().unwrap_or("?"),
                t["rows"].as_u64().unwrap_or(0),
                t["rows_estimated"].as_u64(),
                t["done"].as_bool().unwrap_or(false),
            );
        }
        started |= running;
        if started && !running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    bars.finish();
}

/// `n` bytes for people: 512 B, 12.5 KiB, 3.0 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Seconds for people: 0.4 s, 12 s, 3 min, 2.5 h.
fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows as columns padded to their widest cell (the last column unpadded).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_tables_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_800), "12.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(seconds(0.42), "0.4 s");
        assert_eq!(seconds(75.0), "75 s");
        assert_eq!(seconds(600.0), "10 min");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("a\nb", 10), "a b");
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["aaa".into(), "b".into(), "c c".into()],
        ]);
        assert_eq!(t, "A    BB  C\naaa  b   c c\n");
    }
}
