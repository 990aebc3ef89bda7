//! `scripts/chaos [KILLS] [SECONDS]`: the fault campaign (see `podbay_tests::chaos`).
//! Exits non-zero on any leak, lost pod or unexpected error.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !podbay_tests::is_root() {
        anyhow::bail!("scripts/chaos needs root (it makes a node namespace of its own)");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = podbay_tests::chaos::plan_from_args(&args)?;
    println!(
        "chaos: {} kills over {:.0} s, {} base pods, {} workers, CHAOS_SEED={}",
        plan.kills, plan.seconds, plan.base_pods, plan.workers, plan.seed
    );
    let outcome = podbay_tests::chaos::run(&plan).await?;
    outcome.print();
    if !outcome.ok() {
        std::process::exit(1);
    }
    Ok(())
}
