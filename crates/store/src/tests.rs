use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn mac(text: &str) -> Mac {
    text.parse().unwrap()
}

fn store_with_image() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .images()
        .import_reader(&name("debian"), "linux", &b"kernel"[..])
        .unwrap();
    store
        .images()
        .import_reader(&name("debian"), "initrd.gz", &b"initrd"[..])
        .unwrap();
    store
        .images()
        .import_reader(&name("syslinux"), "pxelinux.0", &b"pxe"[..])
        .unwrap();
    (dir, store)
}

fn every_kind() -> BTreeMap<Name, Profile> {
    let mut profiles = BTreeMap::new();
    profiles.insert(
        name("installer"),
        Profile::Linux {
            image: name("debian"),
            kernel: "linux".into(),
            initrd: vec!["initrd.gz".into()],
            cmdline: "priority=critical console=ttyS0".into(),
            description: "Debian installer".into(),
        },
    );
    profiles.insert(
        name("disk"),
        Profile::LocalDisk {
            description: String::new(),
        },
    );
    profiles.insert(
        name("netbootxyz"),
        Profile::Chain {
            url: "https://boot.netboot.xyz".into(),
            description: String::new(),
        },
    );
    profiles.insert(
        name("legacy"),
        Profile::Bootfile {
            image: name("syslinux"),
            files: BTreeMap::from([("bios".to_string(), "pxelinux.0".to_string())]),
            description: String::new(),
        },
    );
    profiles.insert(
        name("choose"),
        Profile::Menu {
            title: "Pick one".into(),
            entries: vec![name("installer"), name("disk"), name("netbootxyz")],
            default: Some(name("disk")),
            timeout: Some(5),
            description: String::new(),
        },
    );
    profiles
}

