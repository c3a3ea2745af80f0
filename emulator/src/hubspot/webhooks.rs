//! HubSpot webhooks of the emulated portal: the app's webhook settings and
//! event subscriptions (what the developer API of `developer.rs` reads and
//! writes), the events CRM writes produce for the active subscriptions, their
//! bounded queue, and the delivery counters. Delivery itself is `delivery.rs`.
//!
//! Events are built by a [`Recorder`] inside the same store write as the
//! change they describe and queued before the store lock is released, so the
//! order of events (and of their `eventId`s) is the order of the changes.
//! When no subscription is active or no target URL is set, a recorder is
//! empty and costs one atomic load per request. Changes made through the
//! control plane (seed, snapshot load, reset) make no events.
//!
//! Settings and subscriptions belong to the app, not to the portal's data: a
//! reset, re-seed or snapshot load keeps them and discards the queued events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::schema::ObjectType;
use super::store::Store;

/// The id of the app the private-app token belongs to (the `appId` of its events).
pub const APP_ID: u64 = 3_184_027;
/// The portal (hub) id of the emulated account.
pub const PORTAL_ID: u64 = 48_213_675;
/// The HubSpot user behind [`super::HubSpot::user_token`] (the first seeded
/// owner's `userId`), and the user who created the private app.
pub const UI_USER_ID: u64 = 9_100_001;
/// The developer account's API key, sent as `?hapikey=` to the webhooks API.
pub const DEVELOPER_API_KEY: &str = "eu1-4b7e-d2c9-4f18-a6e3-58b0c1f27d94";
/// The app's client secret, the key of the `X-HubSpot-Signature-v3` HMAC.
pub const CLIENT_SECRET: &str = "6f0d2b8e-93a1-4c57-b7e4-1d9c3a5f8e20";
/// Most events kept waiting by default; beyond it the oldest are dropped and
/// counted as failed (see [`DeliveryOptions::max_queued`]).
pub const MAX_QUEUED_EVENTS: usize = 1_000_000;
/// Most events in one delivery request.
pub const MAX_EVENTS_PER_REQUEST: usize = 100;

/// Who made a change through the CRM API, by the token it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The private app (`changeSource: INTEGRATION`, `sourceId: <appId>`).
    App,
    /// A person in HubSpot's UI (`changeSource: CRM_UI`, `sourceId: userId:<n>`).
    User,
}

impl Actor {
    /// `changeSource` of the events this actor's changes make.
    pub fn change_source(self) -> &'static str {
        match self {
            Actor::App => "INTEGRATION",
            Actor::User => "CRM_UI",
        }
    }

    /// `sourceId` of the events this actor's changes make.
    pub fn source_id(self) -> String {
        match self {
            Actor::App => APP_ID.to_string(),
            Actor::User => format!("userId:{UI_USER_ID}"),
        }
    }
}

/// `throttling` of the webhook settings. Current HubSpot documents only
/// `maxConcurrentRequests`; the older `period` (`SECONDLY`, `ROLLING_MINUTE`)
/// is kept when a client sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub max_concurrent_requests: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// The app's webhook settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub target_url: String,
    pub throttling: Throttling,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a subscription listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    Creation,
    Deletion,
    PropertyChange,
    /// Accepted and stored like HubSpot does, but the emulator never fires them.
    AssociationChange,
    Restore,
    Merge,
    PrivacyDeletion,
}

impl EventAction {
    fn name(self) -> &'static str {
        match self {
            EventAction::Creation => "creation",
            EventAction::Deletion => "deletion",
            EventAction::PropertyChange => "propertyChange",
            EventAction::AssociationChange => "associationChange",
            EventAction::Restore => "restore",
            EventAction::Merge => "merge",
            EventAction::PrivacyDeletion => "privacyDeletion",
        }
    }
}

/// An event type of the webhooks API, e.g. `deal.propertyChange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventType {
    pub object: ObjectType,
    pub action: EventAction,
}

