//! The `block-manager` binary: everything lives in the library; see `cli`.

// glibc's malloc showed up as a fifth of the block writer's CPU (arena lock contention with the
// request threads, and consolidation); mimalloc's thread-local free lists avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    block_manager::cli::main()
}
