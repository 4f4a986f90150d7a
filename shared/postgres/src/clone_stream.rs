//! The busy-source clone (see `clone.rs`) as a stream: the large tables go
//! from the source to the target over pairs of sessions, `COPY ... TO STDOUT`
//! piped into `COPY ... FROM STDIN`, split into page ranges across workers,
//! instead of through dump files; everything else goes through pg_dump and
//! pg_restore as before.
//!
//! 1. A coordinating session on the source opens a REPEATABLE READ READ ONLY
//!    transaction, exports its snapshot, picks the tables to stream and takes
//!    ACCESS SHARE locks on them (DDL on them waits, as for pg_dump; reads and
//!    writes go on). It stays open, snapshot and locks held, until the copy is done.
//! 2. `pg_dump -Fd --snapshot=<it>` dumps the schema and the data of
//!    everything not streamed (small tables, sequence values, large objects,
//!    extension configuration tables, materialized views' refreshes), all
//!    from that one snapshot.
//! 3. `pg_restore --section=pre-data --role=<owner>` creates the tables; then
//!    the streams and `pg_restore --section=data` load the data together;
//!    then `pg_restore -j N --section=post-data` builds the indexes and
//!    constraints, with a larger `maintenance_work_mem`.
//!
//! A large table goes either in page ranges over all workers, or, where the
//! CPUs are too few for that to pay (`PgProvider::set_page_range_streams`),
//! whole, into the target table truncated in the same transaction with
//! `COPY ... FREEZE`: loaded frozen, it needs no hint-bit writes later.
//!
//! Each streaming worker reads through a `SourceSession` (`copy_source.rs`:
//! the rows arrive as raw bytes, not one driver message each) in a
//! transaction that imported the snapshot,
//! so the clone is the source at one instant, and writes as the new owner
//! (`SET ROLE`, as pg_restore does), so nothing the tenant defined (a CHECK
//! constraint's function, say) ever runs as the admin on the target.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use capydb_domain::ports::{ProviderError, ProviderResult};
use futures_util::SinkExt;
use tokio_postgres::{Client, Config};

use crate::copy_source::{SourceError, SourceSession};
use crate::error::from_pg;
use crate::provider::{open_admin, PgProvider, CONNECT_TIMEOUT, LOCK_TIMEOUT};
use crate::sql::{quote_ident, quote_literal};
use crate::tools::{jobs, run_tool, WorkDir, DUMP_LOCK_WAIT};

/// Tables at least this large are streamed; pg_dump carries the smaller
/// ones, where a stream's two sessions would cost more than they save.
const STREAM_MIN_BYTES: i64 = 8 << 20;
/// At most this many tables are streamed (the largest): each is one
/// `--exclude-table-data` argument of pg_dump.
const STREAM_MAX_TABLES: i64 = 1000;
/// A table is split into page ranges of at least this many pages (8 MiB of
/// 8 kB pages), so that every worker has a share of a large table.
const MIN_CHUNK_PAGES: i64 = 1024;
/// Ranges per worker, so that workers finishing early take over the rest.
const CHUNKS_PER_WORKER: i64 = 4;
/// Each worker holds two sessions.
const MAX_STREAM_WORKERS: usize = 8;
/// The source sends one CopyData message per row; batched into writes of this size.
const COPY_BATCH: usize = 256 * 1024;
/// Session settings of the target's restore sessions: index builds sort in
/// memory, and commits do not wait for the WAL flush (a crash mid-clone
/// fails the clone anyway, and the target is dropped).
pub(crate) const RESTORE_OPTIONS: &str = "-c maintenance_work_mem=256MB -c synchronous_commit=off";

/// A table streamed from the source.
#[derive(Debug)]
pub(crate) struct StreamTable {
    /// `"schema"."name"`.
    pub name: String,
    /// Quoted column names, without dropped and generated columns.
    pub columns: String,
    /// Every column's type is built in and has binary I/O. Binary COPY of
    /// an array or composite carries type OIDs, which differ in the target
    /// for types the tenant created, and a `reg*` value (`regclass`, ...) is
    /// an OID itself; those tables go as text, which names the objects.
    pub binary: bool,
    /// A partition: its whole-table stream is not truncated and frozen
    /// (`whole_table_setup`). pg_restore may load rows of its siblings
    /// through the partition root into it (pg_dump loads hash partitions on
    /// an enum that way), and a TRUNCATE would delete them.
    pub partition: bool,
    pub pages: i64,
}

