//! End-to-end tests of CapyDB live in `tests/e2e/`. They start the real
//! `capydb-local` program (this package's `capydb-local-e2e` binary) on a
//! free port with a fresh data dir and a real PostgreSQL server.
