//! Commands that change or inspect the data directory directly (`image`, `profile`,
//! `machine`, `check`), for scripts, automation and `docker exec`. A running server picks the
//! change up within a second. They go through the store's validation, the same as the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bootherd_files::DirSource;
use bootherd_store::{Mac, Machine, Name, Profile, Store, StoreError, validate};
use bootherd_tftp::{FileSource, TftpPath};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct DataDir {
    /// Data directory: state.yaml and images/.
    #[arg(long, default_value = ".", env = "BOOTHERD_DATA", global = true)]
    pub(crate) data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Import files into an image (created if it does not exist); each is hashed while copied.
    Add {
        /// Image name: lowercase letters, digits, '.', '_' and '-' (e.g. debian-12).
        name: Name,
        /// Files to import; each keeps its file name inside the image.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List images.
    List,
    /// Show an image's files, sizes and sha256.
    Show {
        /// Image name.
        name: Name,
    },
    /// Re-hash an image's files against its manifest.
    Verify {
        /// Image name.
        name: Name,
    },
    /// Delete an image (refused while a profile uses it).
    Remove {
        /// Image name.
        name: Name,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Create or replace a profile. Give --image with --kernel (Linux) or --bootfile (raw boot
    /// files); or --menu, --local-disk or --chain.
    Add(Box<ProfileSpec>),
    /// List profiles with their readiness.
    List,
    /// Show one profile.
    Show {
        /// Profile name.
        name: Name,
    },
    /// Delete a profile (refused while a machine, a menu or the defaults use it).
    Remove {
        /// Profile name.
        name: Name,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ProfileSpec {
    /// Profile name: lowercase letters, digits, '.', '_' and '-'.
    name: Name,
    /// Image whose files the profile boots (with --kernel or --bootfile).
    #[arg(long)]
    image: Option<Name>,
    /// Kernel file of the image.
    #[arg(long, requires = "image")]
    kernel: Option<String>,
    /// Initrd file of the image (repeatable, in order).
    #[arg(long, requires = "kernel")]
    initrd: Vec<String>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// A menu of these profiles (repeatable).
    #[arg(long = "menu", value_name = "PROFILE")]
    menu: Vec<Name>,
    /// The menu's default entry.
    #[arg(long, requires = "menu")]
    default: Option<Name>,
    /// Seconds before the menu boots its default.
    #[arg(long, requires = "menu")]
    timeout: Option<u32>,
    /// Menu title.
    #[arg(long, default_value = "")]
    title: String,
    /// Boot from the local disk.
    #[arg(long)]
    local_disk: bool,
    /// Chain to this iPXE script URL, e.g. `https://boot.netboot.xyz`.
    #[arg(long, value_name = "URL")]
    chain: Option<String>,
    /// A raw boot file for an architecture, ARCH=FILE (repeatable), e.g. bios=pxelinux.0.
    #[arg(long, value_name = "ARCH=FILE", requires = "image")]
    bootfile: Vec<String>,
    /// What the profile is for, shown in menus and the web UI.
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MachineCommand {
    /// Register a machine or change it: its profile, boot-once profile and name.
    Set {
        /// MAC address, e.g. 52:54:00:12:34:56 (dashes work too).
        mac: Mac,
        /// What it boots from now on.
        #[arg(long)]
        profile: Option<Name>,
        /// Boot this profile once, then fall back to --profile.
        #[arg(long)]
        once: Option<Name>,
        /// A name for people (hostname, rack position).
        #[arg(long)]
        name: Option<String>,
        /// Remove the assigned profile (the defaults apply again).
        #[arg(long, conflicts_with = "profile")]
        clear_profile: bool,
    },
    /// List machines.
    List,
    /// Show one machine.
    Show {
        /// MAC address.
        mac: Mac,
    },
    /// Forget a machine (it then boots like an unknown machine).
    Remove {
        /// MAC address.
        mac: Mac,
    },
}

fn open(data: &Path) -> anyhow::Result<Store> {
    Store::open(data).with_context(|| format!("opening the data directory {}", data.display()))
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[derive(Serialize)]
struct ImageView {
    name: String,
    size: u64,
    files: Vec<bootherd_store::ImageFile>,
    problems: Vec<String>,
}

pub(crate) fn image(command: ImageCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        ImageCommand::Add { name, files } => {
            for file in &files {
                let entry = store
                    .images()
                    .import_path(&name, file, None)
                    .with_context(|| format!("importing {}", file.display()))?;
                if !dir.json {
                    println!(
                        "{name}/{}: {} bytes, sha256 {}",
                        entry.name, entry.size, entry.sha256
                    );
                }
            }
            if dir.json {
                show_image(&store, &name, true)?;
            }
        }
        ImageCommand::List => {
            let images: Vec<ImageView> = store
                .image_map()?
                .into_values()
                .map(|i| ImageView {
                    name: i.name.to_string(),
                    size: i.size(),
                    problems: i.problems.clone(),
                    files: i.files,
                })
                .collect();
            if dir.json {
                print_json(&images)?;
            } else if images.is_empty() {
                println!("no images (add one: bootherd image add NAME FILE...)");
            } else {
                for image in images {
                    println!(
                        "{}  {} files  {} bytes",
                        image.name,
                        image.files.len(),
                        image.size
                    );
                }
            }
        }
        ImageCommand::Show { name } => show_image(&store, &name, dir.json)?,
        ImageCommand::Verify { name } => {
            let problems = store.verify_image(&name)?;
            if dir.json {
                print_json(&problems)?;
            } else if problems.is_empty() {
                println!("{name}: every file matches its sha256");
            }
            if !problems.is_empty() {
                bail!("image '{name}' is damaged: {}", problems.join("; "));
            }
        }
        ImageCommand::Remove { name } => {
            store.remove_image(&name)?;
            if !dir.json {
                println!("removed image {name}");
            }
        }
    }
    Ok(())
}

fn show_image(store: &Store, name: &Name, json: bool) -> anyhow::Result<()> {
    let Some(image) = store.image_map()?.remove(name) else {
        bail!("image '{name}' does not exist");
    };
    if json {
        return print_json(&ImageView {
            name: image.name.to_string(),
            size: image.size(),
            problems: image.problems.clone(),
            files: image.files,
        });
    }
    for file in &image.files {
        println!("{:<24} {:>12}  {}", file.name, file.size, file.sha256);
    }
    Ok(())
}

fn build_profile(spec: &ProfileSpec) -> anyhow::Result<Profile> {
    let kinds = [
        spec.kernel.is_some(),
        !spec.menu.is_empty(),
        spec.local_disk,
        spec.chain.is_some(),
        !spec.bootfile.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        bail!(
            "say what the profile boots, exactly one of: --image with --kernel, --menu, --local-disk, --chain URL, --image with --bootfile ARCH=FILE"
        );
    }
    let description = spec.description.clone();
    Ok(
        if let (Some(image), Some(kernel)) = (&spec.image, &spec.kernel) {
            Profile::Linux {
                image: image.clone(),
                kernel: kernel.clone(),
                initrd: spec.initrd.clone(),
                cmdline: spec.cmdline.clone(),
                description,
            }
        } else if !spec.menu.is_empty() {
            Profile::Menu {
                title: spec.title.clone(),
                entries: spec.menu.clone(),
                default: spec.default.clone(),
                timeout: spec.timeout,
                description,
            }
        } else if spec.local_disk {
            Profile::LocalDisk { description }
        } else if let Some(url) = &spec.chain {
            Profile::Chain {
                url: url.clone(),
                description,
            }
        } else {
            let image = spec.image.clone().context("--bootfile needs --image")?;
            let mut files = BTreeMap::new();
            for pair in &spec.bootfile {
                let (arch, file) = pair.split_once('=').with_context(|| {
                    format!("--bootfile {pair:?} must look like ARCH=FILE, e.g. bios=pxelinux.0")
                })?;
                files.insert(arch.to_string(), file.to_string());
            }
            Profile::Bootfile {
                image,
                files,
                description,
            }
        },
    )
}

#[derive(Serialize)]
struct ProfileView<'a> {
    name: &'a Name,
    #[serde(flatten)]
    profile: &'a Profile,
    ready: bool,
    problems: Vec<String>,
}

pub(crate) fn profile(command: ProfileCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        ProfileCommand::Add(spec) => {
            let profile = build_profile(&spec)?;
            let name = spec.name.clone();
            store.update(|state| {
                state.profiles.insert(name.clone(), profile);
                Ok(())
            })?;
            let problems = store.readiness(&name)?;
            if !dir.json {
                if problems.is_empty() {
                    println!("profile {name} saved; ready to boot");
                } else {
                    println!(
                        "profile {name} saved, but not ready yet: {}",
                        problems.join("; ")
                    );
                }
            } else {
                show_profile(&store, &name, true)?;
            }
        }
        ProfileCommand::List => {
            let state = store.state();
            let images = store.image_map()?;
            let views: Vec<ProfileView<'_>> = state
                .profiles
                .iter()
                .map(|(name, profile)| {
                    let problems = validate::readiness(name, profile, &state, &images);
                    ProfileView {
                        name,
                        profile,
                        ready: problems.is_empty(),
                        problems,
                    }
                })
                .collect();
            if dir.json {
                print_json(&views)?;
            } else if views.is_empty() {
                println!("no profiles (add one: bootherd profile add NAME ...)");
            } else {
                for v in views {
                    let status = if v.ready {
                        "ready".to_string()
                    } else {
                        format!("NOT READY: {}", v.problems.join("; "))
                    };
                    println!("{:<20} {:<11} {status}", v.name.as_str(), v.profile.kind());
                }
            }
        }
        ProfileCommand::Show { name } => show_profile(&store, &name, dir.json)?,
        ProfileCommand::Remove { name } => {
            store.update(|state| {
                if state.profiles.remove(&name).is_none() {
                    return Err(StoreError::Rejected(format!(
                        "profile '{name}' does not exist"
                    )));
                }
                Ok(())
            })?;
            if !dir.json {
                println!("removed profile {name}");
            }
        }
    }
    Ok(())
}

fn show_profile(store: &Store, name: &Name, json: bool) -> anyhow::Result<()> {
    let state = store.state();
    let Some(profile) = state.profiles.get(name) else {
        bail!("profile '{name}' does not exist");
    };
    let problems = store.readiness(name)?;
    let view = ProfileView {
        name,
        profile,
        ready: problems.is_empty(),
        problems,
    };
    if json {
        return print_json(&view);
    }
    print!("{}", serde_yaml_ng::to_string(&view)?);
    Ok(())
}

#[derive(Serialize)]
struct MachineView<'a> {
    mac: String,
    #[serde(flatten)]
    machine: &'a Machine,
}

pub(crate) fn machine(command: MachineCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        MachineCommand::Set {
            mac,
            profile,
            once,
            name,
            clear_profile,
        } => {
            store.update(|state| {
                let machine = state.machines.entry(mac).or_default();
                if let Some(profile) = profile {
                    machine.profile = Some(profile);
                }
                if clear_profile {
                    machine.profile = None;
                }
                if let Some(once) = once {
                    machine.once = Some(once);
                }
                if let Some(name) = name {
                    machine.name = name;
                }
                Ok(())
            })?;
            show_machine(&store, &mac, dir.json)?;
        }
        MachineCommand::List => {
            let state = store.state();
            let views: Vec<MachineView<'_>> = state
                .machines
                .iter()
                .map(|(mac, machine)| MachineView {
                    mac: mac.to_string(),
                    machine,
                })
                .collect();
            if dir.json {
                print_json(&views)?;
            } else if views.is_empty() {
                println!("no machines registered (bootherd machine set MAC --profile NAME)");
            } else {
                for v in views {
                    println!(
                        "{}  {:<16} profile={} once={}",
                        v.mac,
                        v.machine.name,
                        v.machine
                            .profile
                            .as_ref()
                            .map_or("(defaults)", Name::as_str),
                        v.machine.once.as_ref().map_or("-", Name::as_str)
                    );
                }
            }
        }
        MachineCommand::Show { mac } => show_machine(&store, &mac, dir.json)?,
        MachineCommand::Remove { mac } => {
            store.update(|state| {
                if state.machines.remove(&mac).is_none() {
                    return Err(StoreError::Rejected(format!(
                        "machine {mac} is not registered"
                    )));
                }
                Ok(())
            })?;
            if !dir.json {
                println!("removed machine {mac}");
            }
        }
    }
    Ok(())
}

fn show_machine(store: &Store, mac: &Mac, json: bool) -> anyhow::Result<()> {
    let state = store.state();
    let Some(machine) = state.machines.get(mac) else {
        bail!("machine {mac} is not registered");
    };
    let view = MachineView {
        mac: mac.to_string(),
        machine,
    };
    if json {
        return print_json(&view);
    }
    print!("{}", serde_yaml_ng::to_string(&view)?);
    Ok(())
}

/// `bootherd check`: every profile's readiness and every problem, each with its fix. Fails
/// (exit status 1) when anything would keep a machine from booting.
pub(crate) fn check(dir: &DataDir, bootloaders: &Path) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let store = match Store::open(&dir.data) {
        Ok(store) => store,
        Err(e) => bail!(
            "state file is invalid: {e} (fix the file; a running server keeps its last good state)"
        ),
    };
    let state = store.state();
    for image in store.images().list()? {
        for problem in store.verify_image(&image.name)? {
            problems.push(format!("image '{}': {problem}", image.name));
        }
    }
    let images = store.image_map()?;
    let mut report = Vec::new();
    for (name, profile) in &state.profiles {
        let readiness = validate::readiness(name, profile, &state, &images);
        report.push((name.to_string(), profile.kind(), readiness.clone()));
        for problem in readiness {
            problems.push(format!("profile '{name}' is not ready: {problem}"));
        }
    }
    match DirSource::new(bootloaders) {
        Ok(source) => {
            for (arch, names) in [
                ("bios", bootherd_boot::bootloader_candidates("bios")),
                ("efi-x64", bootherd_boot::bootloader_candidates("efi-x64")),
            ] {
                if !names
                    .iter()
                    .any(|n| TftpPath::parse(n).is_ok_and(|p| source.contains(&p)))
                {
                    problems.push(format!(
                        "no {arch} bootloader in {} (looked for {}): install Debian's ipxe package or pass --bootloaders DIR",
                        bootloaders.display(),
                        names.join(", ")
                    ));
                }
            }
        }
        Err(e) => problems.push(format!(
            "bootloader directory {}: {e}; install Debian's ipxe package or pass --bootloaders DIR",
            bootloaders.display()
        )),
    }
    if dir.json {
        #[derive(Serialize)]
        struct Report<'a> {
            profiles: Vec<serde_json::Value>,
            problems: &'a [String],
        }
        let profiles = report
            .iter()
            .map(|(name, kind, readiness)| serde_json::json!({"name": name, "kind": kind, "ready": readiness.is_empty(), "problems": readiness}))
            .collect();
        print_json(&Report {
            profiles,
            problems: &problems,
        })?;
    } else {
        println!(
            "state: {} ({} profiles, {} machines)",
            store.state_path().display(),
            state.profiles.len(),
            state.machines.len()
        );
        for (name, kind, readiness) in &report {
            let status = if readiness.is_empty() {
                "ready".to_string()
            } else {
                "NOT READY".to_string()
            };
            println!("  profile {name:<20} {kind:<11} {status}");
        }
        for problem in &problems {
            println!("problem: {problem}");
        }
        if problems.is_empty() {
            println!("no problems found");
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) found", problems.len());
    }
    Ok(())
}

