//! `bindings.localstorage` v1: files under one root folder.
//!
//! Output only: `create`, `get`, `list`, `delete`, with the file named by the request metadata
//! `fileName` (a relative path; `create` picks a UUID when it is absent). As in Dapr, `create`
//! answers `{"fileName": "<name>"}` (also as the response metadata `fileName`) and a JSON string
//! payload (what the HTTP API sends for `"data": "text"`) is written unquoted; `list` answers a
//! JSON array of the files' paths relative to the root (Dapr gives absolute paths).
//!
//! Paths never leave the root: `..` components, absolute paths, and symlinks (of the file or of
//! a parent folder) resolving outside the root are refused with `BadRequest`, where Dapr clamps
//! such paths into the root. Tested against the local file system.

mod paths;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use mecha_core::bindings::{
    BindingComponent, BindingError, InvokeRequest, InvokeResponse, OutputBinding,
};
use mecha_core::component::{ComponentError, ComponentInit};
use mecha_core::metadata::parse_bool;

use self::paths::Root;

/// Metadata key of the root folder (component metadata, required).
const ROOT_PATH: &str = "rootPath";
/// Metadata key of the file (request metadata).
const FILE_NAME: &str = "fileName";
/// Metadata key asking `create` to base64-decode the payload (component or request metadata).
const DECODE_BASE64: &str = "decodeBase64";
/// Metadata key asking `get` to base64-encode the content (component or request metadata).
const ENCODE_BASE64: &str = "encodeBase64";
const KNOWN_KEYS: &[&str] = &[
    ROOT_PATH,
    DECODE_BASE64,
    ENCODE_BASE64,
    "direction",
    "route",
];
const OPERATIONS: &[&str] = &["create", "get", "list", "delete"];

/// The `bindings.localstorage` component.
///
/// # Metadata
///
/// - `rootPath` (required): the folder holding the files; created if missing.
/// - `decodeBase64`: `create` base64-decodes the payload before writing it (default `false`;
///   request metadata of the same name overrides it).
/// - `encodeBase64`: `get` answers the content base64-encoded (default `false`; request
///   metadata of the same name overrides it).
pub struct LocalStorageBinding {
    root: Root,
    decode_base64: bool,
    encode_base64: bool,
}

// === impl LocalStorageBinding ===

impl LocalStorageBinding {
    /// Creates the component and its root folder.
    pub async fn create(init: ComponentInit) -> Result<Arc<BindingComponent>, ComponentError> {
        init.metadata.warn_unknown(&init.name, KNOWN_KEYS);
        let root = PathBuf::from(init.metadata.required(ROOT_PATH)?.trim());
        let root = Root::open(&root)
            .await
            .map_err(|reason| ComponentError::InvalidField {
                field: ROOT_PATH,
                reason,
            })?;
        let binding = Arc::new(Self {
            root,
            decode_base64: init.metadata.bool(DECODE_BASE64, false)?,
            encode_base64: init.metadata.bool(ENCODE_BASE64, false)?,
        });
        Ok(Arc::new(BindingComponent {
            input: None,
            output: Some(binding),
        }))
    }

    async fn create_file(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = match file_name(&req) {
            Some(name) => name.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let decode = flag(&req, DECODE_BASE64, self.decode_base64)?;
        let mut data = unquote(req.data);
        if decode {
            let text = std::str::from_utf8(&data).unwrap_or_default().trim();
            data = BASE64.decode(text).map(Bytes::from).map_err(|e| {
                BindingError::BadRequest(format!("data is not valid base64 ({DECODE_BASE64}): {e}"))
            })?;
        }
        let (path, relative) = self.root.for_write(&name).await?;
        tokio::fs::write(&path, &data)
            .await
            .map_err(|e| io_error("write", &relative, e))?;
        tracing::debug!(file = %relative, bytes = data.len(), "Wrote file");
        let body = serde_json::json!({ "fileName": &relative }).to_string();
        Ok(InvokeResponse {
            data: Some(Bytes::from(body)),
            metadata: HashMap::from([(FILE_NAME.to_owned(), relative)]),
            content_type: Some("application/json".into()),
        })
    }

    async fn get_file(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = required_name(&req)?;
        let encode = flag(&req, ENCODE_BASE64, self.encode_base64)?;
        let path = self.root.existing(name).await?;
        let content = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error("read", name, e))?;
        let data = if encode {
            Bytes::from(BASE64.encode(&content))
        } else {
            Bytes::from(content)
        };
        Ok(InvokeResponse {
            data: Some(data),
            metadata: HashMap::new(),
            content_type: None,
        })
    }

    async fn list_files(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let dir = match file_name(&req) {
            Some(name) => self.root.existing(name).await?,
            None => self.root.path().to_path_buf(),
        };
        let root = self.root.path().to_path_buf();
        let files = tokio::task::spawn_blocking(move || paths::walk(&root, &dir))
            .await
            .map_err(|e| BindingError::Backend(format!("listing files failed: {e}")))??;
        let body = serde_json::to_vec(&files)
            .map_err(|e| BindingError::Backend(format!("encoding the list failed: {e}")))?;
        Ok(InvokeResponse {
            data: Some(Bytes::from(body)),
            metadata: HashMap::new(),
            content_type: Some("application/json".into()),
        })
    }

    async fn delete_file(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        let name = required_name(&req)?;
        // Resolving refuses names leading outside the root; the name itself is removed.
        self.root.existing(name).await?;
        let path = self.root.lexical(name)?;
        let is_dir = tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| m.is_dir());
        if is_dir {
            return Err(BindingError::BadRequest(format!(
                "'{name}' is a folder, not a file"
            )));
        }
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| io_error("delete", name, e))?;
        Ok(InvokeResponse::default())
    }
}

#[async_trait]
impl OutputBinding for LocalStorageBinding {
    fn operations(&self) -> &[&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, BindingError> {
        match req.operation.as_str() {
            "create" => self.create_file(req).await,
            "get" => self.get_file(req).await,
            "list" => self.list_files(req).await,
            "delete" => self.delete_file(req).await,
            other => Err(BindingError::unsupported(other, OPERATIONS)),
        }
    }
}

/// The request's `fileName`, if set and not blank.
fn file_name(req: &InvokeRequest) -> Option<&str> {
    req.metadata
        .get(FILE_NAME)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

fn required_name(req: &InvokeRequest) -> Result<&str, BindingError> {
    file_name(req)
        .ok_or_else(|| BindingError::BadRequest(format!("missing request metadata '{FILE_NAME}'")))
}

/// A boolean request flag, falling back to the component's setting.
fn flag(req: &InvokeRequest, key: &str, default: bool) -> Result<bool, BindingError> {
    match req.metadata.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some(v) => parse_bool(v).ok_or_else(|| {
            BindingError::BadRequest(format!("request metadata '{key}': '{v}' is not a boolean"))
        }),
    }
}

/// A payload that is one JSON string is written as the string's content, as Dapr does.
fn unquote(data: Bytes) -> Bytes {
    if data.first() == Some(&b'"')
        && let Ok(s) = serde_json::from_slice::<String>(&data)
    {
        return Bytes::from(s);
    }
    data
}

fn io_error(action: &str, name: &str, e: std::io::Error) -> BindingError {
    match e.kind() {
        std::io::ErrorKind::NotFound => BindingError::BadRequest(format!("file not found: {name}")),
        _ => BindingError::Backend(format!("cannot {action} '{name}': {e}")),
    }
}
