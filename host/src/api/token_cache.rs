//! Tenant tokens this process found valid recently, so that a tenant route does not read
//! the token and its tenant from the store on every request.
//!
//! What is kept, per (tenant, token id): the token's stored hash (never its secret) and
//! when the store was read, for a token that was unrevoked and whose tenant was enabled
//! at that read. A request with a kept token still hashes its secret and compares it
//! with the kept hash in constant time ([`super::auth::verify_token`]); only the two
//! store reads are saved.
//!
//! Staleness, the rule this module keeps:
//! - In this process a revoke or a disable is honoured at once: the API forgets the
//!   token ([`TokenCache::forget_token`]) or all of the tenant's tokens
//!   ([`TokenCache::forget_tenant`]) after the store has it. A request that read the
//!   store before that and finishes after it does not put its (now stale) reading back:
//!   every forget moves a generation on, and a reading taken under an older generation
//!   is not kept.
//! - A revoke or a disable made by another replica on PostgreSQL is announced with
//!   `NOTIFY`, and this replica forgets the token or tenant as soon as it hears it
//!   ([`crate::service::listen_to_replicas`]); when its listening connection was lost,
//!   it forgets everything ([`TokenCache::forget_all`]) once it listens again.
//! - Whatever the announcements missed is bounded by the TTL (`ApiConfig::token_cache_ttl`,
//!   5 s by default): an entry older than it is read again from the store. A TTL of zero
//!   keeps nothing.
//!
//! At most `capacity` tokens are kept; the least recently used is dropped first.

use std::time::{Duration, Instant};

use hashlink::LruCache;
use parking_lot::Mutex;

use crate::store::TenantId;

/// A token's stored hash as read from the store, and when.
struct Kept {
    hash: String,
    read_at: Instant,
}

struct Inner {
    entries: LruCache<(TenantId, String), Kept>,
    /// Moves on at every forget; a reading taken under an older one is not kept.
    generation: u64,
}

/// Recently verified tenant tokens (see the module doc for the staleness rule).
pub struct TokenCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl TokenCache {
    /// An empty cache of at most `capacity` tokens (at least one), each trusted for
    /// `ttl` after its store read.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TokenCache {
            ttl,
            inner: Mutex::new(Inner {
                entries: LruCache::new(capacity.max(1)),
                generation: 0,
            }),
        }
    }

    /// Checks a presented token against its kept hash with `verify` (which must compare
    /// in constant time): `Some(result)` if the token is kept and was read less than the
    /// TTL before `now`, `None` if the store must be asked.
    pub fn check(
        &self,
        tenant: &TenantId,
        token_id: &str,
        now: Instant,
        verify: impl FnOnce(&str) -> bool,
    ) -> Option<bool> {
        let key = (tenant.clone(), token_id.to_string());
        let mut inner = self.inner.lock();
        let kept = inner.entries.get(&key)?;
        if now.saturating_duration_since(kept.read_at) >= self.ttl {
            inner.entries.remove(&key);
            return None;
        }
        Some(verify(&kept.hash))
    }

    /// The current generation: take it before reading the store, and pass it to
    /// [`TokenCache::remember`].
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Keeps a token the store showed valid at `read_at` (taken before the read), unless
    /// something was forgotten since `generation` was taken or the TTL is zero.
    pub fn remember(
        &self,
        tenant: &TenantId,
        token_id: &str,
        hash: &str,
        read_at: Instant,
        generation: u64,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        inner.entries.insert(
            (tenant.clone(), token_id.to_string()),
            Kept {
                hash: hash.to_string(),
                read_at,
            },
        );
    }

    /// Forgets one token (call after the store revoked it).
    pub fn forget_token(&self, tenant: &TenantId, token_id: &str) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner
            .entries
            .remove(&(tenant.clone(), token_id.to_string()));
    }

    /// Forgets every token of a tenant (call after the store disabled it).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.entries.retain(|(t, _), _| t != tenant);
    }

    /// Forgets every token (call when revocations may have been missed).
    pub fn forget_all(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    /// How many tokens are kept.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether no token is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).unwrap()
    }

    fn is(hash: &'static str) -> impl FnOnce(&str) -> bool {
        move |kept| kept == hash
    }

    #[test]
    fn a_kept_token_is_checked_against_its_hash_until_the_ttl_passes() {
        let cache = TokenCache::new(8, TTL);
        let (a, t0) = (tenant("a"), Instant::now());
        assert_eq!(
            cache.check(&a, "id1", t0, is("h1")),
            None,
            "nothing kept yet"
        );
        cache.remember(&a, "id1", "h1", t0, cache.generation());
        assert_eq!(cache.check(&a, "id1", t0, is("h1")), Some(true));
        assert_eq!(cache.check(&a, "id1", t0, is("other")), Some(false));
        assert_eq!(cache.check(&tenant("b"), "id1", t0, is("h1")), None);
        let almost = t0 + TTL - Duration::from_millis(1);
        assert_eq!(cache.check(&a, "id1", almost, is("h1")), Some(true));
        // At the TTL the store is asked again (what bounds another replica's revoke).
        assert_eq!(cache.check(&a, "id1", t0 + TTL, is("h1")), None);
        assert!(cache.is_empty(), "the stale entry is dropped");
    }

    #[test]
    fn forgetting_a_token_or_a_tenant_takes_effect_at_once() {
        let cache = TokenCache::new(8, TTL);
        let (a, b, now) = (tenant("a"), tenant("b"), Instant::now());
        for (t, id) in [(&a, "1"), (&a, "2"), (&b, "1")] {
            cache.remember(t, id, "h", now, cache.generation());
        }
        cache.forget_token(&a, "1");
        assert_eq!(cache.check(&a, "1", now, is("h")), None);
        assert_eq!(cache.check(&a, "2", now, is("h")), Some(true));
        cache.forget_tenant(&a);
        assert_eq!(cache.check(&a, "2", now, is("h")), None);
        assert_eq!(cache.check(&b, "1", now, is("h")), Some(true));
    }

    #[test]
    fn a_reading_older_than_a_forget_is_not_kept() {
        let cache = TokenCache::new(8, TTL);
        let (a, now) = (tenant("a"), Instant::now());
        let before = cache.generation();
        // The store is read, then the tenant is disabled, then the reading comes back.
        cache.forget_tenant(&a);
        cache.remember(&a, "1", "h", now, before);
        assert_eq!(cache.check(&a, "1", now, is("h")), None);
    }

    #[test]
    fn the_least_recently_used_token_is_dropped_and_a_zero_ttl_keeps_nothing() {
        let cache = TokenCache::new(2, TTL);
        let (a, now) = (tenant("a"), Instant::now());
        cache.remember(&a, "1", "h", now, cache.generation());
        cache.remember(&a, "2", "h", now, cache.generation());
        assert_eq!(cache.check(&a, "1", now, is("h")), Some(true));
        cache.remember(&a, "3", "h", now, cache.generation());
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.check(&a, "2", now, is("h")),
            None,
            "2 was the least used"
        );
        assert_eq!(cache.check(&a, "1", now, is("h")), Some(true));

        let off = TokenCache::new(2, Duration::ZERO);
        off.remember(&a, "1", "h", now, off.generation());
        assert!(off.is_empty());
    }
}
