pub async fn run(_a: crate::cli::DemoArgs, _j: bool) -> anyhow::Result<()> {
    Ok(())
}
