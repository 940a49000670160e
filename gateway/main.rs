//! The `hookgate` binary: parse the command line, load config, hand over. Nothing else.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Webhook gateway: verify, store, map, deliver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: inbound listener, admin API and workers.
    Serve {
        /// YAML config file; every key can also be set as env HOOKGATE_<KEY> (nested with __).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which parts to run in this process.
        #[arg(long, value_enum, default_value = "all")]
        role: hookgate::config::Role,
    },
    /// Validate mapping files and run their embedded tests.
    Check {
        /// Files or directories (default: mappings/).
        paths: Vec<PathBuf>,
        /// Fail (exit 1) on warnings too, not only on problems and failed tests.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the actions one event produces, as JSON.
    Try {
        mapping: PathBuf,
        #[arg(long)]
        payload: PathBuf,
        /// A request header, `Name: value`; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, role } => {
            let cfg = match hookgate::config::Config::load(config.as_deref(), role) {
                Ok(cfg) => cfg,
                Err(problems) => {
                    for p in problems {
                        eprintln!("{p}");
                    }
                    return ExitCode::from(2);
                }
            };
            hookgate::telemetry::init(&cfg.log);
            match hookgate::app::serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is::<hookgate::error::InvalidFiles>() => {
                    eprintln!("hookgate: {e:#}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("hookgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            paths,
            deny_warnings,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("mappings")]
            } else {
                paths
            };
            hookgate::commands::check::run(&paths, deny_warnings)
        }
        Command::Try {
            mapping,
            payload,
            headers,
        } => hookgate::commands::try_cmd::run(&mapping, &payload, &headers),
    }
}
