pub async fn run(_a: crate::cli::BenchArgs, _j: bool) -> anyhow::Result<()> {
    Ok(())
}