/// Pages `[from, to)` of a table; `to: None` is up to its end, wherever that
/// is when the chunk is read.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub table: Arc<StreamTable>,
    pub from: i64,
    pub to: Option<i64>,
}

impl Chunk {
    fn pages(&self) -> i64 {
        self.to.unwrap_or(self.table.pages) - self.from
    }

    fn whole(&self) -> bool {
        self.from == 0 && self.to.is_none()
    }

    /// Loaded with `COPY ... FREEZE` into a table truncated first in the
    /// same transaction (`whole_table_setup`): a whole table, not a partition
    /// (see `StreamTable::partition`).
    fn loads_frozen(&self) -> bool {
        self.whole() && !self.table.partition
    }
}

/// How the stream clone ended short.
pub(crate) enum StreamFailure {
    /// The data streams failed permanently, not on the source or the server
    /// (a type COPY does not carry, say): the dump/restore path may still succeed.
    TryDump(ProviderError),
    Failed(ProviderError),
}

impl From<ProviderError> for StreamFailure {
    fn from(e: ProviderError) -> Self {
        StreamFailure::Failed(e)
    }
}

impl PgProvider {
    /// Copies `source` into a new `target` owned by `owner` as described above.
    pub(crate) async fn stream_clone(
        &self,
        source: &str,
        target: &str,
        owner: &str,
        what: &str,
    ) -> Result<(), StreamFailure> {
        let bin = self.dump_tools(what)?;
        let jobs = jobs();
        let work = WorkDir::create(&self.work_dir, &format!("clone-{target}"))
            .map_err(|e| crate::error::io_failure(&format!("{what}: create a work dir"), &e))?;
        let dump = work.path().join("dump");
        let started = Instant::now();

        let mut source_config = self.admin.clone();
        source_config.dbname(source);
        let coordinator = open_admin(&source_config, self.tls.as_ref()).await?;
        let fail = |e: tokio_postgres::Error| from_pg(&format!("{what}: read the source"), &e);
        // The exporting transaction must outlive every import of its snapshot,
        // and holds the locks: no server-side timeout may end it midway.
        coordinator
            .batch_execute(
                "SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0; \
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            )
            .await
            .map_err(fail)?;
        let snapshot: String =
            coordinator.query_one("SELECT pg_export_snapshot()", &[]).await.and_then(|r| r.try_get(0)).map_err(fail)?;
        let tables = stream_tables(&coordinator, what).await?;
        if !tables.is_empty() {
            // The same lock pg_dump takes: a client's DDL on these tables waits
            // for the clone instead of changing them between snapshot and COPY.
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            coordinator
                .batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", ")))
                .await
                .map_err(fail)?;
        }

        let mut pg_dump = self.admin_tool(&bin, "pg_dump", "capydb-clone");
        pg_dump
            .args(["--format=directory", "--jobs", &jobs.to_string(), "--no-owner", "--no-privileges"])
            .args(["--compress=0", &format!("--lock-wait-timeout={DUMP_LOCK_WAIT}")])
            .arg(format!("--snapshot={snapshot}"));
        for table in &tables {
            pg_dump.arg(format!("--exclude-table-data={}", table.name));
        }
        pg_dump.arg("--file").arg(&dump).arg(source);
        run_tool(pg_dump, "pg_dump", what).await?;
        let dumped = started.elapsed();

        self.ensure_database_secured(target, owner).await?;
        let restore = |section: &str, parallel: bool| {
            let mut cmd = self.admin_tool(&bin, "pg_restore", "capydb-clone");
            cmd.env("PGOPTIONS", RESTORE_OPTIONS)
                .arg(format!("--section={section}"))
                .args(["--no-owner", "--no-privileges", "--exit-on-error"])
                .arg(format!("--role={owner}"))
                .args(["--dbname", target]);
            if parallel {
                cmd.args(["--jobs", &jobs.to_string()]);
            }
            cmd.arg(&dump);
            cmd
        };
        run_tool(restore("pre-data", false), "pg_restore", what).await?;
        let created = started.elapsed();

        let workers = jobs.min(MAX_STREAM_WORKERS);
        let chunks = plan_chunks(tables, workers, self.page_range_streams && self.tid_range_scans());
        let mut target_config = self.admin.clone();
        target_config.dbname(target);
        let streams = async {
            stream_chunks(&source_config, &target_config, owner, &snapshot, chunks, workers, what)
                .await
                // Not when the source or the server failed: a dump would too.
                .map_err(|e| match e {
                    ProviderError::Permanent(_) => StreamFailure::TryDump(e),
                    e => StreamFailure::Failed(e),
                })
        };
        let rest = async { run_tool(restore("data", true), "pg_restore", what).await.map_err(StreamFailure::Failed) };
        tokio::try_join!(streams, rest)?;
        coordinator.batch_execute("COMMIT").await.map_err(fail)?;
        drop(coordinator);
        let loaded = started.elapsed();

        run_tool(restore("post-data", true), "pg_restore", what).await?;
        tracing::debug!(
            source,
            target,
            dump_ms = dumped.as_millis() as u64,
            pre_data_ms = (created - dumped).as_millis() as u64,
            data_ms = (loaded - created).as_millis() as u64,
            post_data_ms = (started.elapsed() - loaded).as_millis() as u64,
            "stream clone done"
        );
        drop(work);
        Ok(())
    }

    /// TID range scans (PostgreSQL 14): a `ctid` range reads only its pages.
    /// Before, each range would scan the whole table.
    fn tid_range_scans(&self) -> bool {
        self.pg_version.parse::<u32>().is_ok_and(|major| major >= 14)
    }
}

