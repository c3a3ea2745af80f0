//! Who is calling: the operator (one token from the environment, for tenant
//! administration) or a tenant (API tokens issued by the service, stored hashed).
//!
//! A tenant token reads `dbt.<tenant id>.<token id>.<secret>`: the tenant id and token id
//! say where the store keeps its hash (the store looks tokens up by tenant and token id);
//! the secret is 256 random bits, base64url. The store keeps only
//! `sha256:<hex of SHA-256(domain, tenant, token id, secret)>`: a fast hash is enough for
//! a secret of that entropy. Comparisons are constant-time.
//!
//! The extractors [`Operator`] and [`TenantScope`] are the only way a handler learns its
//! caller. [`TenantScope`] also checks that the `{tenant}` of the route is the token's
//! tenant, so every tenant-scoped route checks the tenant before its handler runs.
//!
//! A token found valid is kept for a short while ([`super::token_cache`]): the secret
//! is still hashed and compared on every request, the store is read again after the
//! cache's TTL, and a revoke or disable is honoured at once in this process and, on
//! PostgreSQL, in every replica that hears the store's announcement of it.
//!
//! What this module must never do: log or return a token's secret or its hash; accept a
//! tenant token on an operator route or the operator token on a tenant route; accept a
//! revoked token or a disabled tenant's token.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::time::Instant;

use super::error::ApiError;
use super::{AppState, Shared};
use crate::store::{ApiToken, TenantId, TimestampMs};

/// The first part of every tenant token.
pub const TOKEN_PREFIX: &str = "dbt";
/// The least length of the operator token.
pub const MIN_OPERATOR_TOKEN_LEN: usize = 32;
const HASH_SCHEME: &str = "sha256:";
const TOKEN_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// Why the operator token from the environment is refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorTokenError {
    /// Too short to be a secret.
    #[error("the operator token must be at least {MIN_OPERATOR_TOKEN_LEN} characters")]
    TooShort,
    /// It looks like a tenant token, which would make the two kinds ambiguous.
    #[error("the operator token must not start with `{TOKEN_PREFIX}.`")]
    LooksLikeTenantToken,
}

/// The operator token, kept only as its SHA-256 (compared in constant time).
#[derive(Clone)]
pub struct OperatorToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

impl OperatorToken {
    /// Checks and keeps the operator token.
    pub fn new(token: &str) -> Result<Self, OperatorTokenError> {
        let token = token.trim();
        if token.len() < MIN_OPERATOR_TOKEN_LEN {
            return Err(OperatorTokenError::TooShort);
        }
        if token.starts_with(&format!("{TOKEN_PREFIX}.")) {
            return Err(OperatorTokenError::LooksLikeTenantToken);
        }
        Ok(OperatorToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the operator token (constant time in its content).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// A freshly issued tenant token: the text is shown once and never stored.
#[derive(Debug)]
pub struct IssuedToken {
    /// The whole token, for the `Authorization: Bearer` header.
    pub token: String,
    /// What the store keeps.
    pub record: ApiToken,
}

/// Issues a token for `tenant`.
pub fn issue_token(
    rng: &SystemRandom,
    tenant: &TenantId,
    label: &str,
    now_ms: TimestampMs,
) -> Result<IssuedToken, ApiError> {
    let mut id = [0u8; TOKEN_ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| ApiError::Internal("the system random generator failed".into()))?;
    let token_id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_secret(tenant.as_str(), &token_id, &secret);
    Ok(IssuedToken {
        token: format!("{TOKEN_PREFIX}.{tenant}.{token_id}.{secret}"),
        record: ApiToken {
            token_id,
            hash,
            label: label.to_string(),
            created_at_ms: now_ms,
            revoked_at_ms: None,
        },
    })
}

fn hash_secret(tenant: &str, token_id: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    for part in ["dealbridge-api-token-v1", tenant, token_id, secret] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("{HASH_SCHEME}{}", hex::encode(h.finalize()))
}

/// The parts of a tenant token.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Its public id.
    pub token_id: &'a str,
    secret: &'a str,
}

/// Splits a tenant token; `None` if it is not one.
pub fn parse_token(token: &str) -> Option<ParsedToken<'_>> {
    let mut parts = token.split('.');
    let (prefix, tenant, token_id, secret) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != TOKEN_PREFIX {
        return None;
    }
    let id_ok =
        token_id.len() == TOKEN_ID_BYTES * 2 && token_id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok || !secret_ok {
        return None;
    }
    Some(ParsedToken {
        tenant: TenantId::new(tenant).ok()?,
        token_id,
        secret,
    })
}

/// Whether the token's secret matches the stored hash (constant time).
pub fn verify_token(parsed: &ParsedToken<'_>, stored_hash: &str) -> bool {
    let want = hash_secret(parsed.tenant.as_str(), parsed.token_id, parsed.secret);
    want.len() == stored_hash.len() && bool::from(want.as_bytes().ct_eq(stored_hash.as_bytes()))
}

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing `Authorization: Bearer` token",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

/// The caller is the operator.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.shared().operator.matches(token) {
            tracing::Span::current().record("actor", "operator");
            return Ok(Operator);
        }
        if token.starts_with(&format!("{TOKEN_PREFIX}.")) {
            return Err(ApiError::Forbidden(
                "this route needs the operator token; a tenant token may not use it",
            ));
        }
        Err(ApiError::Unauthorized("invalid token"))
    }
}

