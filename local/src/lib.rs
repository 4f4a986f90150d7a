//! `capydb-local`: the whole control plane in one process — the API of every
//! route group on one port, the job worker loops and the sweeper — on an
//! embedded SQLite file and a PostgreSQL server (a private cluster it starts,
//! or `--postgres-url`). It is what developers run and what the end-to-end
//! tests drive; all API, auth and job logic is the deployed code.
pub mod cli;
mod dev_sessions;
mod logging;
mod runtime;
mod slow;
pub mod wiring;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, KeysCommand, OrgsCommand, SessionsCommand};

/// The entry point of the `capydb-local` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever capydb-local creates (SQLite's files, bootstrap.json, backups,
    // dumps) is for its own user only: they hold key hashes, client
    // addresses, webhook URLs and the secret key. SQLite in particular
    // creates its -wal and -shm files on its own, long after start-up.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o077) };
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
            Some(Command::Sessions(SessionsCommand::Create(args))) => runtime::sessions_create(args),
            Some(Command::Reset(args)) => runtime::reset(args),
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
