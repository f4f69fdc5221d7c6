//! `ringmq serve`: flags over the config file over defaults, then run the broker.

use std::path::PathBuf;

use clap::Args;

use crate::config::{ConfigError, Settings};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys are the flag names with
    /// `_` for `-`); flags given here override it. See deploy/ringmq.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

impl ServeArgs {
    fn into_config(self) -> Result<crate::config::Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let mut config = self.settings.or(file).into_config()?;
        config.config_file = self.config;
        Ok(config)
    }
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    abort_on_panic();
    let served = args
        .into_config()
        .map_err(crate::server::ServeError::from)
        .and_then(crate::server::serve);
    if let Err(e) = &served {
        crate::service::systemd::status(&format!("failed: {e}"));
    }
    Ok(served?)
}

/// A panic on one shard's thread would leave the others serving without it
/// (its partitions and cross-core replies gone, shutdown waiting on it
/// forever): the process reports the panic and aborts instead, so a
/// supervisor restarts it and recovery runs.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
