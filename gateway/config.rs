//! (stub) Config.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Role {
    Api,
    Worker,
    All,
}
#[derive(Debug, Default)]
pub struct LogConfig;
pub struct Config {
    pub log: LogConfig,
}
impl Config {
    pub fn load(_p: Option<&std::path::Path>, _r: Role) -> Result<Config, Vec<String>> {
        Ok(Config { log: LogConfig })
    }
}