/// Where `bootherd password` stores the admin password's hash.
pub(crate) const PASSWORD_FILE: &str = "admin-password";
/// Where API tokens are stored (hashed).
pub(crate) const TOKEN_FILE: &str = "api-tokens.yaml";

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it (only its hash is stored: it cannot be shown again).
    Add {
        /// A name saying who uses it (ansible, ci): letters, digits, '-', '_' and '.'.
        name: String,
    },
    /// List token names and when they were made.
    List,
    /// Revoke a token.
    Remove {
        /// Token name.
        name: String,
    },
}

pub(crate) fn token(command: TokenCommand, dir: &DataDir) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir.data)
        .with_context(|| format!("creating {}", dir.data.display()))?;
    let tokens = bootherd_web::TokenFile::new(dir.data.join(TOKEN_FILE));
    match command {
        TokenCommand::Add { name } => {
            let token = tokens.create(&name)?;
            if dir.json {
                println!("{}", serde_json::json!({ "name": name, "token": token }));
            } else {
                println!("{token}");
                eprintln!(
                    "token '{name}' created; send it as 'Authorization: Bearer <token>'. It is not stored and cannot be shown again."
                );
            }
        }
        TokenCommand::List => {
            let list = tokens.list()?;
            if dir.json {
                let list: Vec<_> = list
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "created": t.created}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else if list.is_empty() {
                println!("no API tokens (create one with `bootherd token add NAME`)");
            } else {
                for t in list {
                    println!("{}", t.name);
                }
            }
        }
        TokenCommand::Remove { name } => {
            if !tokens.remove(&name)? {
                bail!("no token named '{name}'");
            }
            println!("token '{name}' revoked");
        }
    }
    Ok(())
}

