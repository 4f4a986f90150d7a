// mimalloc: the request path allocates many small short-lived buffers;
// measured ~1.2x more throughput than glibc malloc on bench/api-throughput.sh.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    capydb_local::main()
}