impl EventType {
    /// Parses one of the documented event types of contacts, companies and deals.
    pub fn parse(s: &str) -> Option<EventType> {
        let (object, action) = s.split_once('.')?;
        let object = match object {
            "contact" => ObjectType::Contacts,
            "company" => ObjectType::Companies,
            "deal" => ObjectType::Deals,
            _ => return None,
        };
        let action = match action {
            "creation" => EventAction::Creation,
            "deletion" => EventAction::Deletion,
            "propertyChange" => EventAction::PropertyChange,
            "associationChange" => EventAction::AssociationChange,
            "restore" => EventAction::Restore,
            "merge" => EventAction::Merge,
            "privacyDeletion" if object == ObjectType::Contacts => EventAction::PrivacyDeletion,
            _ => return None,
        };
        Some(EventType { object, action })
    }

    /// The wire name (`contact.creation`).
    pub fn name(self) -> String {
        format!("{}.{}", self.object.singular(), self.action.name())
    }
}

/// One event subscription of the app.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub id: u64,
    pub event_type: EventType,
    pub property_name: Option<String>,
    pub active: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What happened to the object of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    Creation,
    Deletion,
    PropertyChange { name: Arc<str>, value: String },
}

/// One queued event (its `attemptNumber` belongs to the request that carries it).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: u64,
    pub subscription_id: u64,
    pub object: ObjectType,
    pub object_id: u64,
    pub occurred_at: i64,
    pub kind: EventKind,
    pub actor: Actor,
}

/// Delivery settings of the emulator (`PUT /__emulator/webhooks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOptions {
    /// Wait before the first retry of a failed request; doubles on each retry.
    pub retry_initial_ms: u64,
    /// Retries of a failed request before its events are dropped as failed (an
    /// answer of 400, 401, 403, 404 or 405 is never retried).
    pub max_retries: u32,
    /// Holds deliveries (events keep queuing) while true.
    pub paused: bool,
    /// How long one delivery request may take.
    pub timeout_ms: u64,
    /// Most events kept waiting; beyond it the oldest are dropped as failed.
    pub max_queued: usize,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            retry_initial_ms: 1_000,
            max_retries: 10,
            paused: false,
            timeout_ms: 5_000,
            max_queued: MAX_QUEUED_EVENTS,
        }
    }
}

/// Delivery counters (`GET /__emulator/webhooks`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStats {
    /// Events waiting for a request.
    pub queued: u64,
    /// Events in requests not yet answered (or waiting for their retry).
    pub in_flight: u64,
    /// Events a 2xx answer acknowledged.
    pub delivered: u64,
    /// Events dropped after their last retry, or at once when the target answered
    /// 400, 401, 403, 404 or 405 (never retried), or pushed out of a full queue.
    pub failed: u64,
    /// Requests sent again after a failure.
    pub retries: u64,
    /// Events thrown away unsent by a reset, re-seed, snapshot load or settings deletion.
    pub discarded: u64,
    /// The last delivery failure, if any.
    pub last_error: Option<String>,
}

/// The mutable webhook state (one lock; never held across an `.await`).
pub(super) struct State {
    pub settings: Option<Settings>,
    pub subscriptions: BTreeMap<u64, Subscription>,
    next_subscription_id: u64,
    pub queue: VecDeque<Event>,
    next_event_id: u64,
    pub options: DeliveryOptions,
    pub stats: WebhookStats,
    /// Bumped whenever queued events are discarded: requests of an older
    /// generation are not retried.
    pub generation: u64,
    pub worker_running: bool,
}

/// The state shared with the delivery task.
pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Settings exist and at least one subscription is active.
    recording: AtomicBool,
    /// Wakes the delivery task (new events, new settings, unpaused, closing).
    pub wake: Notify,
    /// Wakes [`Webhooks::wait_idle`] callers.
    pub idle: Notify,
    pub closed: AtomicBool,
}

impl Shared {
    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.queue.is_empty() && st.stats.in_flight == 0
    }
}

/// The webhooks of one portal. Dropping it stops its delivery task.
pub struct Webhooks {
    pub(super) shared: Arc<Shared>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    settings: None,
                    subscriptions: BTreeMap::new(),
                    next_subscription_id: 1_784_300,
                    queue: VecDeque::new(),
                    next_event_id: 1_000,
                    options: DeliveryOptions::default(),
                    stats: WebhookStats::default(),
                    generation: 0,
                    worker_running: false,
                }),
                recording: AtomicBool::new(false),
                wake: Notify::new(),
                idle: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

/// Why a subscription could not be created.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("A subscription for {0} already exists (id {1})")]
    Duplicate(String, u64),
}

