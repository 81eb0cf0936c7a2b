//! Name resolvers and their registration table (`spec.nameResolution.component`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mecha_core::nameresolution::{NameResolver, ResolveError, ResolverInit};

pub mod dns;
pub mod sqlite;
pub mod static_list;

/// The future a resolver constructor returns.
pub type ResolverFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn NameResolver>, ResolveError>> + Send>>;

/// One row of the table: a component name (`sqlite`, `dns`, `static`) and its constructor.
pub struct ResolverRegistration {
    /// The name used in `spec.nameResolution.component`.
    pub name: &'static str,
    /// Builds the resolver.
    pub create: fn(ResolverInit) -> ResolverFuture,
}

/// Every resolver this build contains.
pub static REGISTRY: &[ResolverRegistration] = &[
    ResolverRegistration {
        name: "sqlite",
        create: |init| Box::pin(sqlite::SqliteResolver::create(init)),
    },
    ResolverRegistration {
        name: "dns",
        create: |init| Box::pin(dns::DnsResolver::create(init)),
    },
    ResolverRegistration {
        name: "kubernetes",
        create: |init| Box::pin(dns::DnsResolver::create(init)),
    },
    ResolverRegistration {
        name: "static",
        create: |init| Box::pin(static_list::StaticResolver::create(init)),
    },
];

/// Finds the resolver called `name`.
pub fn find(name: &str) -> Option<&'static ResolverRegistration> {
    REGISTRY.iter().find(|r| r.name.eq_ignore_ascii_case(name))
}
