//! Times one `PgProvider::clone_database` call, for `bench/clone.sh`.
//! Usage: clone_bench <admin-url> <source> <source-owner> <target> <owner>
//! Prints `<strategy> <seconds>`.
use std::time::Instant;

use capydb_postgres::PgProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, source, source_owner, target, owner] = args.as_slice() else {
        return Err("usage: clone_bench <admin-url> <source> <source-owner> <target> <owner>".into());
    };
    // CAPYDB_LOG=capydb_postgres=debug shows the clone's phases on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CAPYDB_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let provider = PgProvider::connect(url, "bench").await?;
    let started = Instant::now();
    let strategy = provider.clone_database(source, source_owner, target, owner).await?;
    println!("{strategy:?} {:.2}", started.elapsed().as_secs_f64());
    Ok(())
}
