//! The limits of the HTTP side a user can set (`http:` in bootherd.yaml, or flags): what an
//! upload or import may add (`intake`), and how connections are held (`serve`).

use std::path::PathBuf;
use std::time::Duration;

/// Limits of the HTTP side that a user can set (`http:` in bootherd.yaml, or flags).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Directories the web UI and API may import files from (DATA/import is always one).
    pub import_dirs: Vec<PathBuf>,
    /// Largest file an upload or an import may add to the image store.
    pub max_image_file_bytes: u64,
    /// An upload that sends nothing for this long is given up.
    pub upload_stall: Duration,
    /// A connection must finish sending its request headers within this time.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold; more from it are closed at once.
    pub max_connections_per_client: usize,
}

/// 16 GiB: larger than any installer ISO or initrd people boot, small enough that one request
/// cannot fill a disk by accident.
pub const DEFAULT_MAX_IMAGE_FILE_BYTES: u64 = 16 << 30;

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            import_dirs: Vec::new(),
            max_image_file_bytes: DEFAULT_MAX_IMAGE_FILE_BYTES,
            upload_stall: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_client: 32,
        }
    }
}
