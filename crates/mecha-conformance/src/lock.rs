//! The lock suite: what every [`LockStore`] MUST do.
//!
//! * A lock is held by one owner: `try_lock` by anyone while it is held answers `false`, even
//!   for the owner itself (locks are not re-entrant).
//! * Only the owner unlocks; others get `LockBelongsToOthers`; an absent or expired lock gives
//!   `LockDoesNotExist`.
//! * A lock expires after its expiry; then another owner can take it.
//! * Among concurrent contenders for a free lock, exactly one wins.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mecha_core::lock::{LockStore, UnlockStatus};

const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
const HOLD: Duration = Duration::from_secs(30);

/// Runs every check on a store from `factory`; panics naming the first failing check.
pub async fn run<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    macro_rules! checks {
        ($($check:ident),+ $(,)?) => {$(
            let store = factory().await;
            if tokio::time::timeout(CHECK_TIMEOUT, $check(&*store)).await.is_err() {
                panic!("lock conformance check `{}` timed out", stringify!($check));
            }
        )+};
    }
    checks!(
        lock_and_unlock,
        unlock_absent,
        expiry,
        contention,
        independent_resources
    );
}

fn resource() -> String {
    format!("conformance-lock-{}", uuid::Uuid::new_v4().simple())
}

async fn lock(s: &dyn LockStore, r: &str, owner: &str, expiry: Duration) -> bool {
    s.try_lock(r, owner, expiry)
        .await
        .unwrap_or_else(|e| panic!("lock conformance: try_lock({r}, {owner}) failed: {e}"))
}

async fn unlock(s: &dyn LockStore, r: &str, owner: &str) -> UnlockStatus {
    s.unlock(r, owner)
        .await
        .unwrap_or_else(|e| panic!("lock conformance: unlock({r}, {owner}) failed: {e}"))
}

/// One owner holds the lock until it unlocks; others cannot take or release it.
pub async fn lock_and_unlock(s: &dyn LockStore) {
    let r = resource();
    assert!(
        lock(s, &r, "a", HOLD).await,
        "check `lock_and_unlock`: a free lock must be taken"
    );
    assert!(
        !lock(s, &r, "b", HOLD).await,
        "check `lock_and_unlock`: a held lock must refuse b"
    );
    assert!(
        !lock(s, &r, "a", HOLD).await,
        "check `lock_and_unlock`: locks are not re-entrant"
    );
    assert_eq!(
        unlock(s, &r, "b").await,
        UnlockStatus::LockBelongsToOthers,
        "check `lock_and_unlock`: only the owner may unlock"
    );
    assert_eq!(
        unlock(s, &r, "a").await,
        UnlockStatus::Success,
        "check `lock_and_unlock`"
    );
    assert_eq!(
        unlock(s, &r, "a").await,
        UnlockStatus::LockDoesNotExist,
        "check `lock_and_unlock`: a released lock no longer exists"
    );
    assert!(
        lock(s, &r, "b", HOLD).await,
        "check `lock_and_unlock`: a released lock is free"
    );
    assert_eq!(
        unlock(s, &r, "b").await,
        UnlockStatus::Success,
        "check `lock_and_unlock`"
    );
}

/// Unlocking a lock nobody took gives `LockDoesNotExist`.
pub async fn unlock_absent(s: &dyn LockStore) {
    assert_eq!(
        unlock(s, &resource(), "a").await,
        UnlockStatus::LockDoesNotExist,
        "check `unlock_absent`"
    );
}

/// A lock frees itself after its expiry.
pub async fn expiry(s: &dyn LockStore) {
    let r = resource();
    assert!(
        lock(s, &r, "a", Duration::from_secs(1)).await,
        "check `expiry`: take"
    );
    assert!(
        !lock(s, &r, "b", HOLD).await,
        "check `expiry`: held before expiry"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if lock(s, &r, "b", HOLD).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "check `expiry`: the lock did not expire after 1 s"
        );
    }
    assert_eq!(
        unlock(s, &r, "a").await,
        UnlockStatus::LockBelongsToOthers,
        "check `expiry`: the old owner lost the lock"
    );
    assert_eq!(
        unlock(s, &r, "b").await,
        UnlockStatus::Success,
        "check `expiry`"
    );
}

/// Of 20 concurrent contenders for a free lock, exactly one wins.
pub async fn contention(s: &dyn LockStore) {
    let r = resource();
    let attempts = (0..20).map(|i| {
        let r = r.clone();
        async move { lock(s, &r, &format!("owner-{i}"), HOLD).await }
    });
    let wins = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(
        wins, 1,
        "check `contention`: exactly one of 20 contenders must win"
    );
}

/// Locks on different resources are independent.
pub async fn independent_resources(s: &dyn LockStore) {
    let (r1, r2) = (resource(), resource());
    assert!(
        lock(s, &r1, "a", HOLD).await,
        "check `independent_resources`"
    );
    assert!(
        lock(s, &r2, "b", HOLD).await,
        "check `independent_resources`"
    );
    assert_eq!(
        unlock(s, &r1, "a").await,
        UnlockStatus::Success,
        "check `independent_resources`"
    );
    assert_eq!(
        unlock(s, &r2, "b").await,
        UnlockStatus::Success,
        "check `independent_resources`"
    );
}
