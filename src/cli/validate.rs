//! `mecha validate --config FILE`: load and check a config, start nothing.

use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    // Alert rules' queries and templates are checked by the aggregator,
    // which owns their parsers.
    let loaded = mecha_config::load(path).and_then(|c| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = path.display().to_string();
        mecha_aggregator::alert::rules::check(&c.aggregator.alerting, &file, &text).map(|()| c)
    });
    match loaded {
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
