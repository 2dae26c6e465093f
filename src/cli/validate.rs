//! `mecha validate --config FILE`: load and check a config, start nothing.

use std::path::Path;
use std::process::ExitCode;

/// Loads a config and checks what only the aggregator can: alert rules'
/// queries and templates (it owns their parsers). What `validate` accepts,
/// the roles start with.
pub fn load_checked(path: &Path) -> Result<mecha_config::Config, mecha_config::ConfigError> {
    mecha_config::load(path).and_then(|c| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = path.display().to_string();
        mecha_aggregator::alert::rules::check(&c.aggregator.alerting, &file, &text).map(|()| c)
    })
}

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    match load_checked(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} source(s), aggregator http {}, grpc {})",
                path.display(),
                c.agent.sources.len(),
                c.aggregator.http.listen,
                c.aggregator.grpc.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}
