//! The pipeline-file loader on any text: it returns a pipeline or
//! diagnostics, never panics or hangs, and no diagnostic ever shows the
//! value of a `${VAR}` it substituted (secrets come from the environment).
//!
//! Input: the file's text (lossy UTF-8). Every `${VAR}` resolves to
//! [`SECRET`], except `${UNSET}`, which is unset. Seeds: `examples/`, the
//! test pipelines, and `seeds/pipelines/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use syncline::pipeline::load::load_str;

/// What every variable holds: a value no input is likely to spell.
const SECRET: &str = "Zq9xK2vR7wLm";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if text.contains(SECRET) {
        return;
    }
    let env = |k: &str| (k != "UNSET").then(|| SECRET.to_string());
    if let Err(e) = load_str(Path::new("fuzz.yaml"), &text, env) {
        let shown = e.to_string();
        assert!(
            !shown.contains(SECRET),
            "a diagnostic shows a substituted value:\n{shown}"
        );
    }
});
