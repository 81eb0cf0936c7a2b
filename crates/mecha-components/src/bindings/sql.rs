//! What the SQL bindings (`bindings.postgresql`, `bindings.mysql`) share: the request and
//! response shape of `exec`/`query`/`close`, and the time formats of their metadata.

pub(crate) mod request;
pub(crate) mod time;