/// The tables worth streaming, largest first: ordinary tables (partitions
/// included) of the tenant's own schemas, not an extension's (pg_dump knows
/// which of those to dump), at least `STREAM_MIN_BYTES`.
async fn stream_tables(coordinator: &Client, what: &str) -> ProviderResult<Vec<StreamTable>> {
    let rows = coordinator
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname),
                    pg_relation_size(c.oid) / current_setting('block_size')::bigint,
                    a.columns, a.binary, c.relispartition
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL (
                   SELECT array_agg(a.attname::text ORDER BY a.attnum) AS columns,
                          bool_and(t.oid < 16384 AND t.typsend <> 0 AND t.typreceive <> 0
                                   AND coalesce(e.typname, t.typname) NOT LIKE 'reg%') AS binary
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                     LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') a
              WHERE c.relkind = 'r' AND c.relpersistence <> 't'
                AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                AND a.columns IS NOT NULL
                AND pg_relation_size(c.oid) >= $1
              ORDER BY 2 DESC
              LIMIT $2",
            &[&STREAM_MIN_BYTES, &STREAM_MAX_TABLES],
        )
        .await
        .map_err(|e| from_pg(&format!("{what}: list the source's tables"), &e))?;
    rows.iter()
        .map(|row| {
            let columns: Vec<String> = row.try_get(2)?;
            Ok(StreamTable {
                name: row.try_get(0)?,
                pages: row.try_get(1)?,
                columns: columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "),
                binary: row.try_get(3)?,
                partition: row.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| from_pg(&format!("{what}: list the source's tables"), &e))
}

/// Splits the tables into page ranges for `workers` workers, largest first:
/// about `CHUNKS_PER_WORKER` ranges per worker over all tables, none smaller
/// than `MIN_CHUNK_PAGES`. The last range of a table is open-ended. Without
/// `split` every table is one chunk.
pub(crate) fn plan_chunks(tables: Vec<StreamTable>, workers: usize, split: bool) -> Vec<Chunk> {
    let total: i64 = tables.iter().map(|t| t.pages).sum();
    let size = (total / (workers as i64 * CHUNKS_PER_WORKER).max(1)).max(MIN_CHUNK_PAGES);
    let mut chunks = Vec::new();
    for table in tables.into_iter().map(Arc::new) {
        let n = if split { (table.pages / size).max(1) } else { 1 };
        let step = table.pages / n;
        for i in 0..n {
            let to = if i + 1 == n { None } else { Some((i + 1) * step) };
            chunks.push(Chunk { table: Arc::clone(&table), from: i * step, to });
        }
    }
    // Largest first; a stable sort keeps a table's ranges in page order.
    chunks.sort_by_key(|c| std::cmp::Reverse(c.pages()));
    chunks
}

/// How text COPY writes and reads values, pinned on both sides as pg_dump
/// and pg_restore pin them. The tenant owns the source database and may have
/// set any of these on it (`ALTER DATABASE ... SET`), and they apply to our
/// sessions too: a day-month DateStyle, a sql_standard IntervalStyle (the
/// sign of `-1 2:00:00`) or fewer float digits would change values silently,
/// and an empty search_path makes `regclass` values print qualified.
const VALUE_FORMAT: &str = "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; \
                            SET search_path = '';";

/// What each streaming worker needs; cloned into its thread.
#[derive(Clone)]
struct WorkerSetup {
    source: Config,
    target: Config,
    owner: String,
    snapshot: String,
    what: String,
    queue: Arc<Mutex<VecDeque<Chunk>>>,
}

impl WorkerSetup {
    fn next(&self) -> Option<Chunk> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

/// Runs `workers` workers over the chunks; the first error ends them all.
///
/// Each worker is a thread with a single-threaded runtime of its own,
/// holding both its sessions: the source sends one message per row, and
/// relaying them between tasks on different threads cost a third more CPU
/// (cross-thread wake-ups), CPU the servers' COPYs need. Dropping the
/// returned future (the clone was cancelled) stops the workers.
async fn stream_chunks(
    source: &Config,
    target: &Config,
    owner: &str,
    snapshot: &str,
    chunks: Vec<Chunk>,
    workers: usize,
    what: &str,
) -> ProviderResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let workers = workers.min(chunks.len());
    let setup = WorkerSetup {
        source: source.clone(),
        target: target.clone(),
        owner: owner.to_string(),
        snapshot: snapshot.to_string(),
        what: what.to_string(),
        queue: Arc::new(Mutex::new(VecDeque::from(chunks))),
    };
    let mut runs = Vec::with_capacity(workers);
    // Dropped with this future: each worker's `cancelled` then resolves.
    let mut cancel = Vec::with_capacity(workers);
    for i in 0..workers {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        let setup = setup.clone();
        std::thread::Builder::new()
            .name(format!("capydb-clone-{i}"))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(async {
                        tokio::select! {
                            result = stream_worker(&setup) => result,
                            _ = cancel_rx => Err(ProviderError::Retryable(format!("{}: cancelled", setup.what))),
                        }
                    }),
                    Err(e) => Err(crate::error::io_failure(&format!("{}: start a worker", setup.what), &e)),
                };
                let _ = done_tx.send(result);
            })
            .map_err(|e| crate::error::io_failure(&format!("{what}: start a worker thread"), &e))?;
        cancel.push(cancel_tx);
        runs.push(async move {
            done_rx.await.unwrap_or_else(|_| {
                Err(crate::error::failure(crate::error::Cause::Internal, what, &"a copy worker died"))
            })
        });
    }
    futures_util::future::try_join_all(runs).await?;
    drop(cancel);
    Ok(())
}

