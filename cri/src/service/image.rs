//! The CRI v1 `ImageService` over an [`ImageStore`]: pull, list, status, remove and file
//! system usage, with store errors turned into gRPC statuses that keep the cause.
//!
//! Behaviour follows the kubelet's expectations of containerd: `PullImage` answers the image
//! ID; `ImageStatus` of a missing image is an empty response, not an error; `RemoveImage` of a
//! missing image succeeds; the CRI `uid`/`username` come from the config's `User` (a number
//! before any `:` is a uid, anything else a user name).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use tonic::{Request, Response, Status};

use crate::image::{Image, ImageError, ImageStore, RegistryAuth};

/// The gRPC image service; cheap to clone, all clones share the store.
#[derive(Debug, Clone)]
pub struct CriImages {
    store: Arc<ImageStore>,
}

impl CriImages {
    /// A service over `store`.
    pub fn new(store: Arc<ImageStore>) -> Self {
        CriImages { store }
    }

    /// The tonic server for this service, ready for `Server::add_service`.
    pub fn into_server(self) -> ImageServiceServer<Self> {
        ImageServiceServer::new(self)
    }
}

/// The gRPC status for a store error; the message is the error's full text.
pub fn status_of(e: &ImageError) -> Status {
    let message = e.to_string();
    match e {
        ImageError::NotFound { .. } => Status::not_found(message),
        ImageError::Unauthorized { .. } => Status::unauthenticated(message),
        ImageError::Unreachable { .. } | ImageError::Registry { .. } => {
            Status::unavailable(message)
        }
        ImageError::InvalidReference { .. }
        | ImageError::UnsupportedMediaType { .. }
        | ImageError::InvalidContent { .. } => Status::invalid_argument(message),
        ImageError::DigestMismatch { .. } | ImageError::Corrupt { .. } => {
            Status::data_loss(message)
        }
        ImageError::Io { .. } | ImageError::Locked { .. } => Status::internal(message),
        ImageError::Config { .. } => Status::failed_precondition(message),
    }
}

/// The CRI view of a stored image.
pub fn cri_image(image: &Image) -> cri::Image {
    let user = image
        .runtime_config()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let (uid, username) = user_of(&user);
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// `uid[:gid]` gives a uid; `name[:group]` a user name; empty gives neither.
fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Status::invalid_argument(
            "image spec with an image name is required",
        )),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image store task failed: {e}")))?
        .map_err(|e| status_of(&e))
}

#[tonic::async_trait]
impl ImageService for CriImages {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|name| !name.is_empty());
        let images = match filter {
            Some(name) => self.store.get(&name).into_iter().collect(),
            None => self.store.list(),
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(cri_image).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        let Some(image) = self.store.get(name) else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "id": image.id,
                "manifestDigest": image.manifest_digest,
                "layers": image.layers,
                "imageSpec": image.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(cri_image(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        let auth = request.auth.map(|a| RegistryAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        });
        let image = self
            .store
            .pull(name, auth.as_ref())
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?.to_string();
        let store = self.store.clone();
        blocking(move || store.remove(&name)).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let store = self.store.clone();
        let usage = blocking(move || store.fs_info()).await?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: usage.mountpoint.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value {
                    value: usage.used_bytes,
                }),
                inodes_used: Some(cri::UInt64Value {
                    value: usage.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_uids_when_numeric_and_names_otherwise() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("0"), (Some(0), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".to_string()));
    }

    #[test]
    fn each_error_kind_has_its_status_code() {
        let cases = [
            (
                ImageError::NotFound {
                    reference: "x".into(),
                    detail: "d".into(),
                },
                tonic::Code::NotFound,
            ),
            (
                ImageError::Unauthorized {
                    reference: "x".into(),
                    detail: "d".into(),
                },
                tonic::Code::Unauthenticated,
            ),
            (
                ImageError::Unreachable {
                    reference: "x".into(),
                    registry: "r".into(),
                    detail: "d".into(),
                },
                tonic::Code::Unavailable,
            ),
            (
                ImageError::InvalidReference {
                    reference: "x".into(),
                    reason: "d".into(),
                },
                tonic::Code::InvalidArgument,
            ),
            (
                ImageError::DigestMismatch {
                    what: "x".into(),
                    expected: "a".into(),
                    actual: "b".into(),
                },
                tonic::Code::DataLoss,
            ),
            (
                ImageError::Io {
                    op: "write",
                    path: "/p".into(),
                    source: std::io::Error::other("full"),
                },
                tonic::Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = status_of(&error);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
        }
    }
}