#[test]
fn state_round_trips_through_the_file() {
    let (dir, store) = store_with_image();
    store
        .update(|state| {
            state.profiles = every_kind();
            state.machines.insert(
                mac("52:54:00:00:00:01"),
                Machine {
                    name: "node1".into(),
                    profile: Some(name("disk")),
                    once: Some(name("installer")),
                },
            );
            state.defaults.unknown = UnknownMachines::Profile(name("choose"));
            Ok(())
        })
        .unwrap();
    let written = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(
        written.contains("kind: linux") && written.contains("'52:54:00:00:00:01':"),
        "{written}"
    );
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(*reopened.state(), *store.state());
    assert_eq!(
        reopened.readiness(&name("installer")).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_hand_written_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(STATE_FILE),
        "# written by hand\ndefaults:\n  unknown: ignore\nprofiles:\n  disk:\n    kind: local-disk\nmachines:\n  52-54-00-AA-BB-CC:\n    profile: disk\n",
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let state = store.state();
    assert_eq!(state.defaults.unknown, UnknownMachines::Ignore);
    assert_eq!(
        state.machines[&mac("52:54:00:aa:bb:cc")].profile,
        Some(name("disk"))
    );
}

#[test]
fn invalid_edits_are_reported_with_their_line_and_the_last_good_state_stays() {
    let (dir, store) = store_with_image();
    store
        .update(|state| {
            state.profiles = every_kind();
            Ok(())
        })
        .unwrap();
    let good = store.state();
    let path = dir.path().join(STATE_FILE);

    let cases: [(&str, usize, &str); 4] = [
        (
            "profiles:\n  disk:\n    kind: local-disk\n  x:\n    kind: linux\n    image: debian\n    kernal: linux\n",
            7,
            "kernal",
        ),
        ("profiles:\n  disk:\n    kind: floppy\n", 3, "floppy"),
        (
            "machines:\n  52:54:00:00:00:01:\n    profile: nosuch\n",
            3,
            "nosuch",
        ),
        (
            "profiles:\n  Disk:\n    kind: local-disk\n",
            2,
            "valid name",
        ),
    ];
    for (text, line, needle) in cases {
        // Let the modification time move even on coarse file systems.
        std::thread::sleep(Duration::from_millis(5));
        fs::write(&path, text).unwrap();
        match store.reload_if_changed() {
            Err(StoreError::Invalid {
                line: Some(l),
                message,
                ..
            }) => {
                assert!(message.contains(needle), "{message}");
                assert!(
                    l == line || l == line + 1 || l + 1 == line,
                    "{text}: reported line {l}, expected about {line}"
                );
            }
            other => panic!("{text}: expected an Invalid error, got {other:?}"),
        }
        assert_eq!(*store.state(), *good, "an invalid edit replaced the state");
        // Reported once, not at every poll.
        assert!(matches!(store.reload_if_changed(), Ok(false)));
    }
    std::thread::sleep(Duration::from_millis(5));
    fs::write(&path, "defaults:\n  unknown: ignore\n").unwrap();
    assert!(store.reload_if_changed().unwrap());
    assert_eq!(store.state().defaults.unknown, UnknownMachines::Ignore);
}

fn assign_broken(store: &Store) -> Result<(), StoreError> {
    store.update(|state| {
        state.machines.insert(
            mac("52:54:00:00:00:09"),
            Machine {
                profile: Some(name("broken")),
                ..Machine::default()
            },
        );
        Ok(())
    })
}

#[test]
fn validation_refuses_what_could_not_boot() {
    let (_dir, store) = store_with_image();
    store
        .update(|state| {
            state.profiles = every_kind();
            Ok(())
        })
        .unwrap();
    // A profile whose files are missing cannot be assigned.
    store
        .update(|state| {
            state.profiles.insert(
                name("broken"),
                Profile::Linux {
                    image: name("debian"),
                    kernel: "vmlinuz".into(),
                    initrd: vec![],
                    cmdline: String::new(),
                    description: String::new(),
                },
            );
            Ok(())
        })
        .unwrap();
    assert!(store.readiness(&name("broken")).unwrap()[0].contains("no file 'vmlinuz'"));
    let err = assign_broken(&store).unwrap_err();
    assert!(err.to_string().contains("vmlinuz"), "{err}");
    assert!(store.state().machines.is_empty());
    // Once the file exists, it can.
    store
        .images()
        .import_reader(&name("debian"), "vmlinuz", &b"k"[..])
        .unwrap();
    assign_broken(&store).unwrap();
    // Nested menus, dangling menu entries and bad URLs are refused, each naming its field.
    for (field, bad) in [
        (
            "entries",
            Profile::Menu {
                title: String::new(),
                entries: vec![name("choose")],
                default: None,
                timeout: None,
                description: String::new(),
            },
        ),
        (
            "entries",
            Profile::Menu {
                title: String::new(),
                entries: vec![name("ghost")],
                default: None,
                timeout: None,
                description: String::new(),
            },
        ),
        (
            "url",
            Profile::Chain {
                url: "ftp://x".into(),
                description: String::new(),
            },
        ),
        (
            "files",
            Profile::Bootfile {
                image: name("syslinux"),
                files: BTreeMap::from([("amiga".to_string(), "x".to_string())]),
                description: String::new(),
            },
        ),
    ] {
        let err = store
            .update(|state| {
                state.profiles.insert(name("bad"), bad.clone());
                Ok(())
            })
            .unwrap_err();
        match err {
            StoreError::Rejected(rejection) => {
                assert_eq!(rejection.field, Some(field), "{rejection}")
            }
            other => panic!("not a rejection: {other}"),
        }
    }
    // A corrupted image file flags the image: its profiles are no longer ready.
    fs::write(store.images().root().join("debian/linux"), b"tampered").unwrap();
    assert!(!store.verify_image(&name("debian")).unwrap().is_empty());
    assert!(store.readiness(&name("installer")).unwrap()[0].contains("failed verification"));
    store
        .images()
        .import_reader(&name("debian"), "linux", &b"kernel"[..])
        .unwrap();
    assert!(store.verify_image(&name("debian")).unwrap().is_empty());
    assert!(store.readiness(&name("installer")).unwrap().is_empty());
    // An image in use cannot be deleted; an unused one can.
    let err = store.remove_image(&name("debian")).unwrap_err();
    assert!(err.to_string().contains("installer"), "{err}");
    store
        .update(|state| {
            state.profiles.remove(&name("legacy"));
            Ok(())
        })
        .unwrap();
    store.remove_image(&name("syslinux")).unwrap();
    assert!(store.images().get(&name("syslinux")).unwrap().is_none());
}

/// Writer side of the crash test: runs only when the crash test starts this binary again with
/// the variable set, then writes states until it is killed.
#[test]
fn writer_process() {
    let Ok(dir) = std::env::var("BOOTHERD_STORE_CRASH_DIR") else {
        return;
    };
    let store = Store::open(&dir).unwrap();
    for i in 0u64.. {
        store
            .update(|state| {
                state.profiles.clear();
                // Large enough that a write takes a while and a kill lands inside one.
                state.profiles.insert(
                    name("p"),
                    Profile::LocalDisk {
                        description: format!("version {i} {}", "x".repeat(200_000)),
                    },
                );
                Ok(())
            })
            .unwrap();
        // Tells the parent a write just completed, so it can aim its kill at the next one.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "written {i}");
        let _ = out.flush();
    }
}

#[test]
fn killing_a_writer_never_leaves_a_broken_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..40u64 {
        assert!(Instant::now() < deadline, "crash test took too long");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "tests::writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BOOTHERD_STORE_CRASH_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for one to three completed writes, then kill a few milliseconds into the next
        // one: the delays are spread so that kills land in serialising, writing, syncing and
        // renaming.
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut seen = 0;
        while seen < 1 + round % 3 {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("written ") => seen += 1,
                Some(_) => {}
                None => panic!("the writer exited"),
            }
        }
        std::thread::sleep(Duration::from_micros((round * 7919) % 12_000));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever moment the kill hit, the file is a complete version.
        if let Ok(text) = fs::read_to_string(dir.path().join(STATE_FILE)) {
            let store = Store::open(dir.path())
                .unwrap_or_else(|e| panic!("state file broken after kill {}: {e}", round + 1));
            let description = store.state().profiles[&name("p")].description().to_string();
            assert!(
                description.starts_with("version ") && description.ends_with(&"x".repeat(1000)),
                "truncated: {} bytes",
                text.len()
            );
        }
    }
    assert!(
        fs::read_to_string(dir.path().join(STATE_FILE)).is_ok(),
        "the writer never wrote anything"
    );
}

