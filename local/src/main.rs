fn main() -> std::process::ExitCode {
    capydb_local::main()
}