impl Webhooks {
    fn refresh_recording(&self, st: &State) {
        let on = st.settings.is_some() && st.subscriptions.values().any(|s| s.active);
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// The current settings.
    pub fn settings(&self) -> Option<Settings> {
        self.shared.state.lock().settings.clone()
    }

    /// Creates or replaces the settings (keeps `createdAt`).
    pub fn put_settings(&self, target_url: String, throttling: Throttling, now: i64) -> Settings {
        let mut st = self.shared.state.lock();
        let created_ms = st.settings.as_ref().map_or(now, |s| s.created_ms);
        let settings = Settings {
            target_url,
            throttling,
            created_ms,
            updated_ms: now,
        };
        st.settings = Some(settings.clone());
        self.refresh_recording(&st);
        drop(st);
        self.shared.wake.notify_one();
        settings
    }

    /// Deletes the settings; queued events have nowhere to go and are discarded.
    /// Returns whether there were settings.
    pub fn delete_settings(&self) -> bool {
        let mut st = self.shared.state.lock();
        let had = st.settings.take().is_some();
        Self::discard(&mut st);
        self.refresh_recording(&st);
        drop(st);
        self.shared.idle.notify_waiters();
        had
    }

    /// Every subscription, by id.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.shared
            .state
            .lock()
            .subscriptions
            .values()
            .cloned()
            .collect()
    }

    /// One subscription.
    pub fn subscription(&self, id: u64) -> Option<Subscription> {
        self.shared.state.lock().subscriptions.get(&id).cloned()
    }

    /// Creates a subscription; the same event type and property twice is refused.
    pub fn create_subscription(
        &self,
        event_type: EventType,
        property_name: Option<String>,
        active: bool,
        now: i64,
    ) -> Result<Subscription, SubscriptionError> {
        let mut st = self.shared.state.lock();
        if let Some(existing) = st
            .subscriptions
            .values()
            .find(|s| s.event_type == event_type && s.property_name == property_name)
        {
            let what = match &property_name {
                Some(p) => format!("{} of {p}", event_type.name()),
                None => event_type.name(),
            };
            return Err(SubscriptionError::Duplicate(what, existing.id));
        }
        st.next_subscription_id += 1;
        let sub = Subscription {
            id: st.next_subscription_id,
            event_type,
            property_name,
            active,
            created_ms: now,
            updated_ms: now,
        };
        st.subscriptions.insert(sub.id, sub.clone());
        self.refresh_recording(&st);
        Ok(sub)
    }

    /// Sets a subscription active or paused; `None` if there is no such subscription.
    pub fn set_active(&self, id: u64, active: bool, now: i64) -> Option<Subscription> {
        let mut st = self.shared.state.lock();
        let sub = st.subscriptions.get_mut(&id)?;
        sub.active = active;
        sub.updated_ms = now;
        let out = sub.clone();
        self.refresh_recording(&st);
        Some(out)
    }

    /// Deletes a subscription; whether it existed.
    pub fn delete_subscription(&self, id: u64) -> bool {
        let mut st = self.shared.state.lock();
        let had = st.subscriptions.remove(&id).is_some();
        self.refresh_recording(&st);
        had
    }

    /// The delivery settings.
    pub fn options(&self) -> DeliveryOptions {
        self.shared.state.lock().options.clone()
    }

    /// Replaces the delivery settings (unpausing wakes the delivery task).
    pub fn set_options(&self, options: DeliveryOptions) {
        self.shared.state.lock().options = options;
        self.shared.wake.notify_one();
    }

    /// The delivery counters.
    pub fn stats(&self) -> WebhookStats {
        let st = self.shared.state.lock();
        let mut stats = st.stats.clone();
        stats.queued = st.queue.len() as u64;
        stats
    }

    fn discard(st: &mut State) {
        st.stats.discarded += st.queue.len() as u64;
        st.queue.clear();
        st.generation += 1;
    }

    /// Throws queued events away (reset, re-seed, snapshot load); settings and
    /// subscriptions stay.
    pub fn discard_queued(&self) {
        Self::discard(&mut self.shared.state.lock());
        self.shared.idle.notify_waiters();
    }