/// Checks a tenant token against the store (unrevoked, matching hash, enabled tenant)
/// and keeps it in the token cache if valid.
async fn verify_in_store(shared: &Shared, parsed: &ParsedToken<'_>) -> Result<(), ApiError> {
    // Taken before the reads: a revoke or disable after them is not undone by keeping
    // this reading, and the TTL counts from before the reads.
    let generation = shared.tokens.generation();
    let read_at = Instant::now();
    let stored = shared
        .store
        .api_token(&parsed.tenant, parsed.token_id)
        .await?;
    let stored = stored
        .filter(|t| t.revoked_at_ms.is_none() && verify_token(parsed, &t.hash))
        .ok_or(ApiError::Unauthorized("invalid or revoked token"))?;
    match shared.store.tenant(&parsed.tenant).await? {
        None => return Err(ApiError::Unauthorized("invalid or revoked token")),
        Some(t) if t.disabled => return Err(ApiError::TenantDisabled(t.id.to_string())),
        Some(_) => {}
    }
    shared.tokens.remember(
        &parsed.tenant,
        parsed.token_id,
        &stored.hash,
        read_at,
        generation,
    );
    Ok(())
}

/// The caller is a tenant, authenticated by one of its API tokens, and the route's
/// `{tenant}` is that tenant.
#[derive(Debug, Clone)]
pub struct TenantScope {
    /// The tenant.
    pub tenant: TenantId,
    /// The token used.
    pub token_id: String,
}

impl FromRequestParts<AppState> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let shared = state.shared();
        let token = bearer(parts)?.to_string();
        let Some(parsed) = parse_token(&token) else {
            if shared.operator.matches(&token) {
                return Err(ApiError::Forbidden(
                    "this route needs a tenant token; the operator token may not use it",
                ));
            }
            return Err(ApiError::Unauthorized("invalid token"));
        };
        let kept = shared
            .tokens
            .check(&parsed.tenant, parsed.token_id, Instant::now(), |hash| {
                verify_token(&parsed, hash)
            });
        match kept {
            Some(true) => {}
            Some(false) => return Err(ApiError::Unauthorized("invalid or revoked token")),
            None => verify_in_store(shared, &parsed).await?,
        }
        // The route's tenant must be the token's; checked before any handler runs.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Internal(format!("path params: {e}")))?;
        let route_tenant = params
            .iter()
            .find(|(k, _)| *k == "tenant")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| ApiError::Internal("tenant route without {tenant}".into()))?;
        if route_tenant != parsed.tenant.as_str() {
            return Err(ApiError::Forbidden("this token belongs to another tenant"));
        }
        let span = tracing::Span::current();
        span.record("tenant_id", parsed.tenant.as_str());
        span.record("actor", "tenant");
        Ok(TenantScope {
            token_id: parsed.token_id.to_string(),
            tenant: parsed.tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_verify_and_differ() {
        let rng = SystemRandom::new();
        let t = TenantId::new("acme-1_x").unwrap();
        let a = issue_token(&rng, &t, "first", 5).unwrap();
        let b = issue_token(&rng, &t, "second", 5).unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.record.token_id, b.record.token_id);
        assert!(a.record.hash.starts_with("sha256:"));
        assert!(!a.record.hash.contains(a.token.rsplit('.').next().unwrap()));
        let p = parse_token(&a.token).unwrap();
        assert_eq!(p.tenant, t);
        assert_eq!(p.token_id, a.record.token_id);
        assert!(verify_token(&p, &a.record.hash));
        assert!(!verify_token(&p, &b.record.hash));
    }

    #[test]
    fn a_token_moved_to_another_tenant_or_id_fails() {
        let rng = SystemRandom::new();
        let t = TenantId::new("a").unwrap();
        let issued = issue_token(&rng, &t, "l", 0).unwrap();
        let secret = issued.token.rsplit('.').next().unwrap();
        let forged = format!("dbt.b.{}.{secret}", issued.record.token_id);
        let p = parse_token(&forged).unwrap();
        assert!(!verify_token(&p, &issued.record.hash));
    }

    #[test]
    fn malformed_tokens_are_not_tokens() {
        let good_secret = "A".repeat(43);
        for bad in [
            "",
            "dbt",
            "dbt.a.0123456789abcdef",
            &format!("xyz.a.0123456789abcdef.{good_secret}"),
            &format!("dbt.a b.0123456789abcdef.{good_secret}"),
            &format!("dbt.a.0123456789abcdeg.{good_secret}"),
            &format!("dbt.a.0123456789abcdef.{good_secret}.x"),
            "dbt.a.0123456789abcdef.short",
        ] {
            assert!(parse_token(bad).is_none(), "{bad:?}");
        }
        assert!(parse_token(&format!("dbt.a.0123456789abcdef.{good_secret}")).is_some());
    }

    #[test]
    fn operator_token_rules() {
        assert!(matches!(
            OperatorToken::new("short"),
            Err(OperatorTokenError::TooShort)
        ));
        assert!(matches!(
            OperatorToken::new(&format!("dbt.{}", "x".repeat(40))),
            Err(OperatorTokenError::LooksLikeTenantToken)
        ));
        let op = OperatorToken::new(&"s".repeat(40)).unwrap();
        assert!(op.matches(&"s".repeat(40)));
        assert!(!op.matches(&"s".repeat(39)));
        assert!(!format!("{op:?}").contains("sss"));
    }
}
