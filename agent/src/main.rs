//! The `offpath` sidecar binary.

fn main() -> anyhow::Result<()> {
    let config = offpath::config::Config::from_env()?;
    eprintln!("{config:?}");
    Ok(())
}