/// One reading session in the snapshot and one writing session as `owner`,
/// copying chunks until none is left.
async fn stream_worker(setup: &WorkerSetup) -> ProviderResult<()> {
    let what = &setup.what;
    let mut reader = SourceSession::connect(&setup.source, CONNECT_TIMEOUT)
        .await
        .map_err(|e| e.into_provider(&format!("{what}: connect to the source")))?;
    // The admin session's lock timeout (see `open_admin`): a client's DDL
    // queued behind the coordinator's lock would otherwise hold this
    // session's ACCESS SHARE request, and the clone, for good.
    reader
        .execute(&format!(
            "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET lock_timeout = '{LOCK_TIMEOUT}'; \
             {VALUE_FORMAT} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&setup.snapshot)?
        ))
        .await
        .map_err(|e| e.into_provider(&format!("{what}: import the snapshot")))?;
    // Never over TLS: a TLS provider copies no database this way (`clone_database`).
    let writer = open_admin(&setup.target, None).await?;
    writer
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET synchronous_commit = off; {VALUE_FORMAT} SET ROLE {}",
            quote_ident(&setup.owner)
        ))
        .await
        .map_err(|e| from_pg(&format!("{what}: prepare the target session"), &e))?;
    while let Some(chunk) = setup.next() {
        copy_chunk(&mut reader, &writer, &chunk).await.map_err(|e| {
            let what = format!("{what}: copy the data of {}", chunk.table.name);
            match e {
                CopyError::Source(e) => e.into_provider(&what),
                CopyError::Target(e) => from_pg(&what, &e),
            }
        })?;
    }
    reader.execute("COMMIT").await.map_err(|e| e.into_provider(&format!("{what}: end the snapshot")))
}

