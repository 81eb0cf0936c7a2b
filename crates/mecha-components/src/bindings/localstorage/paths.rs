//! Confinement of request paths to the root folder of `bindings.localstorage`.

use std::path::{Component, Path, PathBuf};

use mecha_core::bindings::BindingError;

/// Roots Dapr refuses too: system folders and the Kubernetes service-account secrets.
const DISALLOWED_ROOTS: &[&str] = &["/proc", "/sys", "/boot", "/var/run/secrets", "/run/secrets"];

/// The canonical root folder.
pub(super) struct Root {
    path: PathBuf,
}

// === impl Root ===

impl Root {
    /// Creates `path` if missing and resolves it (symlinks included).
    pub(super) async fn open(path: &Path) -> Result<Self, String> {
        let absolute = std::path::absolute(path)
            .map_err(|e| format!("cannot resolve '{}': {e}", path.display()))?;
        tokio::fs::create_dir_all(&absolute)
            .await
            .map_err(|e| format!("cannot create '{}': {e}", absolute.display()))?;
        let canonical = tokio::fs::canonicalize(&absolute)
            .await
            .map_err(|e| format!("cannot resolve '{}': {e}", absolute.display()))?;
        if !canonical.is_dir() {
            return Err(format!("'{}' is not a folder", canonical.display()));
        }
        if DISALLOWED_ROOTS.iter().any(|d| canonical.starts_with(d)) {
            return Err(format!(
                "'{}' is a disallowed location",
                canonical.display()
            ));
        }
        Ok(Self { path: canonical })
    }

    /// The canonical root.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an existing file or folder `name`, which must resolve inside the root.
    pub(super) async fn existing(&self, name: &str) -> Result<PathBuf, BindingError> {
        let parts = components(name)?;
        let joined = self.path.join(parts.join("/"));
        let resolved = tokio::fs::canonicalize(&joined)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    BindingError::BadRequest(format!("file not found: {name}"))
                }
                _ => BindingError::Backend(format!("cannot resolve '{name}': {e}")),
            })?;
        self.check_inside(name, &resolved)?;
        Ok(resolved)
    }

    /// `name` under the root, symlinks unresolved (what `delete` removes: a link, not its
    /// target). Check it with [`Root::existing`] first.
    pub(super) fn lexical(&self, name: &str) -> Result<PathBuf, BindingError> {
        Ok(self.path.join(components(name)?.join("/")))
    }

    /// Where to write file `name` (its parent folders are created), and its relative name.
    /// Refused when `name` or any existing parent resolves outside the root.
    pub(super) async fn for_write(&self, name: &str) -> Result<(PathBuf, String), BindingError> {
        let parts = components(name)?;
        if parts.is_empty() {
            return Err(BindingError::BadRequest(format!(
                "fileName '{name}' does not name a file"
            )));
        }
        let relative = parts.join("/");
        let target = self.path.join(&relative);
        // The deepest part of the path that exists already decides where a write would land.
        let mut existing = target.as_path();
        while tokio::fs::symlink_metadata(existing).await.is_err() {
            match existing.parent() {
                Some(parent) if parent.starts_with(&self.path) => existing = parent,
                _ => break,
            }
        }
        let resolved = tokio::fs::canonicalize(existing).await.map_err(|e| {
            BindingError::BadRequest(format!("fileName '{name}' cannot be resolved: {e}"))
        })?;
        self.check_inside(name, &resolved)?;
        if existing == target.as_path() && resolved.is_dir() {
            return Err(BindingError::BadRequest(format!(
                "fileName '{name}' is a folder, not a file"
            )));
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                BindingError::Backend(format!("cannot create the folder of '{relative}': {e}"))
            })?;
            let parent = tokio::fs::canonicalize(parent).await.map_err(|e| {
                BindingError::Backend(format!("cannot resolve the folder of '{relative}': {e}"))
            })?;
            self.check_inside(name, &parent)?;
        }
        Ok((target, relative))
    }

    fn check_inside(&self, name: &str, resolved: &Path) -> Result<(), BindingError> {
        if resolved.starts_with(&self.path) {
            Ok(())
        } else {
            Err(BindingError::BadRequest(format!(
                "fileName '{name}' resolves outside the root folder (through a symlink)"
            )))
        }
    }
}

/// The normal components of `name`; `..`, absolute paths and drive prefixes are refused.
fn components(name: &str) -> Result<Vec<&str>, BindingError> {
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(BindingError::BadRequest(format!(
                    "fileName '{name}' is outside the root folder: '..' is not allowed"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(BindingError::BadRequest(format!(
                    "fileName '{name}' is outside the root folder: absolute paths are not allowed"
                )));
            }
        }
    }
    Ok(parts)
}

/// Every non-folder entry under `dir`, as paths relative to `root` with `/` separators, sorted.
/// Symlinked folders are listed, not followed.
pub(super) fn walk(root: &Path, dir: &Path) -> Result<Vec<String>, BindingError> {
    if !dir.is_dir() {
        return Err(BindingError::BadRequest(format!(
            "'{}' is not a folder",
            relative(root, dir)
        )));
    }
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| {
            BindingError::Backend(format!("cannot list '{}': {e}", relative(root, &folder)))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| BindingError::Backend(format!("cannot list: {e}")))?;
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                _ => files.push(relative(root, &path)),
            }
        }
    }
    files.sort();
    Ok(files)
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_confined() {
        assert_eq!(components("a/b.txt").unwrap(), ["a", "b.txt"]);
        assert_eq!(components("./a//b").unwrap(), ["a", "b"]);
        assert!(components("").unwrap().is_empty());
        for bad in ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "/"] {
            assert!(
                matches!(components(bad), Err(BindingError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
