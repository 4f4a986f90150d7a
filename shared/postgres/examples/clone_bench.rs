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
    // CAPYDB_PAGE_RANGES=1 (or 0): large tables in page ranges (or whole),
    // whatever the CPU count would choose.
    let page_ranges = match std::env::var("CAPYDB_PAGE_RANGES").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        Ok(other) => return Err(format!("CAPYDB_PAGE_RANGES must be 0 or 1, not {other:?}").into()),
        Err(_) => None,
    };
    let mut provider = PgProvider::connect(url, "bench").await?;
    if let Some(on) = page_ranges {
        provider.set_page_range_streams(on);
    }
    let started = Instant::now();
    let strategy = provider.clone_database(source, source_owner, target, owner).await?;
    println!("{strategy:?} {:.2}", started.elapsed().as_secs_f64());
    // Where the CPU went on our side: this process (the stream relay) and
    // the pg_dump/pg_restore it ran. The servers' share is the rest.
    let (own, tools) = (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_CHILDREN));
    eprintln!("cpu: clone_bench {own:.2} s, pg_dump/pg_restore {tools:.2} s");
    Ok(())
}

fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
