//! What the other replicas on one PostgreSQL database announce, and this replica's
//! reaction: one listening connection (`LISTEN`) on two channels.
//!
//! - [`crate::store::RUN_REQUESTED_CHANNEL`] (a sync now, a resync or a resume): wakes an
//!   idle scheduler worker of this replica ([`AppState::wake_scheduler`]).
//! - [`crate::store::TOKENS_REVOKED_CHANNEL`] (a revoked token, a disabled or deleted
//!   tenant): this replica forgets the tokens it verified recently at once
//!   ([`AppState::forget_revoked`]), instead of after `ApiConfig::token_cache_ttl`.
//!
//! The store sends both in the transaction that made the change, so PostgreSQL delivers
//! them at its commit, never before. Notifications are not queued for a connection that
//! is down: when the listening connection is lost, the listener connects again and then,
//! since it cannot know what it missed, forgets every verified token and wakes a worker
//! (which looks for due tenants). Until it is back, the token cache's TTL and the idle
//! poll bound what a missed notification costs.
//!
//! What this module must never do: log a payload it cannot read (it logs its length
//! only), or stop listening because one notification or one connection failed.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::api::AppState;
use crate::store::{RUN_REQUESTED_CHANNEL, Revoked, TOKENS_REVOKED_CHANNEL};

/// The `application_name` of the listening connection (seen in `pg_stat_activity`),
/// unless the database URL sets one.
pub const LISTENER_APPLICATION_NAME: &str = "dealbridge-replica-events";

/// How long to wait before connecting again after the listening connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Listens on `database_url` for what other replicas announce and applies it to `state`
/// (see the module doc). Returns once listening, so that everything announced from then
/// on is seen; the task runs until aborted.
pub async fn listen_to_replicas(
    database_url: &str,
    state: AppState,
) -> Result<tokio::task::JoinHandle<()>, sqlx::Error> {
    let mut options: PgConnectOptions = database_url.parse()?;
    if options.get_application_name().is_none() {
        options = options.application_name(LISTENER_APPLICATION_NAME);
    }
    let listener = subscribe(&options).await?;
    Ok(tokio::spawn(follow(listener, options, state)))
}

async fn subscribe(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // As `PgListener::connect` does, with the options: a pool of one connection without
    // timeouts, only there to connect again.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all([RUN_REQUESTED_CHANNEL, TOKENS_REVOKED_CHANNEL])
        .await?;
    Ok(listener)
}

async fn follow(mut listener: PgListener, options: PgConnectOptions, state: AppState) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => apply(&state, notification.channel(), notification.payload()),
            // The connection was lost and is back (sqlx listens again before returning).
            Ok(None) => {
                tracing::warn!("the listening connection was lost and is back");
                caught_up(&state);
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening to other replicas failed; connecting again");
                listener = loop {
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    match subscribe(&options).await {
                        Ok(l) => break l,
                        Err(e) => tracing::warn!(error = %e, "connecting the listener failed"),
                    }
                };
                caught_up(&state);
            }
        }
    }
}

/// One notification.
fn apply(state: &AppState, channel: &str, payload: &str) {
    if channel == RUN_REQUESTED_CHANNEL {
        state.wake_scheduler();
    } else if channel == TOKENS_REVOKED_CHANNEL {
        match Revoked::from_payload(payload) {
            Some(revoked) => state.forget_revoked(&revoked),
            None => {
                tracing::warn!(
                    payload_len = payload.len(),
                    "an unreadable revocation: forgetting every verified token"
                );
                state.forget_all_tokens();
            }
        }
    }
}

/// Listening again after a gap: whatever was announced meanwhile is lost, so every
/// verified token is read from the store again and a worker looks for due tenants.
fn caught_up(state: &AppState) {
    state.forget_all_tokens();
    state.wake_scheduler();
}
