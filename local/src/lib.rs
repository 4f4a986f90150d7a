//! `capydb-local`: the whole control plane in one process — the API of every
//! route group on one port, the job worker loops and the sweeper — on an
//! embedded SQLite file and a PostgreSQL server (a private cluster it starts,
//! or `--postgres-url`). It is what developers run and what the end-to-end
//! tests drive; all API, auth and job logic is the deployed code.
pub mod cli;
mod logging;
mod runtime;
mod slow;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, KeysCommand, OrgsCommand};

/// The entry point of the `capydb-local` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capydb-local: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            None => runtime::serve(cli.serve).await,
            Some(Command::Serve(args)) => runtime::serve(args).await,
            Some(Command::Keys(KeysCommand::Create(args))) => runtime::keys_create(args).await,
            Some(Command::Orgs(OrgsCommand::Create(args))) => runtime::orgs_create(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "capydb-local stopped");
            // Flush the log first so the last word on stderr is this one.
            drop(_log_guard);
            eprintln!("capydb-local: {message}");
            ExitCode::FAILURE
        }
    }
}
