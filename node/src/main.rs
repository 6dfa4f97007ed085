//! `kiln-node`: the host agent; `kiln-node up` runs the all-in-one cloud.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_node::serve::{self, ServeArgs};
use kiln_node::up::{self, UpArgs};

#[derive(Parser)]
#[command(name = "kiln-node", about = "kiln's host agent and all-in-one cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the all-in-one cloud (controller + this host) in one process.
    Up(UpArgs),
    /// Run node agents (e.g. N simulated nodes) against a controller.
    Serve(ServeArgs),
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
    let result = match cli.command {
        Command::Up(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(up::run(args))),
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