    /// A recorder for CRM writes to `object` by `actor`: empty (free) unless
    /// settings exist and some subscription is active.
    pub fn recorder(&self, object: ObjectType, actor: Actor) -> Recorder {
        if !self.shared.recording.load(Ordering::Relaxed) {
            return Recorder { tap: None };
        }
        let st = self.shared.state.lock();
        let mut tap = Tap {
            object,
            actor,
            creation: None,
            deletion: None,
            properties: Vec::new(),
            pending: Vec::new(),
        };
        for sub in st.subscriptions.values() {
            if !sub.active || sub.event_type.object != object {
                continue;
            }
            match (sub.event_type.action, &sub.property_name) {
                (EventAction::Creation, _) => tap.creation = Some(sub.id),
                (EventAction::Deletion, _) => tap.deletion = Some(sub.id),
                (EventAction::PropertyChange, Some(p)) => {
                    tap.properties.push((sub.id, Arc::from(p.as_str())));
                }
                _ => {}
            }
        }
        let useful = tap.creation.is_some() || tap.deletion.is_some() || !tap.properties.is_empty();
        Recorder {
            tap: useful.then(|| Box::new(tap)),
        }
    }

    /// Queues a recorder's events (call it while the store is still
    /// write-locked, so events keep the order of the changes). Starts the
    /// delivery task when needed.
    pub fn queue(&self, recorder: Recorder) {
        let Some(tap) = recorder.tap else {
            return;
        };
        if tap.pending.is_empty() {
            return;
        }
        let mut st = self.shared.state.lock();
        if st.settings.is_none() {
            return;
        }
        let max_queued = st.options.max_queued.max(1);
        for p in tap.pending {
            if st.queue.len() >= max_queued {
                st.queue.pop_front();
                st.stats.failed += 1;
                st.stats.last_error = Some(format!(
                    "the webhook queue is full ({max_queued} events): the oldest event was dropped"
                ));
            }
            st.next_event_id += 1;
            let event = Event {
                event_id: st.next_event_id,
                subscription_id: p.subscription_id,
                object: tap.object,
                object_id: p.object_id,
                occurred_at: p.occurred_at,
                kind: p.kind,
                actor: tap.actor,
            };
            st.queue.push_back(event);
        }
        let start = !st.worker_running;
        if start {
            st.worker_running = super::delivery::spawn(&self.shared);
        }
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Waits until nothing is queued or in flight; `false` if `timeout` passed first.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        {
            let mut st = self.shared.state.lock();
            if !st.worker_running && !st.queue.is_empty() {
                st.worker_running = super::delivery::spawn(&self.shared);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.is_idle() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.is_idle();
            }
        }
    }
}

/// An event found during a write, before it has an id.
struct PendingEvent {
    subscription_id: u64,
    object_id: u64,
    occurred_at: i64,
    kind: EventKind,
}

/// The active subscriptions of one object type, and the events found so far.
struct Tap {
    object: ObjectType,
    actor: Actor,
    creation: Option<u64>,
    deletion: Option<u64>,
    properties: Vec<(u64, Arc<str>)>,
    pending: Vec<PendingEvent>,
}

/// The subscribed properties' values of a record before an update.
pub struct Before(Option<Vec<Option<String>>>);

/// Collects the events of one request's CRM writes (see [`Webhooks::recorder`]).
pub struct Recorder {
    tap: Option<Box<Tap>>,
}

impl Recorder {
    /// A recorder that records nothing.
    pub fn off() -> Recorder {
        Recorder { tap: None }
    }

    /// The subscribed properties of record `id` before it changes.
    pub fn before(&self, store: &Store, id: u64) -> Before {
        let Some(tap) = &self.tap else {
            return Before(None);
        };
        if tap.properties.is_empty() {
            return Before(None);
        }
        let record = store.table(tap.object).records().get(&id);
        Before(Some(
            tap.properties
                .iter()
                .map(|(_, name)| record.and_then(|r| r.props.get(&**name).cloned()))
                .collect(),
        ))
    }

    /// Record `id` was created: `creation`, and a `propertyChange` for every
    /// subscribed property it has a value for.
    pub fn created(&mut self, store: &Store, id: u64) {
        let Some(tap) = &mut self.tap else {
            return;
        };
        let Some(record) = store.table(tap.object).records().get(&id) else {
            return;
        };
        let at = record.updated_ms;
        if let Some(sub) = tap.creation {
            tap.pending.push(PendingEvent {
                subscription_id: sub,
                object_id: id,
                occurred_at: at,
                kind: EventKind::Creation,
            });
        }
        for (sub, name) in &tap.properties {
            if let Some(value) = record.props.get(&**name).filter(|v| !v.is_empty()) {
                tap.pending.push(PendingEvent {
                    subscription_id: *sub,
                    object_id: id,
                    occurred_at: at,
                    kind: EventKind::PropertyChange {
                        name: name.clone(),
                        value: value.clone(),
                    },
                });
            }
        }
    }

