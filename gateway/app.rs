//! (stub)
pub fn serve(_c: crate::config::Config) -> anyhow::Result<()> {
    Ok(())
}
