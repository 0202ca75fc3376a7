//! The `megatest` binary: parse, run, exit with the session's code.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match megatest::cli::run() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("megatest: {err:#}");
            ExitCode::from(3)
        }
    }
}
