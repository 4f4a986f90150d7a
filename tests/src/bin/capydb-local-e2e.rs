//! The `capydb-local` program under the end-to-end tests: the very same
//! `capydb_local::main`, built as part of this package so that `cargo test`
//! builds it before the tests start it.
fn main() -> std::process::ExitCode {
    capydb_local::main()
}
