//! `kiln-controller serve --config FILE`: the controller alone.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_controller::server::{serve, shutdown_signal};
use kiln_controller::Config;

#[derive(Parser)]
#[command(
    name = "kiln-controller",
    about = "kiln's controller: the OpenStack APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller with a TOML config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    kiln_controller::process::abort_on_panic();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Serve { config } = cli.command;
    let result = (|| -> anyhow::Result<()> {
        let config = Config::from_file(&config)?;
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(serve(config, shutdown_signal()))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}
