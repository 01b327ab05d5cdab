//! A real bootherd for the end-to-end fuzz targets: a store with profiles and an image, a
//! bootloader directory (with a symlink leading out of it), and the `Boot` and router over
//! them, built once per fuzzing process under `target/fuzz-fixture/<target>`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bootherd_boot::Boot;
use bootherd_store::{Machine, Profile, Store};
use bootherd_files::DirSource;

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The content of a file outside the served directories, reachable only by a symlink.
pub const SECRET: &[u8] = b"bootherd-fuzz-secret-outside-the-root";

pub fn boot(target: &str) -> &'static Arc<Boot> {
    static BOOT: OnceLock<Arc<Boot>> = OnceLock::new();
    BOOT.get_or_init(|| build(target))
}

fn build(target: &str) -> Arc<Boot> {
    let root = PathBuf::from("target/fuzz-fixture").join(target);
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    let loaders = root.join("loaders");
    std::fs::create_dir_all(&loaders).expect("fixture directory");
    std::fs::write(loaders.join("undionly.kpxe"), vec![0x55; 70_000]).expect("loader");
    std::fs::write(loaders.join("snponly.efi"), vec![0xaa; 200_000]).expect("loader");
    std::fs::write(root.join("secret"), SECRET).expect("secret");
    let _ = std::os::unix::fs::symlink(root.join("secret"), loaders.join("outside"));
    let store = Arc::new(Store::open(&data).expect("store"));
    let image = "debian".parse().expect("name");
    store
        .images()
        .import_reader(&image, "linux", vec![7u8; 300_000].as_slice())
        .expect("image");
    store
        .update(|state| {
            state.profiles.insert(
                "inst".parse().expect("name"),
                Profile::Linux {
                    image,
                    kernel: "linux".into(),
                    initrd: vec![],
                    cmdline: "console=ttyS0".into(),
                    description: String::new(),
                },
            );
            state.profiles.insert(
                "disk".parse().expect("name"),
                Profile::LocalDisk {
                    description: String::new(),
                },
            );
            state.machines.insert(
                bootherd_store::Mac(MAC),
                Machine {
                    profile: Some("disk".parse().expect("name")),
                    once: Some("inst".parse().expect("name")),
                    ..Machine::default()
                },
            );
            Ok(())
        })
        .expect("state");
    let loaders = Arc::new(
        DirSource::new(&loaders)
            .expect("loaders")
            .named("bootloader directory"),
    );
    Arc::new(Boot::new(store, loaders, 8080).expect("boot"))
}
