//! Daemon configuration: `/etc/podbay/config.toml` (optional) over embedded defaults,
//! then command-line flags. Unknown keys and invalid values stop start-up with a message
//! naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/podbay/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: the database, (later) images and container layers.
    pub root: PathBuf,
    /// Volatile state: pod dirs, pinned namespaces. Empty after a reboot.
    pub run_dir: PathBuf,
    /// The CRI socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// The pod supervisor executable; empty means `podbay-supervisor` beside `podbay`.
    pub supervisor_path: PathBuf,
    pub log: LogConfig,
    pub sandbox: SandboxConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace (or a tracing filter such as `podbay=debug`).
    pub level: String,
    /// text or json.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Seconds StopPodSandbox waits after SIGTERM before it sends SIGKILL.
    pub stop_grace_seconds: u64,
    /// Size of each pod's /dev/shm tmpfs in bytes (kubelet's default is 64 MiB).
    pub shm_size_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/podbay".into(),
            run_dir: "/run/podbay".into(),
            socket: "/run/podbay/podbay.sock".into(),
            supervisor_path: PathBuf::new(),
            log: LogConfig::default(),
            sandbox: SandboxConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { stop_grace_seconds: 10, shm_size_bytes: 64 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Loads `path`; a missing file is fine only when it is the default path.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Read { path: path.into(), source });
            }
        };
        Self::parse(&text).map_err(|e| match e {
            Error::Parse { source, .. } => Error::Parse { path: path.into(), source },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, Error> {
        let cfg: Config = toml::from_str(text)
            .map_err(|source| Error::Parse { path: PathBuf::new(), source: Box::new(source) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The full default configuration as TOML (`podbay config default`).
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).expect("the default config serialises")
    }

    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, reason: String| Err(Error::Invalid { key, reason });
        for (key, path) in
            [("root", &self.root), ("run_dir", &self.run_dir), ("socket", &self.socket)]
        {
            if !path.is_absolute() {
                return invalid(key, format!("{} is not an absolute path", path.display()));
            }
        }
        if !self.supervisor_path.as_os_str().is_empty() && !self.supervisor_path.is_absolute() {
            return invalid("supervisor_path", "must be an absolute path or empty".into());
        }
        if self.socket.as_os_str().len() >= 108 {
            return invalid(
                "socket",
                "path is longer than a unix socket allows (107 bytes)".into(),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                format!("{:?} is not error, warn, info, debug, trace or a filter", self.log.level),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return invalid("log.format", format!("{:?} is not text or json", self.log.format));
        }
        if self.sandbox.stop_grace_seconds > 3600 {
            return invalid("sandbox.stop_grace_seconds", "must be at most 3600".into());
        }
        if self.sandbox.shm_size_bytes < 1 << 20 {
            return invalid("sandbox.shm_size_bytes", "must be at least 1048576 (1 MiB)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips() {
        let text = Config::default_toml();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        assert!(text.contains("socket = \"/run/podbay/podbay.sock\""));
        assert!(text.contains("[sandbox]"));
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[log]\nlevl = \"info\"\n").unwrap_err().to_string();
        assert!(err.contains("levl"), "{err}");
        let err = Config::parse("bogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[log]\nlevel = \"lo[ud\"\n", "log.level"),
            ("root = \"relative\"\n", "root"),
            ("[sandbox]\nshm_size_bytes = 10\n", "sandbox.shm_size_bytes"),
            ("[sandbox]\nstop_grace_seconds = 99999\n", "sandbox.stop_grace_seconds"),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Config::parse("[sandbox]\nshm_size_bytes = \"big\"\n").unwrap_err().to_string();
        assert!(err.contains("shm_size_bytes"), "{err}");
    }
}
