//! Which files may be served: the bootloader directory, and of the image store only files an
//! image's manifest lists. TFTP (`FileSource`) and HTTP (`open_image_file`, `open_bootloader`)
//! ask the same functions.

use bootherd_store::Name;
use bootherd_tftp::{FileContent, FileSource, SourceError, TftpPath};

use crate::Boot;

impl Boot {
    /// A file of an image, if its manifest lists it (so neither the manifest nor a
    /// half-imported file is ever served). The one rule for image files, asked by TFTP and HTTP.
    pub fn open_image_file(
        &self,
        image: &str,
        file: &str,
    ) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        let not_found = || SourceError::NotFound {
            path: format!("images/{image}/{file}"),
            area: "image store",
        };
        let image: Name = image.parse().map_err(|_| not_found())?;
        let listed = self
            .store
            .images()
            .get(&image)
            .ok()
            .flatten()
            .is_some_and(|i| i.file(file).is_some());
        if !listed {
            return Err(not_found());
        }
        let inner = TftpPath::parse(&format!("{image}/{file}")).map_err(|_| not_found())?;
        self.images.open(&inner)
    }

    /// A file of the bootloader directory, by the same rule over TFTP and HTTP.
    pub fn open_bootloader(
        &self,
        path: &TftpPath,
    ) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        self.bootloaders.open(path)
    }
}

impl FileSource for Boot {
    /// `images/<image>/<file>` serves a file of an image; anything else is a bootloader.
    fn open(&self, path: &TftpPath) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        let text = path.as_str();
        if let Some(rest) = text.strip_prefix("images/") {
            let Some((image, file)) = rest.split_once('/') else {
                return Err(SourceError::NotFound {
                    path: text.to_string(),
                    area: "image store",
                });
            };
            return self.open_image_file(image, file);
        }
        self.open_bootloader(path)
    }

    fn contains(&self, path: &TftpPath) -> bool {
        self.open(path).is_ok()
    }
}
