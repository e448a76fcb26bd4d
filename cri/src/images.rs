//! The image store as the runtime sees it: [`ImageSource`] over [`ImageStore`], and how an
//! image config becomes the defaults a container is built from.

use std::path::PathBuf;

use crate::container::spec::ImageDefaults;
use crate::image::{Image, ImageStore};
use crate::runtime::{ImageSource, ResolvedImage};

/// The execution defaults of an image (empty when it has no runtime config).
pub fn defaults_of(image: &Image) -> ImageDefaults {
    let Some(config) = image.runtime_config() else {
        return ImageDefaults::default();
    };
    ImageDefaults {
        entrypoint: config.entrypoint().clone().unwrap_or_default(),
        cmd: config.cmd().clone().unwrap_or_default(),
        env: config.env().clone().unwrap_or_default(),
        working_dir: config.working_dir().clone().unwrap_or_default(),
        user: config.user().clone().unwrap_or_default(),
        stop_signal: config.stop_signal().clone().unwrap_or_default(),
    }
}

impl ImageSource for ImageStore {
    fn resolve(&self, reference: &str) -> Option<ResolvedImage> {
        let image = self.get(reference)?;
        Some(ResolvedImage {
            id: image.id.clone(),
            defaults: defaults_of(&image),
        })
    }

    fn lease(&self, holder: &str, image_id: &str) -> Result<Vec<PathBuf>, String> {
        ImageStore::lease(self, holder, image_id).map_err(|e| e.to_string())
    }

    fn release(&self, holder: &str) {
        if let Err(e) = ImageStore::release(self, holder) {
            tracing::warn!(holder, error = %e, "releasing image layers failed");
        }
    }
}
