//! bootherd: the binary. Wiring only: command line, logging, sockets, signals, shutdown.

mod admin;
mod cli;
mod config;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bootherd_boot::Boot;
use bootherd_files::DirSource;
use bootherd_net::{DhcpService, Interfaces, Selection};
use bootherd_pxe::ServerPort;
use bootherd_store::Store;
use bootherd_telemetry::DhcpCounters;
use bootherd_tftp::{FileSource, FirstOf};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(crate) use cli::{Cli, Command, LogFormat, ServeArgs, TftpArgs, TftpTuning};

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // A configuration file fills in what the command line left at its defaults.
    if let (Command::Serve(args), Some(("serve", serve_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        if let Some(path) = args.config.clone() {
            let applied = config::load(&path).and_then(|config| config.apply(serve_matches, args));
            if let Err(e) = applied {
                eprintln!("bootherd: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (Command::Tftp(args), Some(("tftp", tftp_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        if let Some(path) = args.config.clone() {
            let applied =
                config::load_tftp_only(&path).and_then(|config| config.apply(tftp_matches, args));
            if let Err(e) = applied {
                eprintln!("bootherd: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootherd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald, docker logs and log files get plain text.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bootherd-worker")
        // Blocking work is opening files; a boot storm must not grow hundreds of threads.
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(run_serve(args)),
        Command::Tftp(args) => runtime.block_on(run_tftp(args)),
        Command::Image { command, dir } => admin::image(command, &dir),
        Command::Profile { command, dir } => admin::profile(command, &dir),
        Command::Machine { command, dir } => admin::machine(command, &dir),
        Command::Password { print, dir } => admin::password(print, &dir),
        Command::Health { url } => admin::health(url.as_deref()),
        Command::Token { command, dir } => admin::token(command, &dir),
        Command::Check {
            config,
            dir,
            bootloaders,
        } => {
            if let Some(path) = &config {
                let config = config::load(path)?;
                println!("configuration: {} is valid", path.display());
                let data = config.data.unwrap_or(dir.data.clone());
                let bootloaders = config.bootloaders.unwrap_or(bootloaders);
                return admin::check(
                    &admin::DataDir {
                        data,
                        json: dir.json,
                    },
                    &bootloaders,
                );
            }
            admin::check(&dir, &bootloaders)
        }
    }
}

/// Every transfer holds a socket; the usual soft limit of 1024 descriptors would cap a boot
/// storm well below what the machine can serve.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn root_source(root: &Path) -> anyhow::Result<DirSource> {
    DirSource::new(root).with_context(|| {
        format!(
            "cannot serve {}: create the directory or pass --root DIR",
            root.display()
        )
    })
}

async fn run_tftp(args: TftpArgs) -> anyhow::Result<()> {
    let source = root_source(&args.root)?;
    let socket = bind_udp(args.listen)?;
    info!(root = %source.root().display(), listen = %socket.local_addr()?, "serving TFTP");
    let service = args.tftp.service(Arc::new(source), None)?;
    let shutdown = CancellationToken::new();
    let mut services = JoinSet::new();
    services.spawn(named(
        "TFTP",
        bootherd_net::serve_tftp(socket, service, shutdown.clone()),
    ));
    run_until_signal(services, shutdown).await
}

/// The store and the `Boot` over it and the bootloader directory (a missing one is a warning:
/// HTTP and bootfile profiles still work).
fn open_boot(args: &ServeArgs) -> anyhow::Result<(Arc<Store>, Arc<Boot>)> {
    let store = Arc::new(
        Store::open(&args.data)
            .with_context(|| format!("opening the data directory {}", args.data.display()))?,
    );
    info!(data = %args.data.display(), state = %store.state_path().display(), "data directory");
    let bootloader_dir = match DirSource::new(&args.bootloaders) {
        Ok(dir) => Some(dir.named("bootloader directory")),
        Err(e) => {
            warn!(
                dir = %args.bootloaders.display(),
                error = %e,
                "no bootloader directory: PXE firmware cannot be offered iPXE (install Debian's ipxe package or pass --bootloaders DIR)"
            );
            None
        }
    };
    let bootloaders: Arc<dyn FileSource> = match bootloader_dir {
        Some(dir) => Arc::new(dir),
        None => Arc::new(FirstOf(Vec::new())),
    };
    let boot = Arc::new(
        Boot::new(store.clone(), bootloaders, args.http_port).context("opening the image store")?,
    );
    Ok((store, boot))
}

/// The interfaces the DHCP responder serves, with a warning for each one named that is not
/// there (yet).
fn served_interfaces(args: &ServeArgs) -> Arc<Interfaces> {
    let selection = if args.interfaces.is_empty() {
        Selection::AllExceptLoopback
    } else {
        Selection::Named(args.interfaces.clone())
    };
    let interfaces = Arc::new(Interfaces::new(selection));
    for name in interfaces.missing() {
        warn!(interface = %name, "configured interface does not exist or has no IPv4 address (yet); requests on it will be answered once it appears");
    }
    let current = interfaces.current();
    if current.is_empty() {
        warn!(
            "no interface to serve: none is up with an IPv4 address (or none matches --interface)"
        );
    }
    for interface in &current {
        info!(interface = %interface.name, addresses = ?interface.addresses, "serving PXE on interface");
    }
    interfaces
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let (store, boot) = open_boot(&args)?;
    let interfaces = served_interfaces(&args);
    let dhcp = DhcpService {
        policy: boot.clone(),
        interfaces,
        events: boot.clone(),
        counters: Arc::new(DhcpCounters::default()),
    };
    let tftp = args.tftp.service(boot.clone(), Some(boot.clone()))?;
    let auth = Arc::new(admin_auth(&args)?);

    let dhcp_socket = bind_udp(SocketAddr::from((args.bind, args.dhcp_port)))?;
    let proxy_socket = bind_udp(SocketAddr::from((args.bind, args.proxy_port)))?;
    let tftp_socket = bind_udp(SocketAddr::from((args.bind, args.tftp_port)))?;
    let http_addr = SocketAddr::from((args.bind, args.http_port));
    let http_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| {
            format!("cannot listen for HTTP on {http_addr} (pass --http-port PORT)")
        })?;
    let shutdown = CancellationToken::new();
    let mut status = bootherd_telemetry::Services::default();
    status.interfaces = Some(dhcp.interfaces.clone());
    status.dhcp = Some(dhcp.counters.clone());
    status.tftp = Some(tftp.counters.clone());
    status.transfers = Some(tftp.active.clone());
    let status = Arc::new(status);
    for (name, socket) in [
        ("ProxyDHCP", &dhcp_socket),
        ("PXE boot server", &proxy_socket),
        ("TFTP", &tftp_socket),
    ] {
        status.listening(name, socket.local_addr()?);
    }
    status.listening("HTTP", http_listener.local_addr()?);
    let mut services = JoinSet::new();
    services.spawn(named(
        "ProxyDHCP (67)",
        bootherd_net::serve_dhcp(
            dhcp_socket,
            ServerPort::Dhcp,
            dhcp.clone(),
            shutdown.clone(),
        ),
    ));
    services.spawn(named(
        "ProxyDHCP (4011)",
        bootherd_net::serve_dhcp(
            proxy_socket,
            ServerPort::ProxyDhcp,
            dhcp.clone(),
            shutdown.clone(),
        ),
    ));
    services.spawn(named(
        "TFTP",
        bootherd_net::serve_tftp(tftp_socket, tftp, shutdown.clone()),
    ));
    let router = bootherd_web::router(bootherd_web::AppState {
        boot: boot.clone(),
        auth,
        services: status,
        limits: Arc::new(args.http.limits()),
        shutdown: shutdown.clone(),
    });
    info!(listen = %http_addr, "HTTP boot server and web UI listening");
    services.spawn(named(
        "HTTP",
        bootherd_web::serve(http_listener, router, args.http.limits(), shutdown.clone()),
    ));
    services.spawn(named(
        "state reload",
        watch_state(store.clone(), shutdown.clone()),
    ));
    services.spawn(named(
        "image verification",
        verify_images(store, shutdown.clone()),
    ));
    if args.watch_port != 0 {
        match bootherd_net::dhcp::bind_watcher(SocketAddr::from((args.bind, args.watch_port))) {
            Ok(socket) => {
                services.spawn(named(
                    "competing-server watch",
                    bootherd_net::watch_competitors(socket, dhcp, shutdown.clone()),
                ));
            }
            Err(e) => {
                info!(port = args.watch_port, error = %e, "not watching for other PXE servers: the DHCP client port is taken")
            }
        }
    }
    run_until_signal(services, shutdown).await
}

/// The admin password, from (in this order) BOOTHERD_ADMIN_PASSWORD, the configured hash, or
/// the file `bootherd password` writes. Without one the UI cannot be logged into; boot
/// endpoints and API tokens still work.
fn admin_auth(args: &ServeArgs) -> anyhow::Result<bootherd_web::Auth> {
    let file = args.data.join(admin::PASSWORD_FILE);
    let hash = if let Ok(password) = std::env::var("BOOTHERD_ADMIN_PASSWORD") {
        info!("admin password taken from BOOTHERD_ADMIN_PASSWORD");
        Some(bootherd_web::hash_password(&password).context("BOOTHERD_ADMIN_PASSWORD")?)
    } else if let Some(hash) = &args.admin_password_hash {
        info!("admin password hash taken from the configuration");
        Some(hash.trim().to_string())
    } else {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                info!(file = %file.display(), "admin password hash read");
                Some(text.trim().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        }
    };
    if hash.is_none() {
        warn!(
            "no admin password is set, so nobody can log in to the web UI. Set one with `bootherd password --data {}` (or the environment variable BOOTHERD_ADMIN_PASSWORD) and restart",
            args.data.display()
        );
    }
    let tokens = bootherd_web::TokenFile::new(args.data.join(admin::TOKEN_FILE));
    bootherd_web::Auth::new(hash, tokens).with_context(|| {
        format!(
            "the admin password hash (from the configuration or {})",
            file.display()
        )
    })
}

/// Picks up edits of state.yaml made by hand or by the admin commands, once a second. An
/// invalid edit is reported with its line and column; the last good state stays in force.
async fn watch_state(store: Arc<Store>, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match store.reload_if_changed() {
            Ok(true) => info!(state = %store.state_path().display(), "state reloaded"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "state file edit rejected; the previous state stays in force until the file is fixed")
            }
        }
    }
}

/// Hashes every image once at start-up, off the async workers: a damaged file flags its image
/// (its profiles stop being offered) instead of stopping the server.
async fn verify_images(store: Arc<Store>, shutdown: CancellationToken) -> std::io::Result<()> {
    let verify = tokio::task::spawn_blocking(move || {
        let Ok(images) = store.images().list() else {
            return;
        };
        for image in images {
            match store.verify_image(&image.name) {
                Ok(problems) if problems.is_empty() => {
                    info!(image = %image.name, files = image.files.len(), "image verified")
                }
                Ok(problems) => {
                    warn!(image = %image.name, problems = %problems.join("; "), "image damaged: its profiles are not offered until it is re-imported")
                }
                Err(e) => warn!(image = %image.name, error = %e, "image could not be verified"),
            }
        }
    });
    tokio::select! {
        _ = verify => {}
        _ = shutdown.cancelled() => {}
    }
    // Keep the service slot alive until shutdown, so finishing is not taken for a failure.
    shutdown.cancelled().await;
    Ok(())
}

type ServiceResult = (&'static str, std::io::Result<()>);

async fn named(
    name: &'static str,
    service: impl Future<Output = std::io::Result<()>>,
) -> ServiceResult {
    (name, service.await)
}

/// Runs the services until a signal or until one of them fails; then stops them all, giving
/// running transfers a few seconds.
async fn run_until_signal(
    mut services: JoinSet<ServiceResult>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut failure = None;
    tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            info!("shutting down");
        }
        Some(joined) = services.join_next() => {
            failure = Some(match joined {
                Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped unexpectedly"),
                Ok((name, Err(e))) => anyhow::anyhow!("{name} failed: {e}"),
                Err(e) => anyhow::anyhow!("a service panicked: {e}"),
            });
        }
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(joined) = services.join_next().await {
            if let Ok((name, Err(e))) = joined {
                warn!(service = name, error = %e, "service ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!("services did not stop within 5 s; exiting anyway");
    }
    failure.map_or(Ok(()), Err)
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or use --listen with a higher port)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another TFTP server, e.g. tftpd-hpa or dnsmasq, already uses it: stop it or pick another --listen port)"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` of every command explains the command and each of its flags.
    #[test]
    fn every_command_and_flag_is_explained() {
        fn check(command: &clap::Command, path: &str, problems: &mut Vec<String>) {
            if command.get_about().is_none() {
                problems.push(format!("`{path}` has no description"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() {
                    problems.push(format!("`{path}` argument '{id}' has no help"));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), problems);
            }
        }
        let command = crate::Cli::command();
        command.clone().debug_assert();
        let mut problems = Vec::new();
        check(&command, "bootherd", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
