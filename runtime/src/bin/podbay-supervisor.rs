//! The pod supervisor binary: podbay's pause process. Started by the daemon only.

fn main() {
    let args = match podbay_runtime::supervisor::server::Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("podbay-supervisor: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(podbay_runtime::supervisor::server::main(args));
}
