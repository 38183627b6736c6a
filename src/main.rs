//! The `accel-dns` binary: parse the command line, load the configuration,
//! then check it or serve it. Errors end here: printed once, exit code 1.

use std::process::ExitCode;

use accel_dns::cli::{Cli, Command};
use accel_dns::config::{self, LoadEnv};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bundles are built in: listing them reads no configuration, so it
    // works (and says the same) wherever the binary runs.
    if matches!(cli.command, Some(Command::Registries)) {
        print!("{}", accel_dns::registries::render());
        return ExitCode::SUCCESS;
    }
    let env = LoadEnv::from_process();
    let path = cli.config.clone().filter(|p| !p.as_os_str().is_empty());
    let loaded = match &path {
        Some(path) => config::load(path, &env),
        None => config::builtin(&env),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => {
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Command::Serve => serve(config, path, env),
        Command::Registries => ExitCode::SUCCESS,
    }
}

fn serve(config: config::Config, path: Option<std::path::PathBuf>, env: LoadEnv) -> ExitCode {
    let log = accel_dns::logging::init(&config.log);
    accel_dns::app::raise_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(accel_dns::app::serve(config, path, env, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