    /// Record `id` was updated: a `propertyChange` for every subscribed
    /// property whose value differs from `before`.
    pub fn updated(&mut self, store: &Store, id: u64, before: Before) {
        let (Some(tap), Before(Some(old))) = (&mut self.tap, before) else {
            return;
        };
        let Some(record) = store.table(tap.object).records().get(&id) else {
            return;
        };
        for ((sub, name), old) in tap.properties.iter().zip(old) {
            let new = record.props.get(&**name);
            if new == old.as_ref() {
                continue;
            }
            tap.pending.push(PendingEvent {
                subscription_id: *sub,
                object_id: id,
                occurred_at: record.updated_ms,
                kind: EventKind::PropertyChange {
                    name: name.clone(),
                    value: new.cloned().unwrap_or_default(),
                },
            });
        }
    }

    /// Record `id` was archived at `at`.
    pub fn archived(&mut self, id: u64, at: i64) {
        let Some(tap) = &mut self.tap else {
            return;
        };
        if let Some(sub) = tap.deletion {
            tap.pending.push(PendingEvent {
                subscription_id: sub,
                object_id: id,
                occurred_at: at,
                kind: EventKind::Deletion,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_parse_only_documented_crm_types() {
        let t = EventType::parse("deal.propertyChange").unwrap();
        assert_eq!(t.object, ObjectType::Deals);
        assert_eq!(t.name(), "deal.propertyChange");
        assert!(EventType::parse("contact.privacyDeletion").is_some());
        assert!(EventType::parse("deal.privacyDeletion").is_none());
        assert!(EventType::parse("ticket.creation").is_none());
        assert!(EventType::parse("deal.created").is_none());
        assert!(EventType::parse("deal").is_none());
    }

    #[test]
    fn recorder_is_empty_without_settings() {
        let hooks = Webhooks::default();
        hooks
            .create_subscription(EventType::parse("deal.creation").unwrap(), None, true, 1)
            .unwrap();
        assert!(hooks.recorder(ObjectType::Deals, Actor::App).tap.is_none());
        hooks.put_settings(
            "http://127.0.0.1:9/hook".into(),
            Throttling {
                max_concurrent_requests: 10,
                period: None,
            },
            2,
        );
        assert!(hooks.recorder(ObjectType::Deals, Actor::App).tap.is_some());
        assert!(
            hooks
                .recorder(ObjectType::Contacts, Actor::App)
                .tap
                .is_none()
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_events_as_failed() {
        let hooks = Webhooks::default();
        hooks
            .create_subscription(EventType::parse("deal.deletion").unwrap(), None, true, 1)
            .unwrap();
        hooks.put_settings(
            "http://127.0.0.1:9/hook".into(),
            Throttling {
                max_concurrent_requests: 1,
                period: None,
            },
            2,
        );
        hooks.set_options(DeliveryOptions {
            paused: true,
            max_queued: 3,
            ..DeliveryOptions::default()
        });
        let mut recorder = hooks.recorder(ObjectType::Deals, Actor::App);
        for id in 1..=5 {
            recorder.archived(id, 100 + id as i64);
        }
        hooks.queue(recorder);
        let stats = hooks.stats();
        assert_eq!((stats.queued, stats.failed), (3, 2));
        let st = hooks.shared.state.lock();
        let kept: Vec<u64> = st.queue.iter().map(|e| e.object_id).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        let ids: Vec<u64> = st.queue.iter().map(|e| e.event_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn duplicates_are_refused() {
        let hooks = Webhooks::default();
        let t = EventType::parse("contact.propertyChange").unwrap();
        hooks
            .create_subscription(t, Some("email".into()), true, 1)
            .unwrap();
        assert!(matches!(
            hooks.create_subscription(t, Some("email".into()), false, 2),
            Err(SubscriptionError::Duplicate(..))
        ));
        assert!(
            hooks
                .create_subscription(t, Some("firstname".into()), true, 3)
                .is_ok()
        );
    }
}
