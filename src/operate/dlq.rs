//! `syncline dlq list|replay PIPELINE`: the pipeline's dead letters, from
//! the dead-letter topics themselves ([`crate::dead_letters`]).

use super::progress;
use super::{clip, load_or_exit, table, EXIT_INVALID};
use crate::dead_letters::{self, Filter, Letter};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: time, component, where in the
    /// dead-letter topic, origin, reason, key, whether replayed.
    List {
        #[command(flatten)]
        selection: Selection,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back into the topics they came from, each once
    /// (a dead letter already replayed is skipped unless --force). Every
    /// sink applies a replayed change at most once: it carries its
    /// change's identity.
    Replay {
        #[command(flatten)]
        selection: Selection,
        /// Print what would be replayed; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay dead letters that were replayed before, too.
        #[arg(long)]
        force: bool,
    },
}

/// Which dead letters: every option given must hold.
#[derive(clap::Args)]
pub struct Selection {
    /// The pipeline file (YAML).
    pipeline: PathBuf,
    /// Only this component's dead letters (required for replay).
    #[arg(long, value_name = "NAME")]
    component: Option<String>,
    /// Only those of records for this topic (where they came from).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Only those whose reason contains this text.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Only those written at or after this time (RFC 3339, e.g. 2026-12-06T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<DateTime<Utc>>,
    /// Only those written before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<DateTime<Utc>>,
    /// Only this partition of the dead-letter topic.
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Only offsets at or above this one in the dead-letter topic.
    #[arg(long, value_name = "OFFSET")]
    from_offset: Option<i64>,
    /// Only offsets at or below this one in the dead-letter topic.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
}

impl Selection {
    fn filter(&self) -> Filter {
        Filter {
            topic: self.topic.clone(),
            reason: self.reason.clone(),
            since: self.since,
            until: self.until,
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
        }
    }
}

fn row(l: &Letter, key: Option<serde_json::Value>) -> Vec<String> {
    vec![
        l.timestamp
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        l.component.clone(),
        format!("{}/{}", l.partition, l.offset),
        l.origin.as_ref().map_or_else(
            || l.origin_topic.clone().unwrap_or_else(|| "-".into()),
            |o| format!("{}/{}/{}", o.topic, o.partition, o.offset),
        ),
        key.map_or("-".into(), |k| clip(&k.to_string(), 40)),
        match (&l.replayed, l.replayable()) {
            (Some(r), _) => format!("replayed {}", r.at.format("%Y-%m-%d %H:%M")),
            (None, false) => "not replayable".into(),
            (None, true) => "-".into(),
        },
        clip(&l.reason, 120),
    ]
}

const HEADER: [&str; 7] = [
    "TIME",
    "COMPONENT",
    "AT",
    "ORIGIN",
    "KEY",
    "REPLAYED",
    "REASON",
];

pub async fn dlq_command(command: &DlqCommand) -> ExitCode {
    let selection = match command {
        DlqCommand::List { selection, .. } | DlqCommand::Replay { selection, .. } => selection,
    };
    let pipeline = match load_or_exit(&selection.pipeline) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let file = selection.pipeline.display();
    if let Some(c) = &selection.component {
        if !dead_letters::topics_of(&pipeline, None)
            .iter()
            .any(|t| &t.component == c)
        {
            eprintln!("error: {file}: no component `{c}`");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let topics = dead_letters::topics_of(&pipeline, selection.component.as_deref());
    let decoder = dead_letters::key_decoder(&pipeline);
    match command {
        DlqCommand::List { limit, json, .. } => {
            let listed = dead_letters::list(
                &pipeline.kafka,
                &pipeline.name,
                &topics,
                &selection.filter(),
                (*limit).max(1),
            )
            .await;
            let (letters, truncated) = match listed {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {file}: cannot read the dead letters: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut rows = vec![HEADER.map(String::from).to_vec()];
            for l in &letters {
                let key = dead_letters::key_json(decoder.as_ref(), l).await;
                if *json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "component": l.component, "topic": l.topic, "partition": l.partition,
                            "offset": l.offset, "timestamp": l.timestamp, "reason": l.reason,
                            "origin": l.origin, "key": key, "replayable": l.replayable(),
                            "replayed": l.replayed,
                        })
                    );
                } else {
                    rows.push(row(l, key));
                }
            }
            if !*json {
                print!("{}", table(&rows));
                eprintln!(
                    "{} dead letter(s){}",
                    letters.len(),
                    if truncated {
                        " shown; more match (raise --limit or narrow the selection)".to_string()
                    } else {
                        String::new()
                    }
                );
            }
            ExitCode::SUCCESS
        }
        DlqCommand::Replay { dry_run, force, .. } => {
            if selection.component.is_none() {
                eprintln!(
                    "error: name the component whose dead letters to replay: --component NAME"
                );
                return ExitCode::from(EXIT_INVALID);
            }
            let letters = match dead_letters::list(
                &pipeline.kafka,
                &pipeline.name,
                &topics,
                &selection.filter(),
                usize::MAX / 2,
            )
            .await
            {
                Ok((l, _)) => l,
                Err(e) => {
                    eprintln!("error: {file}: cannot read the dead letters: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let bar = progress::bar(letters.len() as u64, "replaying");
            let outcome = dead_letters::replay(
                &pipeline.kafka,
                &pipeline.name,
                letters,
                *dry_run,
                *force,
                |done, _| {
                    if let Some(b) = &bar {
                        b.set_position(done as u64);
                    }
                },
            )
            .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let out = match outcome {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {file}: the replay stopped: {e} (run it again: what was replayed is skipped)");
                    return ExitCode::FAILURE;
                }
            };
            if *dry_run {
                let mut rows = vec![HEADER.map(String::from).to_vec()];
                for l in &out.replayed {
                    rows.push(row(l, dead_letters::key_json(decoder.as_ref(), l).await));
                }
                print!("{}", table(&rows));
            }
            println!(
                "{} {} dead letter(s); {} skipped as replayed before{}; {} not replayable (no value or no origin)",
                if *dry_run { "would replay" } else { "replayed" },
                out.replayed.len(),
                out.already_replayed.len(),
                if *force { "" } else { " (--force takes them too)" },
                out.not_replayable.len()
            );
            ExitCode::SUCCESS
        }
    }
}
