//! Secret stores and their registration table.

pub mod local_env;
pub mod local_file;

use mecha_core::secretstores::SecretStore;

use crate::register;
use crate::registry::Registration;

/// Every secret store this build contains.
pub static REGISTRY: &[Registration<dyn SecretStore>] = &[
    register!("secretstores.local.env", "v1", local_env::EnvSecretStore),
    register!("secretstores.local.file", "v1", local_file::FileSecretStore),
];
