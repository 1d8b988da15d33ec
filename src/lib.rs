//! syncline as a library: the pipeline file (loading, checking, running
//! its components) and the process's telemetry. The binary (`src/main.rs`)
//! is the command line over it; the library is what fuzzing (`fuzz/`) and
//! tests reach, the pipeline-file loader above all.

pub mod api;
pub mod dead_letters;
pub mod operate;
pub mod pipeline;
pub mod run;
pub mod telemetry;
