//! `mecha validate --config FILE`: load and check a config, start nothing.

use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    match mecha_config::load(path) {
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
