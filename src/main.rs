//! The `accel-dns` binary: parse the command line, then run the subcommand:
//! the helpers that need no configuration (`status`, `node-address`,
//! `node-resolv`, `lookup`) at once; otherwise load the configuration and
//! check it or serve it. Errors end here: printed once, exit code 1.

use std::future::Future;
use std::process::ExitCode;

use accel_dns::cli::{Cli, Command};
use accel_dns::config::{self, LoadEnv};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Status { admin, json }) => {
            return helper(accel_dns::app::status(admin, json));
        }
        Some(Command::Lookup { names }) => {
            return helper(async move { accel_dns::app::lookup(&names).await });
        }
        Some(Command::NodeAddress { action }) => {
            return helper(async move { accel_dns::app::node_address(action).await });
        }
        Some(Command::NodeResolv(args)) => {
            return helper(accel_dns::app::node_resolv(args));
        }
        // The bundles are built in: listing them reads no configuration, so it
        // works (and says the same) wherever the binary runs.
        Some(Command::Registries) => {
            print!("{}", accel_dns::app::registries());
            return ExitCode::SUCCESS;
        }
        _ => {}
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
        _ => serve(config, path, env),
    }
}

/// Runs a helper subcommand on a one-thread runtime.
fn helper(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    run(
        tokio::runtime::Builder::new_current_thread().enable_all(),
        work,
    )
}

fn serve(config: config::Config, path: Option<std::path::PathBuf>, env: LoadEnv) -> ExitCode {
    let log = accel_dns::app::init_logging(&config.log);
    accel_dns::app::raise_file_limit();
    run(
        tokio::runtime::Builder::new_multi_thread().enable_all(),
        async {
            let result = accel_dns::app::serve(config, path, env, log).await;
            if let Err(error) = &result {
                tracing::error!("{error:#}");
            }
            result
        },
    )
}

/// Builds the runtime and runs `work` on it to the end; an error (of
/// either) is printed once and is exit code 1.
fn run(
    builder: &mut tokio::runtime::Builder,
    work: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
