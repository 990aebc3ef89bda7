//! `podbay`: the daemon (`podbay serve`) and a crictl-compatible client in one binary.

fn main() -> anyhow::Result<()> {
    podbay::main()
}