enum CopyError {
    Source(SourceError),
    Target(tokio_postgres::Error),
}

/// The COPY statements of one chunk: out of the source, into the target.
/// A whole table is copied as a table (`COPY t TO` reads only `t`, not its
/// children, and skips the executor a query needs) into a table truncated in
/// the same transaction (`whole_table_setup`), so it can load frozen.
pub(crate) fn copy_statements(chunk: &Chunk) -> (String, String) {
    let table = &chunk.table;
    let format = if table.binary { "binary" } else { "text" };
    if chunk.whole() {
        let freeze = if chunk.loads_frozen() { ", FREEZE" } else { "" };
        return (
            format!("COPY {} ({}) TO STDOUT (FORMAT {format})", table.name, table.columns),
            format!("COPY {} ({}) FROM STDIN (FORMAT {format}{freeze})", table.name, table.columns),
        );
    }
    let from = chunk.from;
    let range = match chunk.to {
        None => format!(" WHERE ctid >= '({from},0)'"),
        Some(to) => format!(" WHERE ctid >= '({from},0)' AND ctid < '({to},0)'"),
    };
    (
        format!("COPY (SELECT {} FROM ONLY {}{range}) TO STDOUT (FORMAT {format})", table.columns, table.name),
        format!("COPY {} ({}) FROM STDIN (FORMAT {format})", table.name, table.columns),
    )
}

/// What a whole-table chunk's target session runs before its COPY: `FREEZE`
/// needs a table created or truncated in the same transaction. The table is
/// new and empty (pre-data made it, nothing else writes to it), has no
/// triggers and no foreign keys yet (post-data), and the session acts as its
/// owner, so TRUNCATE is allowed and changes nothing. Not for a partition
/// (see `StreamTable::partition`).
fn whole_table_setup(chunk: &Chunk) -> Option<String> {
    chunk.loads_frozen().then(|| format!("BEGIN; TRUNCATE ONLY {}", chunk.table.name))
}

