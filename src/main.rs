//! The `block-manager` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    block_manager::cli::main()
}
