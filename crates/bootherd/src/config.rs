//! `bootherd.yaml`: the optional configuration file of `bootherd serve`. Every field has a
//! working default (the command-line flag's), so the file only names what differs. A flag
//! given on the command line (or through its environment variable) wins over the file.
//! Unknown fields are errors with their line, so a typo never silently does nothing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bootherd_net::TransferPorts;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Data directory (state.yaml and images/).
    pub(crate) data: Option<PathBuf>,
    /// iPXE bootloader directory.
    pub(crate) bootloaders: Option<PathBuf>,
    /// Interfaces to answer on (default: all up, non-loopback IPv4 interfaces).
    #[serde(default)]
    pub(crate) interfaces: Vec<String>,
    /// Address the listeners bind to.
    pub(crate) bind: Option<Ipv4Addr>,
    #[serde(default)]
    pub(crate) ports: Ports,
    #[serde(default)]
    pub(crate) tftp: TftpSettings,
    #[serde(default)]
    pub(crate) http: HttpSettings,
    /// argon2 hash of the web UI's admin password (`bootherd password --print` makes one).
    pub(crate) admin_password_hash: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ports {
    pub(crate) dhcp: Option<u16>,
    pub(crate) proxy: Option<u16>,
    pub(crate) tftp: Option<u16>,
    pub(crate) http: Option<u16>,
    /// 0 disables watching for other PXE servers.
    pub(crate) watch: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TftpSettings {
    /// `ephemeral`, `single` or `LO:HI`: checked as the file is read.
    pub(crate) transfer_ports: Option<PortsSetting>,
    /// `LO:HI`; the older spelling of `transfer_ports: LO:HI`.
    pub(crate) port_range: Option<PortsSetting>,
    /// The older spelling of `transfer_ports: single`.
    pub(crate) single_port: Option<bool>,
    pub(crate) max_blksize: Option<u16>,
    /// Cap blksize to the path MTU (default true).
    pub(crate) mtu_cap: Option<bool>,
    pub(crate) max_windowsize: Option<u16>,
    pub(crate) max_transfers: Option<usize>,
    pub(crate) max_transfers_per_client: Option<u64>,
    pub(crate) upload_dir: Option<PathBuf>,
    pub(crate) max_upload_bytes: Option<u64>,
    pub(crate) allow_overwrite: Option<bool>,
    pub(crate) max_retries: Option<u32>,
    /// Engine threads; 0 = automatic.
    pub(crate) threads: Option<u16>,
}

/// A transfer port setting, parsed by the same `TransferPorts` parser as the flags; a bad
/// value is an error with its line.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct PortsSetting(pub(crate) TransferPorts);

impl TryFrom<String> for PortsSetting {
    type Error = String;

    fn try_from(text: String) -> Result<PortsSetting, String> {
        text.parse().map(PortsSetting)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSettings {
    /// Directories the web UI and API may import from (DATA/import always is one).
    #[serde(default)]
    pub(crate) import_dirs: Vec<PathBuf>,
    pub(crate) max_image_file_bytes: Option<u64>,
    pub(crate) upload_stall_secs: Option<u64>,
    pub(crate) header_timeout_secs: Option<u64>,
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_connections_per_client: Option<u64>,
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| {
        // The line itself too: a value's own error (a bad port range) does not name its key.
        let at = e
            .location()
            .map(|l| {
                let line = text.lines().nth(l.line().saturating_sub(1)).unwrap_or("");
                format!(
                    " line {} column {} ({:?})",
                    l.line(),
                    l.column(),
                    line.trim()
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {e}", path.display())
    })
}

/// Reads and checks a configuration file of `bootherd serve`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let config: Config = parse(path)?;
    config.tftp.check(path)?;
    for (name, value) in [
        ("upload_stall_secs", config.http.upload_stall_secs),
        ("header_timeout_secs", config.http.header_timeout_secs),
        ("max_connections", config.http.max_connections),
        (
            "max_connections_per_client",
            config.http.max_connections_per_client,
        ),
    ] {
        anyhow::ensure!(
            value != Some(0),
            "{}: http.{name} must be at least 1",
            path.display()
        );
    }
    if let Some(hash) = &config.admin_password_hash {
        bootherd_web::check_password_hash(hash)
            .map_err(|e| anyhow::anyhow!("{}: admin_password_hash: {e}", path.display()))?;
    }
    Ok(config)
}

impl TftpSettings {
    fn check(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(PortsSetting(ports)) = self.port_range {
            anyhow::ensure!(
                matches!(ports, TransferPorts::Range(..)),
                "{}: tftp.port_range must be a range LO:HI (for {ports}, write tftp.transfer_ports: {ports})",
                path.display()
            );
        }
        if self.transfer_ports.is_some() {
            anyhow::ensure!(
                self.port_range.is_none() && self.single_port.is_none(),
                "{}: tftp.transfer_ports says how transfer ports are chosen; remove tftp.port_range and tftp.single_port, which say the same in the older way",
                path.display()
            );
        }
        if let Some(blksize) = self.max_blksize {
            anyhow::ensure!(
                (8..=65464).contains(&blksize),
                "{}: tftp.max_blksize {blksize} is outside 8..65464",
                path.display()
            );
        }
        if self.max_transfers_per_client == Some(0) {
            anyhow::bail!(
                "{}: tftp.max_transfers_per_client must be at least 1",
                path.display()
            );
        }
        if self.max_windowsize == Some(0) {
            anyhow::bail!("{}: tftp.max_windowsize must be at least 1", path.display());
        }
        Ok(())
    }
}

/// Whether the user gave this flag (on the command line or through its environment
/// variable), in which case it beats the file.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .and(matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Sets `$target` from `$value` unless the flag `$id` was given.
macro_rules! from_file {
    ($matches:expr, $id:literal, $target:expr, $value:expr) => {
        if let Some(value) = $value {
            if !given($matches, $id) {
                $target = value;
            }
        }
    };
}

impl Config {
    /// Fills `serve`'s arguments from the file where the command line left them at defaults.
    pub(crate) fn apply(
        &self,
        matches: &ArgMatches,
        args: &mut crate::ServeArgs,
    ) -> anyhow::Result<()> {
        from_file!(matches, "data", args.data, self.data.clone());
        from_file!(
            matches,
            "bootloaders",
            args.bootloaders,
            self.bootloaders.clone()
        );
        if !self.interfaces.is_empty() && !given(matches, "interfaces") {
            args.interfaces = self.interfaces.clone();
        }
        from_file!(matches, "bind", args.bind, self.bind);
        from_file!(matches, "dhcp_port", args.dhcp_port, self.ports.dhcp);
        from_file!(matches, "proxy_port", args.proxy_port, self.ports.proxy);
        from_file!(matches, "tftp_port", args.tftp_port, self.ports.tftp);
        from_file!(matches, "http_port", args.http_port, self.ports.http);
        from_file!(matches, "watch_port", args.watch_port, self.ports.watch);
        self.tftp.apply(matches, &mut args.tftp)?;
        let (http, tuning) = (&self.http, &mut args.http);
        if !http.import_dirs.is_empty() && !given(matches, "import_dirs") {
            tuning.import_dirs = http.import_dirs.clone();
        }
        from_file!(
            matches,
            "max_image_file_bytes",
            tuning.max_image_file_bytes,
            http.max_image_file_bytes
        );
        from_file!(
            matches,
            "upload_stall_secs",
            tuning.upload_stall_secs,
            http.upload_stall_secs
        );
        from_file!(
            matches,
            "http_header_timeout_secs",
            tuning.http_header_timeout_secs,
            http.header_timeout_secs
        );
        from_file!(
            matches,
            "http_max_connections",
            tuning.http_max_connections,
            http.max_connections
        );
        from_file!(
            matches,
            "http_max_connections_per_client",
            tuning.http_max_connections_per_client,
            http.max_connections_per_client
        );
        if let Some(hash) = &self.admin_password_hash {
            if !given(matches, "admin_password_hash") {
                args.admin_password_hash = Some(hash.clone());
            }
        }
        Ok(())
    }
}

impl TftpSettings {
    /// Fills the TFTP flags shared by `serve` and `tftp` from the file.
    fn apply(&self, matches: &ArgMatches, tuning: &mut crate::TftpTuning) -> anyhow::Result<()> {
        let t = self;
        // The flags name one choice between them; either on the command line wins over the file.
        if !given(matches, "port_range") && !given(matches, "single_port") {
            let ports = t.transfer_ports.or(t.port_range).map(|setting| setting.0);
            match ports {
                Some(TransferPorts::Range(lo, hi)) => {
                    tuning.port_range = Some(TransferPorts::Range(lo, hi));
                    tuning.single_port = false;
                }
                Some(TransferPorts::Single) => tuning.single_port = true,
                Some(TransferPorts::Ephemeral) => {
                    tuning.port_range = None;
                    tuning.single_port = false;
                }
                None => {}
            }
            from_file!(matches, "single_port", tuning.single_port, t.single_port);
        }
        from_file!(matches, "max_blksize", tuning.max_blksize, t.max_blksize);
        from_file!(
            matches,
            "no_mtu_cap",
            tuning.no_mtu_cap,
            t.mtu_cap.map(|cap| !cap)
        );
        from_file!(
            matches,
            "max_windowsize",
            tuning.max_windowsize,
            t.max_windowsize
        );
        from_file!(
            matches,
            "max_transfers",
            tuning.max_transfers,
            t.max_transfers
        );
        from_file!(
            matches,
            "max_transfers_per_client",
            tuning.max_transfers_per_client,
            t.max_transfers_per_client
        );
        if let Some(dir) = &t.upload_dir {
            if !given(matches, "upload_dir") {
                tuning.upload_dir = Some(dir.clone());
            }
        }
        from_file!(
            matches,
            "max_upload_bytes",
            tuning.max_upload_bytes,
            t.max_upload_bytes
        );
        from_file!(
            matches,
            "allow_overwrite",
            tuning.allow_overwrite,
            t.allow_overwrite
        );
        from_file!(matches, "max_retries", tuning.max_retries, t.max_retries);
        from_file!(matches, "tftp_threads", tuning.tftp_threads, t.threads);
        Ok(())
    }
}

/// The configuration file of `bootherd tftp`, the TFTP-only drop-in for tftpd-hpa.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TftpOnlyConfig {
    /// Directory served (tftpd-hpa's TFTP_DIRECTORY).
    pub(crate) root: Option<PathBuf>,
    /// Address and port (tftpd-hpa's TFTP_ADDRESS).
    pub(crate) listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub(crate) tftp: TftpSettings,
}

impl TftpOnlyConfig {
    pub(crate) fn apply(
        &self,
        matches: &ArgMatches,
        args: &mut crate::TftpArgs,
    ) -> anyhow::Result<()> {
        from_file!(matches, "root", args.root, self.root.clone());
        from_file!(matches, "listen", args.listen, self.listen);
        self.tftp.apply(matches, &mut args.tftp)
    }
}

/// Reads and checks a configuration file of `bootherd tftp`.
pub(crate) fn load_tftp_only(path: &Path) -> anyhow::Result<TftpOnlyConfig> {
    let config: TftpOnlyConfig = parse(path)?;
    config.tftp.check(path)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example configuration loads, so none goes stale.
    #[test]
    fn every_example_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            if path.to_string_lossy().ends_with("-state.yaml") {
                // A state example must be accepted by the store as a state.yaml.
                let data = tempfile::tempdir().unwrap();
                std::fs::copy(&path, data.path().join("state.yaml")).unwrap();
                bootherd_store::Store::open(data.path())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tftp-"))
            {
                load_tftp_only(&path).unwrap_or_else(|e| panic!("{e:#}"));
            } else {
                load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            }
            seen += 1;
        }
        assert!(
            seen > 0,
            "no example configurations found in {}",
            dir.display()
        );
    }

    #[test]
    fn command_line_beats_the_file_and_the_file_beats_defaults() {
        use clap::{CommandFactory, FromArgMatches};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootherd.yaml");
        std::fs::write(
            &path,
            "ports:\n  http: 8081\n  tftp: 6969\ntftp:\n  single_port: true\n  max_blksize: 1432\n",
        )
        .unwrap();
        let argv = [
            "bootherd",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--http-port",
            "9000",
        ];
        let matches = crate::Cli::command().try_get_matches_from(argv).unwrap();
        let mut cli = crate::Cli::from_arg_matches(&matches).unwrap();
        let crate::Command::Serve(args) = &mut cli.command else {
            panic!("not serve")
        };
        let (_, serve_matches) = matches.subcommand().unwrap();
        load(&path).unwrap().apply(serve_matches, args).unwrap();
        assert_eq!(args.http_port, 9000, "the flag must win");
        assert_eq!(args.tftp_port, 6969);
        assert!(args.tftp.single_port);
        assert_eq!(args.tftp.max_blksize, 1432);
        assert_eq!(args.dhcp_port, 67, "untouched defaults stay");
    }

    /// Advice a user reads (the diagnosis on a machine's page, TFTP refusals) names flags; each
    /// must be a flag of `bootherd serve` (it once named --tftp-ports and --tftp-timeout).
    #[test]
    fn advice_names_only_flags_that_exist() {
        use clap::CommandFactory;
        let cli = crate::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let mut known: Vec<String> = serve
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        // Other programs' flags these files mention: curl's, for fetching an empty file.
        known.push("--tftp-no-options".into());
        for (file, text) in [
            (
                "boot/src/timeline.rs",
                include_str!("../../boot/src/timeline.rs"),
            ),
            ("boot/src/lib.rs", include_str!("../../boot/src/lib.rs")),
            ("boot/src/offer.rs", include_str!("../../boot/src/offer.rs")),
            (
                "tftp/src/source.rs",
                include_str!("../../tftp/src/source.rs"),
            ),
            (
                "tftp/src/transfer.rs",
                include_str!("../../tftp/src/transfer.rs"),
            ),
            (
                "tftp/src/endpoint.rs",
                include_str!("../../tftp/src/endpoint.rs"),
            ),
            (
                "net/src/tftp/engine/worker.rs",
                include_str!("../../net/src/tftp/engine/worker.rs"),
            ),
            (
                "files/src/uploads.rs",
                include_str!("../../files/src/uploads.rs"),
            ),
            ("web/src/intake.rs", include_str!("../../web/src/intake.rs")),
            ("web/src/serve.rs", include_str!("../../web/src/serve.rs")),
            (
                "web/src/api/images.rs",
                include_str!("../../web/src/api/images.rs"),
            ),
        ] {
            let mut rest = text;
            while let Some(at) = rest.find("--") {
                rest = &rest[at + 2..];
                let flag: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                let flag = flag.trim_end_matches('-');
                if flag.len() < 3 {
                    continue;
                }
                let flag = format!("--{flag}");
                assert!(
                    known.contains(&flag),
                    "{file} names {flag}, which `bootherd serve` does not have"
                );
            }
        }
    }

    #[test]
    fn transfer_ports_are_one_typed_setting_checked_as_the_file_is_read() {
        use clap::{CommandFactory, FromArgMatches};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootherd.yaml");
        let tuning = |yaml: &str, flags: &[&str]| {
            std::fs::write(&path, yaml).unwrap();
            let mut argv = vec!["bootherd", "serve", "--config", path.to_str().unwrap()];
            argv.extend_from_slice(flags);
            let matches = crate::Cli::command().try_get_matches_from(argv).unwrap();
            let mut cli = crate::Cli::from_arg_matches(&matches).unwrap();
            let crate::Command::Serve(args) = &mut cli.command else {
                panic!("not serve")
            };
            let (_, serve_matches) = matches.subcommand().unwrap();
            load(&path)?.apply(serve_matches, args)?;
            anyhow::Ok((args.tftp.single_port, args.tftp.port_range))
        };
        assert_eq!(
            tuning("tftp:\n  transfer_ports: single\n", &[]).unwrap(),
            (true, None)
        );
        assert_eq!(
            tuning("tftp:\n  transfer_ports: 30000:30100\n", &[]).unwrap(),
            (false, Some(TransferPorts::Range(30000, 30100)))
        );
        assert_eq!(
            tuning(
                "tftp:\n  transfer_ports: \"30000-30100\"\n",
                &["--single-port"]
            )
            .unwrap(),
            (true, None),
            "a flag wins over the file"
        );
        assert_eq!(
            tuning("tftp:\n  transfer_ports: ephemeral\n", &[]).unwrap(),
            (false, None)
        );
        // The older keys still mean what they meant.
        assert_eq!(
            tuning("tftp:\n  port_range: \"50000:50099\"\n", &[]).unwrap(),
            (false, Some(TransferPorts::Range(50000, 50099)))
        );
        assert_eq!(
            tuning("tftp:\n  single_port: true\n", &[]).unwrap(),
            (true, None)
        );
        let err = format!(
            "{:#}",
            tuning("\ntftp:\n  transfer_ports: sometimes\n", &[]).unwrap_err()
        );
        assert!(
            err.contains("line 3") && err.contains("ephemeral, single"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            tuning("tftp:\n  transfer_ports: single\n  port_range: 1:2\n", &[]).unwrap_err()
        );
        assert!(err.contains("remove tftp.port_range"), "{err}");
        let err = format!(
            "{:#}",
            tuning("tftp:\n  port_range: single\n", &[]).unwrap_err()
        );
        assert!(err.contains("tftp.transfer_ports: single"), "{err}");
    }

    #[test]
    fn typos_are_errors_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootherd.yaml");
        std::fs::write(&path, "ports:\n  http: 8081\ntftp:\n  singel_port: true\n").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(
            err.contains("singel_port") && err.contains("line 4"),
            "{err}"
        );
        std::fs::write(&path, "tftp:\n  port_range: 300:200\n").unwrap();
        assert!(format!("{:#}", load(&path).unwrap_err()).contains("port_range"));
    }
}