async fn copy_chunk(reader: &mut SourceSession, writer: &Client, chunk: &Chunk) -> Result<(), CopyError> {
    let (out_sql, in_sql) = copy_statements(chunk);
    // The source first: it may wait for its lock, and the target should not
    // sit idle in a transaction holding the table meanwhile.
    let mut rows = reader.copy_out(&out_sql).await.map_err(CopyError::Source)?;
    let setup = whole_table_setup(chunk);
    if let Some(sql) = &setup {
        writer.batch_execute(sql).await.map_err(CopyError::Target)?;
    }
    let sink = writer.copy_in::<_, bytes::Bytes>(&in_sql).await.map_err(CopyError::Target)?;
    futures_util::pin_mut!(sink);
    // Dropping the sink unfinished aborts the target's COPY.
    while let Some(batch) = rows.next_batch(COPY_BATCH).await.map_err(CopyError::Source)? {
        sink.send(batch).await.map_err(CopyError::Target)?;
    }
    sink.as_mut().finish().await.map_err(CopyError::Target)?;
    if setup.is_some() {
        writer.batch_execute("COMMIT").await.map_err(CopyError::Target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, pages: i64) -> StreamTable {
        StreamTable {
            name: format!("\"public\".\"{name}\""),
            columns: "\"a\"".into(),
            binary: true,
            partition: false,
            pages,
        }
    }

    #[test]
    fn large_tables_are_split_into_page_ranges_largest_first() {
        let chunks = plan_chunks(vec![table("big", 100_000), table("small", 1500)], 2, true);
        // 101 500 pages over 8 ranges: ~12 687 pages each, so 7 of the big table.
        let mut big: Vec<_> = chunks.iter().filter(|c| c.table.name.contains("big")).collect();
        big.sort_by_key(|c| c.from);
        assert_eq!(big.len(), 7);
        assert_eq!(big[0].from, 0);
        for pair in big.windows(2) {
            assert_eq!(pair[0].to, Some(pair[1].from), "ranges are contiguous");
        }
        assert_eq!(big.last().unwrap().to, None, "the last range is open-ended");
        let small: Vec<_> = chunks.iter().filter(|c| c.table.name.contains("small")).collect();
        assert_eq!((small.len(), small[0].from, small[0].to), (1, 0, None));
        assert!(chunks.windows(2).all(|p| p[0].pages() >= p[1].pages()), "largest first");
        assert!(chunks.last().unwrap().table.name.contains("small"));
    }

    #[test]
    fn without_tid_range_scans_tables_stay_whole() {
        let chunks = plan_chunks(vec![table("big", 100_000)], 4, false);
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].from, chunks[0].to), (0, None));
        assert!(plan_chunks(vec![], 2, true).is_empty());
    }

    #[test]
    fn copy_statements_name_the_columns_and_the_range() {
        let t = Arc::new(StreamTable {
            name: "\"s\".\"T\"".into(),
            columns: "\"a\", \"b\"".into(),
            binary: false,
            partition: false,
            pages: 5000,
        });
        let (out, into) = copy_statements(&Chunk { table: Arc::clone(&t), from: 1024, to: Some(2048) });
        assert_eq!(
            out,
            "COPY (SELECT \"a\", \"b\" FROM ONLY \"s\".\"T\" WHERE ctid >= '(1024,0)' AND ctid < '(2048,0)') \
             TO STDOUT (FORMAT text)"
        );
        assert_eq!(into, "COPY \"s\".\"T\" (\"a\", \"b\") FROM STDIN (FORMAT text)");
        let (out, _) = copy_statements(&Chunk { table: Arc::clone(&t), from: 2048, to: None });
        assert!(out.ends_with("WHERE ctid >= '(2048,0)') TO STDOUT (FORMAT text)"), "{out}");
        let whole = Chunk { table: t, from: 0, to: None };
        let (out, into) = copy_statements(&whole);
        assert_eq!(out, "COPY \"s\".\"T\" (\"a\", \"b\") TO STDOUT (FORMAT text)");
        assert_eq!(into, "COPY \"s\".\"T\" (\"a\", \"b\") FROM STDIN (FORMAT text, FREEZE)");
        assert_eq!(whole_table_setup(&whole).as_deref(), Some("BEGIN; TRUNCATE ONLY \"s\".\"T\""));
        // A partition is neither truncated nor frozen (see `StreamTable::partition`).
        let part = Chunk {
            table: Arc::new(StreamTable {
                name: "\"s\".\"P\"".into(),
                columns: "\"a\"".into(),
                binary: true,
                partition: true,
                pages: 9,
            }),
            from: 0,
            to: None,
        };
        assert_eq!(copy_statements(&part).1, "COPY \"s\".\"P\" (\"a\") FROM STDIN (FORMAT binary)");
        assert_eq!(whole_table_setup(&part), None);
    }
}