/// YAML 1.1 readers (PyYAML, Ansible) read an unquoted 52:54:00:12:34:56 as a base-60 number,
/// so MACs are written quoted; bootherd reads both forms.
#[test]
fn macs_are_written_so_yaml_1_1_readers_keep_them_strings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .update(|state| {
            state
                .machines
                .insert(mac("52:54:00:12:34:56"), Machine::default());
            state
                .machines
                .insert(mac("52:54:00:ab:cd:ef"), Machine::default());
            Ok(())
        })
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("state.yaml")).unwrap();
    for m in ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"] {
        assert!(
            text.contains(&format!("'{m}':")),
            "{m} unquoted in:\n{text}"
        );
    }
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.state().machines.len(), 2);
}

/// Writes replace files with new ones; secrets must come back as private as they were, and a
/// file written afresh as private must be so from its first byte.
#[test]
fn atomic_writes_keep_the_file_mode_and_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("api-tokens.yaml");
    crate::write_private(&secret, b"one").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600);
    crate::write_atomic(&secret, b"two").unwrap();
    assert_eq!(mode(&secret), 0o600, "a rewrite made the secret readable");
    let public = dir.path().join("state.yaml");
    std::fs::write(&public, b"x").unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o640)).unwrap();
    crate::write_atomic(&public, b"y").unwrap();
    assert_eq!(mode(&public), 0o640);
}

/// A crash between writing a temporary file and renaming it leaves the temporary behind; the
/// next start removes those of writers that are gone, and never the file in force.
#[test]
fn temporary_files_of_a_crash_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .update(|state| {
                state
                    .machines
                    .insert(mac("52:54:00:12:34:56"), Machine::default());
                Ok(())
            })
            .unwrap();
    }
    let images = dir.path().join("images/debian");
    std::fs::create_dir_all(&images).unwrap();
    // A writer process that no longer exists (pid_max is at most 2^22).
    let gone = 4_194_999;
    let leftovers = [
        dir.path().join(format!(".state.yaml.tmp-{gone}-0")),
        dir.path().join(format!(".state.yaml.tmp-{gone}")),
        images.join(format!(".vmlinuz.import-{gone}-3")),
        images.join(format!(".manifest.yaml.tmp-{gone}-1")),
    ];
    for path in &leftovers {
        std::fs::write(path, b"half").unwrap();
    }
    // A temporary file of a writer that is alive is left alone.
    let alive = dir
        .path()
        .join(format!(".state.yaml.tmp-{}-9", writer_pid_alive()));
    std::fs::write(&alive, b"in flight").unwrap();
    let store = Store::open(dir.path()).unwrap();
    for path in &leftovers {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(alive.exists());
    assert_eq!(store.state().machines.len(), 1);
}

/// The pid of a process that runs for the whole test (our parent, the test harness's shell or
/// init), which is not this process.
fn writer_pid_alive() -> u32 {
    std::os::unix::process::parent_id()
}
