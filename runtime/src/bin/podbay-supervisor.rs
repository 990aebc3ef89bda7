//! `podbay-supervisor`: the spawner that forks each pod's supervisor (the pod's pause
//! process). Started by the podbay daemon only; it speaks podbay.shim.v1 frames on stdio.

fn main() {
    if std::env::args_os().len() > 1 {
        eprintln!("podbay-supervisor takes no arguments; it is started by `podbay serve`");
        std::process::exit(2);
    }
    std::process::exit(podbay_runtime::supervisor::process::spawner_main());
}
