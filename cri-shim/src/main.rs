//! `podbay`: the daemon (`podbay serve`) and a crictl-compatible client in one binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Errors shown to people need no backtrace, and capturing one (RUST_BACKTRACE=1 is set
    // on many machines) costs a failing command ~200 ms.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet that could read the environment meanwhile.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    match podbay::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podbay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
