//! `syncline snapshot FILE --source NAME`: ask a running CDC source to read
//! tables again, and follow its progress on a terminal.

use super::{follow_snapshot, load_or_exit, EXIT_INVALID};
use crate::pipeline::{request_snapshot, SnapshotRefusal};
use std::path::Path;
use std::process::ExitCode;

/// `syncline snapshot FILE --source NAME [--table T]... [--from-scratch]`:
/// ask a `postgres_cdc` or `mysql_cdc` source for a re-snapshot while it runs.
pub async fn snapshot_command(
    file: &Path,
    source: &str,
    tables: &[String],
    from_scratch: bool,
) -> ExitCode {
    let pipeline = match load_or_exit(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match request_snapshot(&pipeline, source, tables, from_scratch).await {
        Ok(answer) => {
            println!("{}", answer.message);
            if !from_scratch {
                follow_snapshot(&pipeline, source).await;
            }
            ExitCode::SUCCESS
        }
        Err(SnapshotRefusal::NotCdc(message)) => {
            eprintln!("error: {}: {message}", file.display());
            ExitCode::from(EXIT_INVALID)
        }
        Err(SnapshotRefusal::Failed(e)) => {
            eprintln!("error: {}: source `{source}`: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}