/// Reads the new password: twice without echo on a terminal, else one line of stdin (for
/// scripts: `echo "$PW" | bootherd password`).
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let read_line = || -> anyhow::Result<String> {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let original = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &silent).context("turning off echo")?;
    let result = (|| {
        eprint!("new admin password: ");
        let first = read_line()?;
        eprint!("\nagain: ");
        let second = read_line()?;
        eprintln!();
        anyhow::ensure!(
            first == second,
            "the two passwords differ; nothing was changed"
        );
        Ok(first)
    })();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &original);
    result
}

pub(crate) fn password(print: bool, dir: &DataDir) -> anyhow::Result<()> {
    let hash = bootherd_web::hash_password(&read_password()?)?;
    if print {
        println!("{hash}");
        return Ok(());
    }
    std::fs::create_dir_all(&dir.data)
        .with_context(|| format!("creating {}", dir.data.display()))?;
    let path = dir.data.join(PASSWORD_FILE);
    bootherd_store::write_private(&path, format!("{hash}\n").as_bytes())?;
    println!(
        "admin password set ({}); restart bootherd serve to use it",
        path.display()
    );
    Ok(())
}

/// A plain HTTP/1.1 GET of the health endpoint with short timeouts: the container's
/// HEALTHCHECK runs this binary rather than shipping curl in the image.
pub(crate) fn health(url: Option<&str>) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let default_url;
    let url = match url {
        Some(url) => url,
        None => {
            let port = std::env::var("BOOTHERD_HTTP_PORT").unwrap_or_else(|_| "8080".into());
            default_url = format!("http://127.0.0.1:{port}/healthz");
            &default_url
        }
    };
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} has no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connecting to {target}: is bootherd serve running?"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer from {url}"))?;
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{url} answered '{status}'");
    }
    println!("healthy: {url}");
    Ok(())
}
