//! One behaviour suite for the store, run against both backends.
//!
//! Every behaviour is a plain async fn over `Arc<dyn Store>`; `store_suite!` generates
//! one `#[tokio::test]` per behaviour per backend. SQLite tests get a fresh temporary
//! file; PostgreSQL tests (when `DATABASE_URL` is set) get a fresh schema, dropped
//! afterwards, so they run in parallel. Without `DATABASE_URL` each PostgreSQL test
//! says so loudly on stderr and returns.

mod pg_schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dealbridge::store::{
    self, Backend, Checkpoint, CommitBatch, CommittedRecord, ComponentSource, Direction,
    EncryptedConnection, ErrorCategory, EventKind, Lease, LinkState, NewHubSpotChange,
    NewRecordEvent, NewSyncError, ObjectPair, Page, PendingHubSpotChange, PostgresStore, RecordKey,
    ResyncRequest, RunCounters, RunStatus, RunTrigger, SettledHubSpotChange, Side, Snapshot,
    SqliteStore, Store, StoreConfig, StoreError, Stream, TenantId,
};
use pg_schema::FreshSchema;
use serde_json::{Value, json};
use tokio::sync::Barrier;

const PAIR: ObjectPair = ObjectPair::OpportunityDeal;

/// A store under test, and how to open it again (to check re-opening).
struct Harness {
    store: Arc<dyn Store>,
    backend: BackendHandle,
}

enum BackendHandle {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres(Box<FreshSchema>),
}

impl Harness {
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backend {
            BackendHandle::Sqlite { url, .. } => store::open(url).await.expect("reopen sqlite"),
            BackendHandle::Postgres(schema) => Arc::new(
                PostgresStore::connect_with(schema.options.clone(), StoreConfig::default())
                    .await
                    .expect("reopen postgres"),
            ),
        }
    }
}

async fn sqlite_harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let store = store::open(&url).await.expect("open sqlite");
    assert_eq!(store.backend(), Backend::Sqlite);
    Harness {
        store,
        backend: BackendHandle::Sqlite { url, _dir: dir },
    }
}

async fn postgres_harness(test: &str) -> Option<Harness> {
    let schema = FreshSchema::create("store", test, "the PostgreSQL store test").await?;
    let pg = PostgresStore::connect_with(schema.options.clone(), StoreConfig::default())
        .await
        .expect("open postgres");
    let store: Arc<dyn Store> = Arc::new(pg);
    assert_eq!(store.backend(), Backend::Postgres);
    Some(Harness {
        store,
        backend: BackendHandle::Postgres(Box::new(schema)),
    })
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let h = super::sqlite_harness().await;
                    super::$name(&h).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(h) = super::postgres_harness(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&h).await;
                }
            )*
        }
    };
}

store_suite!(
    link_uniqueness_and_idempotent_commit,
    bulk_lookups_span_chunks,
    links_page_in_salesforce_id_order,
    link_conflict_writes_nothing,
    snapshot_round_trip,
    checkpoints_are_monotonic,
    errors_upsert_retry_resolve_and_health,
    commit_resolves_errors_of_committed_records,
    run_history_and_counters,
    record_history_is_deduplicated,
    lease_exclusive_under_concurrency,
    next_due_tenant_exclusive_under_concurrency,
    next_due_tenant_respects_schedule_and_disabled,
    lease_expiry_takeover_and_fencing,
    tenant_isolation,
    plugin_versions_activation_rollback,
    tenants_tokens_connections,
    list_tenants_pages_by_id,
    migrations_idempotent_on_reopen,
    sync_schedule_pause_request_and_backoff,
    pending_resyncs_are_fenced_and_tenant_scoped,
    reseal_replaces_only_the_connection_that_was_read,
    revokes_disables_and_deletes_are_announced,
    a_tenant_asking_again_and_again_goes_after_those_due_longer,
    hubspot_changes_are_idempotent_grouped_and_tenant_scoped,
    hubspot_changes_the_store_cannot_keep_are_left_out_not_the_batch,
    hubspot_changes_that_share_an_event_id_are_all_kept,
    hubspot_changes_settle_with_the_batch_up_to_their_sequence,
    hubspot_changes_settle_alone_only_under_the_current_lease,
);

// ---------------------------------------------------------------- helpers

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn tenant_with_lease(store: &dyn Store, name: &str) -> (TenantId, Lease) {
    let t = tid(name);
    store.create_tenant(&t, name, 0).await.unwrap();
    let lease = store
        .try_acquire_lease(&t, "replica-a", 60_000, 0)
        .await
        .unwrap()
        .expect("fresh tenant is free");
    (t, lease)
}

fn record(sf: &str, hs: &str) -> CommittedRecord {
    CommittedRecord {
        salesforce_id: sf.into(),
        hubspot_id: hs.into(),
        state: LinkState::Active,
        snapshot: None,
        events: vec![],
    }
}

fn event(sf: &str, hs: &str, kind: EventKind, version: &str, run: Option<i64>) -> NewRecordEvent {
    NewRecordEvent {
        object_pair: PAIR,
        salesforce_id: Some(sf.into()),
        hubspot_id: Some(hs.into()),
        kind,
        direction: Direction::SalesforceToHubSpot,
        source_version: version.into(),
        run_id: run,
        at_ms: 1_000,
        fields: json!({"amount": {"from": "1.00", "to": "2.50"}}),
        message: None,
    }
}

fn batch(key: &str, lease: &Lease, records: Vec<CommittedRecord>) -> CommitBatch {
    CommitBatch {
        batch_key: key.into(),
        lease: lease.clone(),
        object_pair: PAIR,
        records,
        checkpoints: vec![],
        counters: None,
        now_ms: 1_000,
        settled_hubspot_changes: vec![],
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn sync_error(record: &str, category: ErrorCategory) -> NewSyncError {
    NewSyncError {
        object_pair: PAIR,
        record: RecordKey {
            side: Side::Salesforce,
            id: record.into(),
        },
        category,
        message: format!("{category} on {record}"),
        payload: json!({"errorCode": "X", "fields": ["Amount"]}),
    }
}

// ---------------------------------------------------------------- behaviours

async fn link_uniqueness_and_idempotent_commit(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "acme").await;
    let run = s
        .start_run(&lease, RunTrigger::Scheduled, 10)
        .await
        .unwrap();
    let mut b = batch(
        "run1:0",
        &lease,
        vec![
            CommittedRecord {
                events: vec![event("006A", "901", EventKind::Created, "v1", Some(run.id))],
                ..record("006A", "901")
            },
            record("006B", "902"),
            record("006C", "903"),
        ],
    );
    b.counters = Some((
        run.id,
        RunCounters {
            created_hubspot: 3,
            ..Default::default()
        },
    ));
    let first = s.commit_batch(&t, &b).await.unwrap();
    assert!(!first.already_committed);
    assert_eq!(first.links_inserted, 3);
    assert_eq!(first.events_inserted, 1);

    // The same batch again (a retried commit): nothing changes, counters not doubled.
    let again = s.commit_batch(&t, &b).await.unwrap();
    assert!(again.already_committed);
    assert_eq!(again.links_inserted + again.events_inserted, 0);
    let run_now = s.run(&t, run.id).await.unwrap().unwrap();
    assert_eq!(run_now.counters.created_hubspot, 3);

    // The same records under a new batch key (a re-run after a crash): links are
    // unchanged, history is not duplicated.
    b.batch_key = "run2:0".into();
    b.counters = None;
    let rerun = s.commit_batch(&t, &b).await.unwrap();
    assert!(!rerun.already_committed);
    assert_eq!(rerun.links_inserted, 0);
    assert_eq!(rerun.links_unchanged, 3);
    assert_eq!(rerun.events_inserted, 0);
    let links = s
        .links_by_salesforce_ids(&t, PAIR, &ids(&["006A", "006B", "006C"]))
        .await
        .unwrap();
    assert_eq!(links.len(), 3);
    let history = s
        .record_history(
            &t,
            PAIR,
            &RecordKey {
                side: Side::Salesforce,
                id: "006A".into(),
            },
            Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1);

    // A state change updates the one link in place.
    let mut archived = record("006A", "901");
    archived.state = LinkState::SalesforceDeleted;
    let out = s
        .commit_batch(&t, &batch("run2:1", &lease, vec![archived]))
        .await
        .unwrap();
    assert_eq!((out.links_inserted, out.links_updated), (0, 1));
    let l = s
        .links_by_hubspot_ids(&t, PAIR, &ids(&["901"]))
        .await
        .unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].salesforce_id, "006A");
    assert_eq!(l[0].state, LinkState::SalesforceDeleted);

    // Duplicate ids inside one batch are refused before anything is written.
    let err = s
        .commit_batch(
            &t,
            &batch(
                "run2:2",
                &lease,
                vec![record("006D", "904"), record("006D", "905")],
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    let err = s
        .commit_batch(&t, &batch("", &lease, vec![record("006E", "906")]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
}

async fn bulk_lookups_span_chunks(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "bulk").await;
    let records: Vec<_> = (0..1_200)
        .map(|i| record(&format!("006{i:05}"), &format!("{}", 10_000 + i)))
        .collect();
    let out = s
        .commit_batch(&t, &batch("b:0", &lease, records))
        .await
        .unwrap();
    assert_eq!(out.links_inserted, 1_200);
    let mut wanted: Vec<String> = (0..1_200)
        .step_by(2)
        .map(|i| format!("006{i:05}"))
        .collect();
    wanted.push("006-missing".into());
    wanted.push("00600000".into()); // a duplicate request id is answered once
    let found = s.links_by_salesforce_ids(&t, PAIR, &wanted).await.unwrap();
    assert_eq!(found.len(), 600);
    let hs: Vec<String> = (0..1_200).map(|i| format!("{}", 10_000 + i)).collect();
    let found = s.links_by_hubspot_ids(&t, PAIR, &hs).await.unwrap();
    assert_eq!(found.len(), 1_200);
    assert!(
        s.links_by_hubspot_ids(&t, PAIR, &[])
            .await
            .unwrap()
            .is_empty()
    );
    // Another object pair shares no links.
    let other = s
        .links_by_hubspot_ids(&t, ObjectPair::AccountCompany, &hs)
        .await
        .unwrap();
    assert!(other.is_empty());
}

async fn links_page_in_salesforce_id_order(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "paged").await;
    // Committed out of order; one archived link (every state is listed).
    let mut records: Vec<_> = (0..250)
        .rev()
        .map(|i| record(&format!("006{i:05}"), &format!("{}", 20_000 + i)))
        .collect();
    records[0].state = LinkState::HubSpotArchived;
    s.commit_batch(&t, &batch("p:0", &lease, records))
        .await
        .unwrap();
    // Another pair's and another tenant's links never appear.
    let other = CommitBatch {
        object_pair: ObjectPair::AccountCompany,
        ..batch("p:1", &lease, vec![record("001A", "5")])
    };
    s.commit_batch(&t, &other).await.unwrap();
    let (t2, lease2) = tenant_with_lease(s, "paged-other").await;
    s.commit_batch(&t2, &batch("p:0", &lease2, vec![record("006-x", "1")]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.links(&t, PAIR, after.as_deref(), 100).await.unwrap();
        pages += 1;
        assert!(page.len() <= 100);
        assert!(page.iter().all(|l| l.object_pair == PAIR && l.tenant == t));
        let n = page.len();
        after = page.last().map(|l| l.salesforce_id.clone());
        seen.extend(page.into_iter().map(|l| (l.salesforce_id, l.state)));
        if n < 100 {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..250).map(|i| format!("006{i:05}")).collect();
    let got: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, want, "every link once, in Salesforce-id order");
    assert_eq!(seen[249].1, LinkState::HubSpotArchived);
    // Starting after the last id gives nothing; a bad limit is a clear error.
    assert!(
        s.links(&t, PAIR, Some("00600249"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.links(&t, PAIR, None, 0).await.is_err());
    assert!(s.links(&t, PAIR, None, 1_001).await.is_err());
}

async fn link_conflict_writes_nothing(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "conflict").await;
    s.commit_batch(&t, &batch("c:0", &lease, vec![record("006A", "901")]))
        .await
        .unwrap();
    let err = s
        .commit_batch(
            &t,
            &batch(
                "c:1",
                &lease,
                vec![record("006Z", "950"), record("006B", "901")],
            ),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::LinkConflict {
            salesforce_id,
            linked_salesforce_id,
            ..
        } => {
            assert_eq!(salesforce_id, "006B");
            assert_eq!(linked_salesforce_id, "006A");
        }
        other => panic!("expected LinkConflict, got {other}"),
    }
    // Nothing of the failed batch was written, and its key is still free.
    assert!(
        s.links_by_salesforce_ids(&t, PAIR, &ids(&["006Z"]))
            .await
            .unwrap()
            .is_empty()
    );
    let ok = s
        .commit_batch(&t, &batch("c:1", &lease, vec![record("006Z", "950")]))
        .await
        .unwrap();
    assert_eq!(ok.links_inserted, 1);
    // Re-pointing a Salesforce record to a new HubSpot record is allowed.
    let out = s
        .commit_batch(&t, &batch("c:2", &lease, vec![record("006A", "960")]))
        .await
        .unwrap();
    assert_eq!(out.links_updated, 1);
    assert!(
        s.links_by_hubspot_ids(&t, PAIR, &ids(&["901"]))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn snapshot_round_trip(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "snap").await;
    let sf: BTreeMap<String, Value> = [
        ("Amount".to_string(), json!("1234567890123.4500")),
        ("Name".to_string(), json!("Große \"Deal\" ✓")),
        ("CloseDate".to_string(), json!("2025-03-31")),
        ("IsPrivate".to_string(), json!(false)),
        ("Description".to_string(), Value::Null),
        ("Probability".to_string(), json!(10)),
        ("Nested".to_string(), json!({"a": [1, "2", null]})),
    ]
    .into_iter()
    .collect();
    let hs: BTreeMap<String, Value> = [
        ("amount".to_string(), json!("1234567890123.4500")),
        ("dealname".to_string(), json!("Große \"Deal\" ✓")),
    ]
    .into_iter()
    .collect();
    let snap = Snapshot {
        salesforce: sf.clone(),
        hubspot: hs.clone(),
        synced_at_ms: 42,
    };
    let mut r = record("006A", "901");
    r.snapshot = Some(snap.clone());
    s.commit_batch(&t, &batch("s:0", &lease, vec![r, record("006B", "902")]))
        .await
        .unwrap();
    let got = s
        .snapshots(&t, PAIR, &ids(&["006A", "006B", "006X"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "only 006A has a snapshot");
    assert_eq!(got["006A"], snap);
    assert_eq!(
        got["006A"].salesforce["Amount"],
        json!("1234567890123.4500")
    );

    // A commit without a snapshot keeps the old one; with one, replaces it whole.
    s.commit_batch(&t, &batch("s:1", &lease, vec![record("006A", "901")]))
        .await
        .unwrap();
    assert_eq!(
        s.snapshots(&t, PAIR, &ids(&["006A"])).await.unwrap()["006A"],
        snap
    );
    let newer = Snapshot {
        salesforce: [("Amount".to_string(), json!("0.10"))]
            .into_iter()
            .collect(),
        hubspot: BTreeMap::new(),
        synced_at_ms: 43,
    };
    let mut r = record("006A", "901");
    r.snapshot = Some(newer.clone());
    s.commit_batch(&t, &batch("s:2", &lease, vec![r]))
        .await
        .unwrap();
    assert_eq!(
        s.snapshots(&t, PAIR, &ids(&["006A"])).await.unwrap()["006A"],
        newer
    );
}

async fn checkpoints_are_monotonic(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "cp").await;
    let cp = |time: i64, id: &str| Checkpoint {
        object_pair: PAIR,
        side: Side::HubSpot,
        stream: Stream::Changes,
        cursor_time_ms: time,
        cursor_id: id.into(),
    };
    let commit = |key: &str, c: Checkpoint| {
        let mut b = batch(key, &lease, vec![]);
        b.checkpoints = vec![c];
        b
    };
    assert!(
        s.checkpoint(&t, PAIR, Side::HubSpot, Stream::Changes)
            .await
            .unwrap()
            .is_none()
    );
    let out = s
        .commit_batch(&t, &commit("k0", cp(100, "9")))
        .await
        .unwrap();
    assert_eq!(out.checkpoints_advanced, 1);
    // Same time, numerically larger id ("10" > "9"): advances.
    let out = s
        .commit_batch(&t, &commit("k1", cp(100, "10")))
        .await
        .unwrap();
    assert_eq!(out.checkpoints_advanced, 1);
    // Older time, or the same cursor: ignored.
    for (i, c) in [cp(99, "999"), cp(100, "10"), cp(100, "9")]
        .into_iter()
        .enumerate()
    {
        let out = s
            .commit_batch(&t, &commit(&format!("old{i}"), c))
            .await
            .unwrap();
        assert_eq!(out.checkpoints_advanced, 0);
    }
    let now = s
        .checkpoint(&t, PAIR, Side::HubSpot, Stream::Changes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.cursor_time_ms, now.cursor_id.as_str()), (100, "10"));
    // Other streams and sides are separate.
    assert!(
        s.checkpoint(&t, PAIR, Side::Salesforce, Stream::Changes)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.checkpoint(&t, PAIR, Side::HubSpot, Stream::Deletes)
            .await
            .unwrap()
            .is_none()
    );
    // Only an explicit, fenced reset moves it back.
    assert!(
        s.reset_checkpoint(&lease, PAIR, Side::HubSpot, Stream::Changes)
            .await
            .unwrap()
    );
    assert!(
        s.checkpoint(&t, PAIR, Side::HubSpot, Stream::Changes)
            .await
            .unwrap()
            .is_none()
    );
}

async fn errors_upsert_retry_resolve_and_health(h: &Harness) {
    let s = &*h.store;
    let t = tid("errs");
    s.create_tenant(&t, "errs", 0).await.unwrap();
    let schedule = StoreConfig::default().retry;

    let e1 = s
        .record_error(&t, &sync_error("006A", ErrorCategory::Validation), 1_000)
        .await
        .unwrap();
    assert_eq!(e1.attempts, 1);
    assert_eq!(e1.next_retry_at_ms, schedule.next_retry(1, 1_000));
    assert_eq!(e1.payload["errorCode"], json!("X"));
    let mut again = sync_error("006A", ErrorCategory::Validation);
    again.message = "still failing".into();
    let e2 = s.record_error(&t, &again, 5_000).await.unwrap();
    assert_eq!(e2.id, e1.id, "same (pair, record, category) is one row");
    assert_eq!(e2.attempts, 2);
    assert_eq!(e2.first_seen_ms, 1_000);
    assert_eq!(e2.last_seen_ms, 5_000);
    assert_eq!(e2.message, "still failing");
    assert_eq!(e2.next_retry_at_ms, schedule.next_retry(2, 5_000));
    assert!(e2.next_retry_at_ms.unwrap() - 5_000 > e1.next_retry_at_ms.unwrap() - 1_000);

    // Other categories and records are separate rows.
    s.record_error(&t, &sync_error("006A", ErrorCategory::Permission), 1_000)
        .await
        .unwrap();
    s.record_error(&t, &sync_error("006B", ErrorCategory::Validation), 1_000)
        .await
        .unwrap();
    s.record_error(&t, &sync_error("006C", ErrorCategory::Validation), 1_000)
        .await
        .unwrap();

    // Due: nothing before the first retry time; the three first-attempt errors after.
    assert!(s.due_errors(&t, 1_001, 100).await.unwrap().is_empty());
    let due = s
        .due_errors(&t, schedule.next_retry(1, 1_000).unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|e| e.attempts == 1));

    let health = s.health_summary(&t).await.unwrap();
    let validation = health
        .iter()
        .find(|c| c.category == ErrorCategory::Validation)
        .unwrap();
    assert_eq!(
        (validation.open_errors, validation.affected_records),
        (3, 3)
    );
    let permission = health
        .iter()
        .find(|c| c.category == ErrorCategory::Permission)
        .unwrap();
    assert_eq!(permission.open_errors, 1);
    assert_eq!(health.len(), 2);

    // Paging through one group.
    let p1 = s
        .open_errors(&t, Some(ErrorCategory::Validation), Page::first(2))
        .await
        .unwrap();
    assert_eq!(p1.len(), 2);
    let p2 = s
        .open_errors(
            &t,
            Some(ErrorCategory::Validation),
            Page {
                after: Some(p1[1].id),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(p2.len(), 1);
    assert!(p2[0].id > p1[1].id);
    assert_eq!(
        s.open_errors(&t, None, Page::first(100))
            .await
            .unwrap()
            .len(),
        4
    );
    let err = s.open_errors(&t, None, Page::first(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)));

    // Resolve: gone from health and due lists; resolving twice says so.
    assert!(s.resolve_error(&t, e1.id, 9_000).await.unwrap());
    assert!(!s.resolve_error(&t, e1.id, 9_001).await.unwrap());
    let health = s.health_summary(&t).await.unwrap();
    let validation = health
        .iter()
        .find(|c| c.category == ErrorCategory::Validation)
        .unwrap();
    assert_eq!(validation.open_errors, 2);
    assert!(
        s.due_errors(&t, i64::MAX, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.id != e1.id)
    );

    // A resolved error that fails again reopens as a fresh occurrence.
    let reopened = s
        .record_error(&t, &sync_error("006A", ErrorCategory::Validation), 20_000)
        .await
        .unwrap();
    assert_eq!(reopened.id, e1.id);
    assert_eq!(reopened.attempts, 1);
    assert_eq!(reopened.first_seen_ms, 20_000);
    assert_eq!(reopened.resolved_at_ms, None);
}

async fn commit_resolves_errors_of_committed_records(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "resolve").await;
    s.record_error(&t, &sync_error("006A", ErrorCategory::Duplicate), 1)
        .await
        .unwrap();
    let mut hs_err = sync_error("901", ErrorCategory::AssociationWaiting);
    hs_err.record.side = Side::HubSpot;
    s.record_error(&t, &hs_err, 1).await.unwrap();
    s.record_error(&t, &sync_error("006Q", ErrorCategory::Duplicate), 1)
        .await
        .unwrap();
    let out = s
        .commit_batch(&t, &batch("r:0", &lease, vec![record("006A", "901")]))
        .await
        .unwrap();
    assert_eq!(out.errors_resolved, 2);
    let open = s.open_errors(&t, None, Page::first(10)).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].record.id, "006Q");
}

async fn run_history_and_counters(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "runs").await;
    let r1 = s.start_run(&lease, RunTrigger::Manual, 100).await.unwrap();
    assert_eq!(r1.status, RunStatus::Running);
    assert_eq!(r1.fencing_token, lease.fencing_token);
    let mut b = batch("r1:0", &lease, vec![record("006A", "901")]);
    b.counters = Some((
        r1.id,
        RunCounters {
            read_salesforce: 5,
            updated_hubspot: 1,
            ..Default::default()
        },
    ));
    s.commit_batch(&t, &b).await.unwrap();
    s.add_run_counters(
        &t,
        r1.id,
        &RunCounters {
            read_salesforce: 2,
            api_calls_hubspot: 7,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let done = s
        .finish_run(&t, r1.id, RunStatus::Succeeded, None, 200)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.finished_at_ms, Some(200));
    assert_eq!(done.counters.read_salesforce, 7);
    assert_eq!(done.counters.updated_hubspot, 1);
    assert_eq!(done.counters.api_calls_hubspot, 7);
    let err = s
        .finish_run(&t, r1.id, RunStatus::Failed, None, 300)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    let err = s
        .finish_run(&t, 999_999, RunStatus::Failed, None, 300)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "run", .. }),
        "{err}"
    );

    // A run left running (its replica died) is abandoned when the next one starts.
    let r2 = s
        .start_run(&lease, RunTrigger::Scheduled, 400)
        .await
        .unwrap();
    let r3 = s
        .start_run(&lease, RunTrigger::Backfill, 500)
        .await
        .unwrap();
    let r2_now = s.run(&t, r2.id).await.unwrap().unwrap();
    assert_eq!(r2_now.status, RunStatus::Abandoned);
    assert_eq!(r2_now.finished_at_ms, Some(500));

    let page = s.runs(&t, Page::first(2)).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r3.id, r2.id]
    );
    let rest = s
        .runs(
            &t,
            Page {
                after: Some(r2.id),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r1.id]);
    assert_eq!(rest[0].trigger, RunTrigger::Manual);
    let err = s
        .add_run_counters(&t, 999_999, &RunCounters::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
}

async fn record_history_is_deduplicated(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "hist").await;
    let run = s.start_run(&lease, RunTrigger::Scheduled, 0).await.unwrap();
    let mut r = record("006A", "901");
    r.events = vec![
        event(
            "006A",
            "901",
            EventKind::Created,
            "2025-01-01T00:00:00Z",
            Some(run.id),
        ),
        event(
            "006A",
            "901",
            EventKind::Updated,
            "2025-01-02T00:00:00Z",
            Some(run.id),
        ),
    ];
    let out = s
        .commit_batch(&t, &batch("h:0", &lease, vec![r]))
        .await
        .unwrap();
    assert_eq!(out.events_inserted, 2);
    // Outside a batch: a skip, appended twice, stored once.
    let skip = NewRecordEvent {
        direction: Direction::None,
        message: Some("stage excluded".into()),
        ..event(
            "006A",
            "901",
            EventKind::Skipped,
            "2025-01-03T00:00:00Z",
            None,
        )
    };
    assert_eq!(
        s.append_events(&t, &[skip.clone(), skip.clone()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.append_events(&t, std::slice::from_ref(&skip))
            .await
            .unwrap(),
        0
    );
    // An event needs an id.
    let bad = NewRecordEvent {
        salesforce_id: None,
        hubspot_id: None,
        ..skip.clone()
    };
    assert!(matches!(
        s.append_events(&t, &[bad]).await.unwrap_err(),
        StoreError::InvalidInput(_)
    ));

    let by_sf = s
        .record_history(
            &t,
            PAIR,
            &RecordKey {
                side: Side::Salesforce,
                id: "006A".into(),
            },
            Page::first(10),
        )
        .await
        .unwrap();
    let kinds: Vec<_> = by_sf.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::Skipped, EventKind::Updated, EventKind::Created],
        "newest first"
    );
    assert_eq!(by_sf[2].event.run_id, Some(run.id));
    assert_eq!(by_sf[0].event.message.as_deref(), Some("stage excluded"));
    assert_eq!(by_sf[1].event.fields["amount"]["to"], json!("2.50"));
    let by_hs = s
        .record_history(
            &t,
            PAIR,
            &RecordKey {
                side: Side::HubSpot,
                id: "901".into(),
            },
            Page {
                after: Some(by_sf[0].id),
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_hs.len(), 1);
    assert_eq!(by_hs[0].id, by_sf[1].id);
}

async fn lease_exclusive_under_concurrency(h: &Harness) {
    let t = tid("race");
    h.store.create_tenant(&t, "race", 0).await.unwrap();
    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier, t) = (h.store.clone(), barrier.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .try_acquire_lease(&t, &format!("replica-{i}"), 60_000, 1_000)
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(lease) = task.await.unwrap() {
            winners.push(lease);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one replica holds the lease: {winners:?}"
    );
    assert_eq!(winners[0].fencing_token, 1);
    assert_eq!(winners[0].expires_at_ms, 61_000);
    // Re-acquiring a live lease (even by its holder) is refused.
    assert!(
        h.store
            .try_acquire_lease(&t, &winners[0].holder, 60_000, 2_000)
            .await
            .unwrap()
            .is_none()
    );
}

async fn next_due_tenant_exclusive_under_concurrency(h: &Harness) {
    for name in ["due-a", "due-b", "due-c"] {
        h.store.create_tenant(&tid(name), name, 0).await.unwrap();
    }
    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier) = (h.store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .acquire_next_due_tenant(&format!("replica-{i}"), 60_000, 10)
                .await
                .unwrap()
        }));
    }
    let mut leased = Vec::new();
    for task in tasks {
        if let Some(lease) = task.await.unwrap() {
            leased.push(lease.tenant.to_string());
        }
    }
    leased.sort();
    assert_eq!(
        leased,
        vec!["due-a", "due-b", "due-c"],
        "each tenant leased exactly once"
    );
}

async fn next_due_tenant_respects_schedule_and_disabled(h: &Harness) {
    let s = &*h.store;
    for name in ["sched-a", "sched-b", "sched-c"] {
        s.create_tenant(&tid(name), name, 0).await.unwrap();
    }
    s.schedule_sync(&tid("sched-a"), 500).await.unwrap();
    s.schedule_sync(&tid("sched-b"), 100).await.unwrap();
    s.set_tenant_disabled(&tid("sched-c"), true).await.unwrap();
    assert!(
        s.acquire_next_due_tenant("r", 1_000, 50)
            .await
            .unwrap()
            .is_none()
    );
    let first = s
        .acquire_next_due_tenant("r", 1_000, 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.tenant.as_str(), "sched-b", "longest due first");
    let second = s
        .acquire_next_due_tenant("r", 1_000, 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.tenant.as_str(), "sched-a");
    assert!(
        s.acquire_next_due_tenant("r", 1_000, 600)
            .await
            .unwrap()
            .is_none(),
        "disabled tenants are never leased"
    );
    let err = s
        .try_acquire_lease(&tid("sched-c"), "r", 1_000, 600)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TenantDisabled(_)), "{err}");
    let err = s
        .try_acquire_lease(&tid("nobody"), "r", 1_000, 600)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    // Releasing with a next due time reschedules.
    s.release_lease(&first, Some(10_000)).await.unwrap();
    s.release_lease(&second, Some(20_000)).await.unwrap();
    assert!(
        s.acquire_next_due_tenant("r", 1_000, 9_999)
            .await
            .unwrap()
            .is_none()
    );
    let again = s
        .acquire_next_due_tenant("r", 1_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.tenant.as_str(), "sched-b");
    assert_eq!(again.fencing_token, first.fencing_token + 1);
    let err = s
        .try_acquire_lease(&tid("sched-a"), "r", 0, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)));
}

/// Fair ordering: a tenant whose runs are asked for again and again (sync now, a resync)
/// is due "now" each time, so it never goes before a tenant that has been due longer,
/// and while it runs it is not leased a second time.
async fn a_tenant_asking_again_and_again_goes_after_those_due_longer(h: &Harness) {
    let s = &*h.store;
    let (noisy, quiet) = (tid("fair-noisy"), tid("fair-quiet"));
    s.create_tenant(&noisy, "noisy", 0).await.unwrap();
    s.create_tenant(&quiet, "quiet", 0).await.unwrap();
    s.schedule_sync(&noisy, 100).await.unwrap();
    s.schedule_sync(&quiet, 200).await.unwrap();
    let first = s
        .acquire_next_due_tenant("r", 10_000, 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.tenant, noisy, "due longest");
    // Asked for again while it runs: one run at a time, so the other worker gets quiet.
    s.request_sync(&noisy, 310).await.unwrap();
    let second = s
        .acquire_next_due_tenant("r", 10_000, 320)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second.tenant, quiet,
        "noisy holds its lease: never two runs at once"
    );
    s.finish_job(&second, 5_000, 0).await.unwrap();
    // Noisy's run ends; asked for during it, it is due at once, and keeps asking.
    s.finish_job(&first, 60_000, 0).await.unwrap();
    for now in [400, 500, 600] {
        s.request_sync(&noisy, now).await.unwrap();
        let lease = s
            .acquire_next_due_tenant("r", 10_000, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.tenant, noisy, "quiet is not due before 5,000");
        s.finish_job(&lease, 60_000, 0).await.unwrap();
    }
    // From 5,000 quiet is due: however often noisy asks, quiet has been due longer.
    for now in [5_100, 5_200] {
        s.request_sync(&noisy, now).await.unwrap();
    }
    let next = s
        .acquire_next_due_tenant("r", 10_000, 5_300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.tenant, quiet, "due since 5,000, before noisy's asks");
    let after = s
        .acquire_next_due_tenant("r", 10_000, 5_300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.tenant, noisy);
    s.finish_job(&next, 5_400, 0).await.unwrap();
    // Asked for during each of its runs, noisy is due from that run's start (not from
    // before it), so after at most one more run quiet, due meanwhile, goes first.
    s.request_sync(&noisy, 5_350).await.unwrap();
    s.finish_job(&after, 60_000, 0).await.unwrap();
    let third = s
        .acquire_next_due_tenant("r", 10_000, 5_500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.tenant, noisy, "due from 5,300, its run's start");
    s.request_sync(&noisy, 5_600).await.unwrap();
    s.finish_job(&third, 60_000, 0).await.unwrap();
    let fourth = s
        .acquire_next_due_tenant("r", 10_000, 5_700)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fourth.tenant, quiet,
        "due since 5,400; noisy only since 5,500"
    );
}

async fn lease_expiry_takeover_and_fencing(h: &Harness) {
    let s = &*h.store;
    let t = tid("fence");
    s.create_tenant(&t, "fence", 0).await.unwrap();
    let a = s
        .try_acquire_lease(&t, "replica-a", 1_000, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.try_acquire_lease(&t, "replica-b", 1_000, 999)
            .await
            .unwrap()
            .is_none()
    );
    let a = s.renew_lease(&a, 1_000, 900).await.unwrap();
    assert_eq!(a.expires_at_ms, 1_900);
    assert!(
        s.try_acquire_lease(&t, "replica-b", 1_000, 1_899)
            .await
            .unwrap()
            .is_none()
    );
    // A's lease expires: B takes over with a larger fencing token.
    let b = s
        .try_acquire_lease(&t, "replica-b", 1_000, 1_900)
        .await
        .unwrap()
        .unwrap();
    assert!(b.fencing_token > a.fencing_token);

    // The stale holder can no longer write anything.
    let lost = |e: StoreError| matches!(e, StoreError::LeaseLost { .. });
    let stale = batch("a:0", &a, vec![record("006A", "901")]);
    assert!(lost(s.commit_batch(&t, &stale).await.unwrap_err()));
    assert!(lost(s.renew_lease(&a, 1_000, 2_000).await.unwrap_err()));
    assert!(lost(s.release_lease(&a, None).await.unwrap_err()));
    assert!(lost(
        s.start_run(&a, RunTrigger::Scheduled, 2_000)
            .await
            .unwrap_err()
    ));
    assert!(lost(
        s.reset_checkpoint(&a, PAIR, Side::Salesforce, Stream::Changes)
            .await
            .unwrap_err()
    ));
    assert!(
        s.links_by_salesforce_ids(&t, PAIR, &ids(&["006A"]))
            .await
            .unwrap()
            .is_empty(),
        "the refused commit wrote nothing"
    );
    // The new holder commits the same batch key fine (the refused one left no trace).
    let fresh = batch("a:0", &b, vec![record("006A", "901")]);
    assert_eq!(s.commit_batch(&t, &fresh).await.unwrap().links_inserted, 1);
    // After release even the last holder's lease is dead.
    s.release_lease(&b, None).await.unwrap();
    assert!(lost(
        s.commit_batch(&t, &batch("b:1", &b, vec![]))
            .await
            .unwrap_err()
    ));
    // A lease for another tenant cannot be used for this one.
    let other = tid("fence-other");
    s.create_tenant(&other, "x", 0).await.unwrap();
    let c = s
        .try_acquire_lease(&t, "replica-c", 1_000, 5_000)
        .await
        .unwrap()
        .unwrap();
    let err = s
        .commit_batch(&other, &batch("c:0", &c, vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
}

async fn tenant_isolation(h: &Harness) {
    let s = &*h.store;
    let (a, lease_a) = tenant_with_lease(s, "tenant-a").await;
    let (b, lease_b) = tenant_with_lease(s, "tenant-b").await;
    // The same CRM ids in both tenants are separate links.
    let mut rb = record("006A", "901");
    rb.snapshot = Some(Snapshot {
        salesforce: [("Name".to_string(), json!("B's secret deal"))]
            .into_iter()
            .collect(),
        hubspot: BTreeMap::new(),
        synced_at_ms: 1,
    });
    rb.events = vec![event("006A", "901", EventKind::Created, "v1", None)];
    s.commit_batch(&b, &batch("k", &lease_b, vec![rb]))
        .await
        .unwrap();
    s.commit_batch(&a, &batch("k", &lease_a, vec![record("006A", "777")]))
        .await
        .unwrap();
    let la = s
        .links_by_salesforce_ids(&a, PAIR, &ids(&["006A"]))
        .await
        .unwrap();
    assert_eq!(la.len(), 1);
    assert_eq!(
        (la[0].tenant.as_str(), la[0].hubspot_id.as_str()),
        ("tenant-a", "777")
    );
    assert!(
        s.links_by_hubspot_ids(&a, PAIR, &ids(&["901"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.snapshots(&a, PAIR, &ids(&["006A"]))
            .await
            .unwrap()
            .is_empty()
    );
    let key = RecordKey {
        side: Side::Salesforce,
        id: "006A".into(),
    };
    assert!(
        s.record_history(&a, PAIR, &key, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );

    let eb = s
        .record_error(&b, &sync_error("006A", ErrorCategory::RateLimit), 1)
        .await
        .unwrap();
    assert!(s.health_summary(&a).await.unwrap().is_empty());
    assert!(s.due_errors(&a, i64::MAX, 10).await.unwrap().is_empty());
    assert!(
        !s.resolve_error(&a, eb.id, 2).await.unwrap(),
        "A cannot resolve B's error"
    );

    let run_b = s.start_run(&lease_b, RunTrigger::Manual, 1).await.unwrap();
    assert!(s.run(&a, run_b.id).await.unwrap().is_none());
    assert!(s.runs(&a, Page::first(10)).await.unwrap().is_empty());
    assert!(
        s.finish_run(&a, run_b.id, RunStatus::Failed, None, 2)
            .await
            .is_err()
    );
    assert!(
        s.add_run_counters(&a, run_b.id, &RunCounters::default())
            .await
            .is_err()
    );
    // A's batch cannot add counters to B's run: the whole batch is refused.
    let mut sneaky = batch("sneak", &lease_a, vec![record("006S", "555")]);
    sneaky.counters = Some((run_b.id, RunCounters::default()));
    assert!(s.commit_batch(&a, &sneaky).await.is_err());
    assert!(
        s.links_by_salesforce_ids(&a, PAIR, &ids(&["006S"]))
            .await
            .unwrap()
            .is_empty()
    );

    let vb = s
        .add_plugin_version(&b, &ComponentSource::Bytes(b"b-plugin".to_vec()), "b", 1)
        .await
        .unwrap();
    assert!(s.plugin_version(&a, vb.id).await.unwrap().is_none());
    assert!(s.plugin_versions(&a).await.unwrap().is_empty());
    assert!(matches!(
        s.activate_plugin(&a, Some(vb.id), "x", 2)
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(s.plugin_component(&a, vb.id).await.is_err());
    assert!(
        s.set_plugin_test_results(&a, vb.id, &json!({}))
            .await
            .is_err()
    );
    assert!(
        s.add_rule_fixture(&a, vb.id, "f", &json!({}), &json!({}), 1)
            .await
            .is_err()
    );
    assert!(
        s.add_invocation_report(&a, Some(run_b.id), None, &json!({}), 1)
            .await
            .is_err()
    );

    s.put_connection(
        &b,
        Side::HubSpot,
        &EncryptedConnection {
            key_id: "k1".into(),
            ciphertext: vec![1, 2, 3],
            updated_at_ms: 1,
        },
    )
    .await
    .unwrap();
    assert!(s.connection(&a, Side::HubSpot).await.unwrap().is_none());

    // Deleting B removes B's rows only.
    assert!(s.delete_tenant(&b).await.unwrap());
    assert!(s.tenant(&b).await.unwrap().is_none());
    assert!(
        s.links_by_salesforce_ids(&b, PAIR, &ids(&["006A"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.links_by_salesforce_ids(&a, PAIR, &ids(&["006A"]))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn plugin_versions_activation_rollback(h: &Harness) {
    let s = &*h.store;
    let t = tid("plugins");
    s.create_tenant(&t, "plugins", 0).await.unwrap();
    let bytes = b"\0asm component v1".to_vec();
    let v1 = s
        .add_plugin_version(&t, &ComponentSource::Bytes(bytes.clone()), "v1.wasm", 10)
        .await
        .unwrap();
    assert_eq!(v1.sha256, sha256_of(&bytes));
    assert_eq!(v1.size_bytes, Some(bytes.len() as i64));
    assert!(!v1.active);
    // The same bytes again: the same version.
    let again = s
        .add_plugin_version(&t, &ComponentSource::Bytes(bytes.clone()), "copy", 11)
        .await
        .unwrap();
    assert_eq!(again.id, v1.id);
    assert_eq!(s.plugin_component(&t, v1.id).await.unwrap(), Some(bytes));
    let v2 = s
        .add_plugin_version(&t, &ComponentSource::Bytes(b"v2".to_vec()), "v2", 20)
        .await
        .unwrap();
    let v3 = s
        .add_plugin_version(
            &t,
            &ComponentSource::Path {
                path: "/var/lib/dealbridge/v3.wasm".into(),
                sha256: "ab".repeat(32),
            },
            "v3",
            30,
        )
        .await
        .unwrap();
    assert_eq!(
        v3.component_path.as_deref(),
        Some("/var/lib/dealbridge/v3.wasm")
    );
    assert_eq!(s.plugin_component(&t, v3.id).await.unwrap(), None);
    for bad in [
        ComponentSource::Path {
            path: "x".into(),
            sha256: "AB".repeat(32),
        },
        ComponentSource::Path {
            path: "x".into(),
            sha256: "ab".into(),
        },
        ComponentSource::Bytes(vec![]),
    ] {
        let err = s.add_plugin_version(&t, &bad, "bad", 1).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    assert_eq!(
        s.plugin_versions(&t)
            .await
            .unwrap()
            .iter()
            .map(|v| v.id)
            .collect::<Vec<_>>(),
        vec![v3.id, v2.id, v1.id]
    );

    s.set_plugin_test_results(&t, v2.id, &json!({"passed": 3, "failed": 0}))
        .await
        .unwrap();
    assert_eq!(
        s.plugin_version(&t, v2.id)
            .await
            .unwrap()
            .unwrap()
            .test_results,
        Some(json!({"passed": 3, "failed": 0}))
    );
    let f = s
        .add_rule_fixture(
            &t,
            v2.id,
            "closed-won",
            &json!({"stage": "Closed Won"}),
            &json!({"skip": false}),
            21,
        )
        .await
        .unwrap();
    assert_eq!(f.input["stage"], json!("Closed Won"));
    let dup = s
        .add_rule_fixture(&t, v2.id, "closed-won", &json!({}), &json!({}), 22)
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::AlreadyExists { .. }), "{dup}");
    assert_eq!(s.rule_fixtures(&t, v2.id).await.unwrap(), vec![f]);
    assert!(s.rule_fixtures(&t, v1.id).await.unwrap().is_empty());

    // Nothing active yet: default rules; nothing to roll back.
    assert!(s.active_plugin(&t).await.unwrap().is_none());
    assert!(matches!(
        s.rollback_plugin(&t, "ops", 40).await.unwrap_err(),
        StoreError::NothingToRollBack(_)
    ));
    s.activate_plugin(&t, Some(v1.id), "alice", 41)
        .await
        .unwrap();
    s.activate_plugin(&t, Some(v2.id), "alice", 42)
        .await
        .unwrap();
    let a3 = s.activate_plugin(&t, Some(v3.id), "bob", 43).await.unwrap();
    assert_eq!(a3.previous_version_id, Some(v2.id));
    // Activating the active version is a no-op.
    assert_eq!(
        s.activate_plugin(&t, Some(v3.id), "bob", 44).await.unwrap(),
        a3
    );
    assert_eq!(active_id(s, &t).await, Some(v3.id));
    assert_eq!(
        s.plugin_versions(&t)
            .await
            .unwrap()
            .iter()
            .filter(|v| v.active)
            .count(),
        1
    );

    // Rollback walks back like a stack: v3 -> v2 -> v1 -> (default) -> nothing.
    let r1 = s.rollback_plugin(&t, "ops", 50).await.unwrap();
    assert!(r1.is_rollback);
    assert_eq!(
        (r1.version_id, r1.previous_version_id),
        (Some(v2.id), Some(v3.id))
    );
    assert_eq!(active_id(s, &t).await, Some(v2.id));
    s.rollback_plugin(&t, "ops", 51).await.unwrap();
    assert_eq!(active_id(s, &t).await, Some(v1.id));
    assert!(matches!(
        s.rollback_plugin(&t, "ops", 52).await.unwrap_err(),
        StoreError::NothingToRollBack(_)
    ));
    // Back to the built-in default rules, then roll back to v1.
    let d = s.activate_plugin(&t, None, "ops", 53).await.unwrap();
    assert_eq!(d.version_id, None);
    assert_eq!(active_id(s, &t).await, None);
    s.rollback_plugin(&t, "ops", 54).await.unwrap();
    assert_eq!(active_id(s, &t).await, Some(v1.id));
    let history = s.activations(&t, Page::first(100)).await.unwrap();
    assert_eq!(history.len(), 7);
    assert_eq!(history[0].activated_at_ms, 54);
    assert_eq!(history.iter().filter(|a| a.is_rollback).count(), 3);

    // Invocation reports, optionally by run.
    let lease = s
        .try_acquire_lease(&t, "r", 1_000, 60)
        .await
        .unwrap()
        .unwrap();
    let run = s.start_run(&lease, RunTrigger::Manual, 60).await.unwrap();
    let rep = s
        .add_invocation_report(
            &t,
            Some(run.id),
            Some(v1.id),
            &json!({"fuel": 12345, "decisions": []}),
            61,
        )
        .await
        .unwrap();
    s.add_invocation_report(&t, None, None, &json!({"fuel": 1}), 62)
        .await
        .unwrap();
    assert_eq!(
        s.invocation_reports(&t, Some(run.id), Page::first(10))
            .await
            .unwrap(),
        vec![rep]
    );
    assert_eq!(
        s.invocation_reports(&t, None, Page::first(10))
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn active_id(s: &dyn Store, t: &TenantId) -> Option<i64> {
    s.active_plugin(t).await.unwrap().map(|v| v.id)
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn tenants_tokens_connections(h: &Harness) {
    let s = &*h.store;
    let t = tid("acct");
    let created = s.create_tenant(&t, "Acme Corp", 5).await.unwrap();
    assert_eq!(s.tenant(&t).await.unwrap(), Some(created));
    assert!(matches!(
        s.create_tenant(&t, "again", 6).await.unwrap_err(),
        StoreError::AlreadyExists { .. }
    ));
    s.set_tenant_disabled(&t, true).await.unwrap();
    assert!(s.tenant(&t).await.unwrap().unwrap().disabled);
    assert!(matches!(
        s.set_tenant_disabled(&tid("ghost"), true)
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));

    let token = store::ApiToken {
        token_id: "tok_1".into(),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        label: "ci".into(),
        created_at_ms: 7,
        revoked_at_ms: None,
    };
    s.add_api_token(&t, &token).await.unwrap();
    assert!(matches!(
        s.add_api_token(&t, &token).await.unwrap_err(),
        StoreError::AlreadyExists { .. }
    ));
    assert_eq!(s.api_token(&t, "tok_1").await.unwrap(), Some(token.clone()));
    assert!(s.revoke_api_token(&t, "tok_1", 8).await.unwrap());
    assert!(!s.revoke_api_token(&t, "tok_1", 9).await.unwrap());
    assert_eq!(
        s.api_token(&t, "tok_1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at_ms,
        Some(8)
    );

    let sealed = EncryptedConnection {
        key_id: "key-2025".into(),
        ciphertext: (0..=255u8).collect(),
        updated_at_ms: 10,
    };
    s.put_connection(&t, Side::Salesforce, &sealed)
        .await
        .unwrap();
    assert_eq!(
        s.connection(&t, Side::Salesforce).await.unwrap(),
        Some(sealed.clone())
    );
    assert!(s.connection(&t, Side::HubSpot).await.unwrap().is_none());
    let rotated = EncryptedConnection {
        key_id: "key-2026".into(),
        ciphertext: vec![9; 40],
        updated_at_ms: 11,
    };
    s.put_connection(&t, Side::Salesforce, &rotated)
        .await
        .unwrap();
    assert_eq!(
        s.connection(&t, Side::Salesforce).await.unwrap(),
        Some(rotated)
    );
    assert!(s.delete_connection(&t, Side::Salesforce).await.unwrap());
    assert!(!s.delete_connection(&t, Side::Salesforce).await.unwrap());
}

async fn reseal_replaces_only_the_connection_that_was_read(h: &Harness) {
    let s = &*h.store;
    let (t, other) = (tid("reseal"), tid("reseal-other"));
    for tenant in [&t, &other] {
        s.create_tenant(tenant, "r", 1).await.unwrap();
    }
    let old = EncryptedConnection {
        key_id: "key-old".into(),
        ciphertext: vec![1; 48],
        updated_at_ms: 10,
    };
    for tenant in [&t, &other] {
        s.put_connection(tenant, Side::HubSpot, &old).await.unwrap();
    }
    assert!(
        s.reseal_connection(&t, Side::HubSpot, &old, "key-new", &[2; 48])
            .await
            .unwrap()
    );
    let resealed = EncryptedConnection {
        key_id: "key-new".into(),
        ciphertext: vec![2; 48],
        updated_at_ms: 10,
    };
    assert_eq!(
        s.connection(&t, Side::HubSpot).await.unwrap(),
        Some(resealed.clone()),
        "new key and bytes, same updated_at"
    );
    assert_eq!(
        s.connection(&other, Side::HubSpot).await.unwrap(),
        Some(old.clone()),
        "another tenant's row is untouched"
    );
    // What was read is no longer there (resealed, or written by the tenant meanwhile):
    // nothing is replaced.
    assert!(
        !s.reseal_connection(&t, Side::HubSpot, &old, "key-new", &[3; 48])
            .await
            .unwrap()
    );
    let written = EncryptedConnection {
        key_id: "key-new".into(),
        ciphertext: vec![4; 48],
        updated_at_ms: 20,
    };
    s.put_connection(&t, Side::HubSpot, &written).await.unwrap();
    assert!(
        !s.reseal_connection(&t, Side::HubSpot, &resealed, "key-new", &[5; 48])
            .await
            .unwrap()
    );
    assert_eq!(
        s.connection(&t, Side::HubSpot).await.unwrap(),
        Some(written)
    );
    assert!(
        !s.reseal_connection(&t, Side::Salesforce, &old, "key-new", &[6; 48])
            .await
            .unwrap(),
        "no connection"
    );
    assert!(matches!(
        s.reseal_connection(&other, Side::HubSpot, &old, "", &[7; 48])
            .await
            .unwrap_err(),
        StoreError::InvalidInput(_)
    ));
}

/// On PostgreSQL a revoke, a disable and a delete are announced on
/// `TOKENS_REVOKED_CHANNEL` at commit (a no-op revoke and an enable are not); SQLite has
/// one replica and announces nothing.
async fn revokes_disables_and_deletes_are_announced(h: &Harness) {
    let s = &*h.store;
    let mut listener = match &h.backend {
        BackendHandle::Sqlite { .. } => None,
        BackendHandle::Postgres(schema) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(schema.options.clone())
                .await
                .unwrap();
            let mut l = sqlx::postgres::PgListener::connect_with(&pool)
                .await
                .unwrap();
            l.listen(store::TOKENS_REVOKED_CHANNEL).await.unwrap();
            Some(l)
        }
    };
    // Announcements are database-wide: a tenant id no other test uses.
    let t = tid(&format!("announced-{}", std::process::id()));
    s.create_tenant(&t, "a", 1).await.unwrap();
    for id in ["tok_1", "tok_2"] {
        let token = store::ApiToken {
            token_id: id.into(),
            hash: "sha256:00".into(),
            label: "l".into(),
            created_at_ms: 1,
            revoked_at_ms: None,
        };
        s.add_api_token(&t, &token).await.unwrap();
    }
    assert!(s.revoke_api_token(&t, "tok_1", 2).await.unwrap());
    assert!(!s.revoke_api_token(&t, "tok_1", 3).await.unwrap());
    s.set_tenant_disabled(&t, true).await.unwrap();
    s.set_tenant_disabled(&t, false).await.unwrap();
    assert!(s.delete_tenant(&t).await.unwrap());
    let Some(listener) = listener.as_mut() else {
        return;
    };
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), listener.recv())
            .await
            .expect("an announcement within 30 s")
            .unwrap();
        let revoked = store::Revoked::from_payload(n.payload()).expect("a readable payload");
        let ours = match &revoked {
            store::Revoked::Tenant(x) | store::Revoked::Token { tenant: x, .. } => *x == t,
        };
        if ours {
            heard.push(revoked);
        }
    }
    let token = store::Revoked::Token {
        tenant: t.clone(),
        token_id: "tok_1".into(),
    };
    assert_eq!(
        heard,
        [
            token,
            store::Revoked::Tenant(t.clone()),
            store::Revoked::Tenant(t)
        ],
        "the revoke, the disable and the delete, nothing between"
    );
}

async fn list_tenants_pages_by_id(h: &Harness) {
    let s = &*h.store;
    assert!(s.list_tenants(None, 10).await.unwrap().is_empty());
    for (id, at) in [("t-c", 3), ("t-a", 1), ("t-b", 2)] {
        s.create_tenant(&tid(id), &format!("name {id}"), at)
            .await
            .unwrap();
    }
    s.set_tenant_disabled(&tid("t-b"), true).await.unwrap();
    let all = s.list_tenants(None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t-a", "t-b", "t-c"]);
    assert_eq!(all[1].name, "name t-b");
    assert!(all[1].disabled && !all[0].disabled);
    assert_eq!(all[2].created_at_ms, 3);
    // Keyset paging: strictly after the last id of the previous page.
    let first = s.list_tenants(None, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = s.list_tenants(Some(&first[1].id), 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id.as_str(), "t-c");
    assert!(
        s.list_tenants(Some(&tid("t-c")), 2)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted tenants are gone from the listing; bad limits are refused.
    assert!(s.delete_tenant(&tid("t-a")).await.unwrap());
    assert_eq!(s.list_tenants(None, 10).await.unwrap().len(), 2);
    for bad in [0, 1001] {
        assert!(matches!(
            s.list_tenants(None, bad).await.unwrap_err(),
            StoreError::InvalidInput(_)
        ));
    }
}

async fn migrations_idempotent_on_reopen(h: &Harness) {
    let (t, lease) = tenant_with_lease(&*h.store, "persist").await;
    h.store
        .commit_batch(&t, &batch("p:0", &lease, vec![record("006A", "901")]))
        .await
        .unwrap();
    // Opening again runs the migrator again: no error, data intact, leases intact.
    for _ in 0..2 {
        let reopened = h.reopen().await;
        let links = reopened
            .links_by_salesforce_ids(&t, PAIR, &ids(&["006A"]))
            .await
            .unwrap();
        assert_eq!(links.len(), 1);
        assert!(
            reopened
                .try_acquire_lease(&t, "other", 1_000, 1)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn open_rejects_unknown_schemes_and_bad_config() {
    for url in ["mysql://x", "nonsense"] {
        let err = store::open(url).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::UnsupportedScheme(_) | StoreError::InvalidUrl(_)
            ),
            "{url}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let bad = StoreConfig {
        max_connections: 0,
        ..StoreConfig::default()
    };
    assert!(matches!(
        store::open_with(&url, bad).await.unwrap_err(),
        StoreError::InvalidInput(_)
    ));
    // The concrete type is usable directly too.
    let direct = SqliteStore::open(&url, StoreConfig::default())
        .await
        .unwrap();
    direct.close().await;
}

async fn sync_schedule_pause_request_and_backoff(h: &Harness) {
    let s = &*h.store;
    let t = tid("sched-job");
    s.create_tenant(&t, "job", 0).await.unwrap();
    let job = s.sync_job(&t).await.unwrap().unwrap();
    assert_eq!(
        (
            job.interval_ms,
            job.paused,
            job.run_requested,
            job.consecutive_failures
        ),
        (60_000, false, false, 0)
    );
    assert_eq!(job.plugin_config, json!({}));
    assert!(s.sync_job(&tid("nobody")).await.unwrap().is_none());

    // A paused tenant is never picked; resumed, it is.
    s.set_sync_paused(&t, true).await.unwrap();
    assert!(
        s.acquire_next_due_tenant("r", 1_000, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.set_sync_paused(&t, false).await.unwrap().paused);
    let lease = s
        .acquire_next_due_tenant("r", 1_000, 10)
        .await
        .unwrap()
        .unwrap();
    assert!(!s.sync_job(&t).await.unwrap().unwrap().leased_for_sync_now);

    // A request during the run keeps the tenant due when the run ends: due from the
    // run's start (10, when it was leased; not 0, when it was created), not at the
    // rescheduled 60_020.
    let job = s.request_sync(&t, 20).await.unwrap();
    assert!(job.run_requested && job.sync_now_requested, "{job:?}");
    s.finish_job(&lease, 60_020, 0).await.unwrap();
    let job = s.sync_job(&t).await.unwrap().unwrap();
    assert_eq!(
        (job.next_due_at_ms, job.run_requested),
        (10, false),
        "{job:?}"
    );
    assert!(job.lease_holder.is_none());

    // Picking the tenant clears the request; without one, the end of the run reschedules
    // it and records the failures in a row.
    s.request_sync(&t, 30).await.unwrap();
    let lease = s
        .acquire_next_due_tenant("r", 1_000, 40)
        .await
        .unwrap()
        .unwrap();
    let job = s.sync_job(&t).await.unwrap().unwrap();
    assert!(!job.run_requested);
    // That lease was taken for the sync now: its run is a manual one.
    assert_eq!(
        (job.sync_now_requested, job.leased_for_sync_now),
        (false, true)
    );
    s.finish_job(&lease, 5_000, 2).await.unwrap();
    let job = s.sync_job(&t).await.unwrap().unwrap();
    assert_eq!((job.next_due_at_ms, job.consecutive_failures), (5_000, 2));
    let err = s.finish_job(&lease, 9, 0).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(s.sync_job(&t).await.unwrap().unwrap().next_due_at_ms, 5_000);

    // A shorter interval takes effect at once; a longer one does not delay a due run.
    let job = s.set_sync_interval(&t, 1_000, 100).await.unwrap();
    assert_eq!((job.interval_ms, job.next_due_at_ms), (1_000, 1_100));
    let job = s.set_sync_interval(&t, 90_000, 100).await.unwrap();
    assert_eq!((job.interval_ms, job.next_due_at_ms), (90_000, 1_100));
    let err = s.set_sync_interval(&t, 0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");

    let cfg = json!({"rules": {"opportunity-deal": {"Amount": "two-way"}}, "n": 1.10});
    assert_eq!(
        s.set_plugin_config(&t, &cfg).await.unwrap().plugin_config,
        cfg
    );
    assert_eq!(s.sync_job(&t).await.unwrap().unwrap().plugin_config, cfg);
    let err = s.set_plugin_config(&t, &json!([1])).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    for err in [
        s.set_sync_paused(&tid("nobody"), true).await.unwrap_err(),
        s.request_sync(&tid("nobody"), 1).await.unwrap_err(),
        s.set_sync_interval(&tid("nobody"), 1, 1).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }
}

async fn pending_resyncs_are_fenced_and_tenant_scoped(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "resync-a").await;
    let (other, _) = tenant_with_lease(s, "resync-b").await;
    let records = ResyncRequest::Records {
        object_pair: PAIR,
        side: Side::Salesforce,
        ids: ids(&["006000000000001AAA"]),
    };
    let first = s
        .request_resync(&t, &ResyncRequest::All, 100)
        .await
        .unwrap();
    let second = s.request_resync(&t, &records, 200).await.unwrap();
    assert_eq!(second.request, records);
    assert!(first.done_at_ms.is_none() && first.outcome.is_none());
    // Asking for a resync makes the tenant due and marks a run as asked for.
    let job = s.sync_job(&t).await.unwrap().unwrap();
    assert!(job.run_requested);
    assert!(!job.sync_now_requested, "a resync is not a sync now");
    assert!(job.next_due_at_ms <= 100);

    let pending = s.pending_resyncs(&t, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![first.id, second.id]
    );
    assert!(s.pending_resyncs(&other, 10).await.unwrap().is_empty());
    assert!(s.resync_request(&other, first.id).await.unwrap().is_none());

    // Only the current lease completes one, once.
    let stale = Lease {
        fencing_token: lease.fencing_token - 1,
        ..lease.clone()
    };
    let err = s
        .complete_resync(&stale, first.id, None, "succeeded", 300)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(
        s.complete_resync(&lease, first.id, Some(7), "succeeded", 300)
            .await
            .unwrap()
    );
    assert!(
        !s.complete_resync(&lease, first.id, Some(8), "failed", 400)
            .await
            .unwrap()
    );
    let done = s.resync_request(&t, first.id).await.unwrap().unwrap();
    assert_eq!(
        (done.done_at_ms, done.run_id, done.outcome.as_deref()),
        (Some(300), Some(7), Some("succeeded"))
    );
    assert_eq!(s.pending_resyncs(&t, 10).await.unwrap().len(), 1);
    // Another tenant's lease (valid for that tenant: same holder, same token) cannot
    // complete this tenant's resync.
    let other_lease = Lease {
        tenant: other.clone(),
        ..lease.clone()
    };
    assert!(
        !s.complete_resync(&other_lease, second.id, None, "x", 1)
            .await
            .unwrap()
    );
    let still = s.resync_request(&t, second.id).await.unwrap().unwrap();
    assert!(still.done_at_ms.is_none());

    for bad in [
        vec![],
        vec![String::new()],
        (0..101).map(|i| i.to_string()).collect(),
    ] {
        let err = s
            .request_resync(
                &t,
                &ResyncRequest::Records {
                    object_pair: PAIR,
                    side: Side::HubSpot,
                    ids: bad,
                },
                1,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    let err = s
        .request_resync(&tid("nobody"), &ResyncRequest::All, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

// ---------------------------------------------------------------- the HubSpot change feed

fn hs_change(
    event_id: u64,
    object_type: &str,
    object_id: &str,
    kind: &str,
    at: i64,
) -> NewHubSpotChange {
    NewHubSpotChange {
        event_id,
        object_type: object_type.into(),
        object_id: object_id.into(),
        kind: kind.into(),
        property: (kind == "property").then(|| "amount".to_string()),
        occurred_at_ms: at,
        change_source: "CRM_UI".into(),
        source_id: Some("userId:7".into()),
    }
}

fn settled(object_type: &str, object_id: &str, up_to_seq: i64) -> SettledHubSpotChange {
    SettledHubSpotChange {
        object_type: object_type.into(),
        object_id: object_id.into(),
        up_to_seq,
    }
}

/// The pending record `object_id` of `object_type`.
async fn pending_of(
    s: &dyn Store,
    t: &TenantId,
    object_type: &str,
    object_id: &str,
) -> Option<PendingHubSpotChange> {
    s.pending_hubspot_changes(t, object_type, 1_000)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.object_id == object_id)
}

/// A pending record without its store-assigned sequence number: (id, last time, deleted).
fn pending_shape(p: &PendingHubSpotChange) -> (&str, i64, bool) {
    (p.object_id.as_str(), p.last_occurred_at_ms, p.deleted)
}

async fn hubspot_changes_are_idempotent_grouped_and_tenant_scoped(h: &Harness) {
    let s = &*h.store;
    let (t, _) = tenant_with_lease(s, "feed").await;
    let (t2, _) = tenant_with_lease(s, "feed-other").await;
    // Three deliveries: deal 300 arrives first although its event id is the largest.
    assert_eq!(
        s.record_hubspot_changes(
            &t,
            &[hs_change(30, "deals", "300", "created", 1_000)],
            5_000
        )
        .await
        .unwrap(),
        1
    );
    let second = [
        hs_change(10, "deals", "100", "property", 1_000),
        hs_change(11, "deals", "100", "property", 1_200),
        hs_change(40, "companies", "100", "property", 1_000),
    ];
    assert_eq!(
        s.record_hubspot_changes(&t, &second, 5_000).await.unwrap(),
        3
    );
    assert_eq!(
        s.record_hubspot_changes(
            &t,
            &[hs_change(20, "deals", "200", "property", 1_100)],
            5_000
        )
        .await
        .unwrap(),
        1
    );
    // A redelivery (the same events) inserts nothing; only the new event counts.
    let again = [
        hs_change(11, "deals", "100", "property", 1_200),
        hs_change(12, "deals", "100", "deleted", 1_300),
        hs_change(20, "deals", "200", "property", 1_100),
    ];
    assert_eq!(
        s.record_hubspot_changes(&t, &again, 6_000).await.unwrap(),
        1
    );
    assert_eq!(s.record_hubspot_changes(&t, &[], 6_000).await.unwrap(), 0);
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 6);

    // One row per record, in the order the records' oldest pending rows arrived.
    let deals = s.pending_hubspot_changes(&t, "deals", 100).await.unwrap();
    assert_eq!(
        deals.iter().map(pending_shape).collect::<Vec<_>>(),
        [
            ("300", 1_000, false),
            ("100", 1_300, true),
            ("200", 1_100, false)
        ]
    );
    // A record's last sequence number is that of its latest arrival: deal 100's deletion
    // arrived last of all.
    assert!(deals[0].last_seq < deals[2].last_seq, "{deals:?}");
    assert!(deals[2].last_seq < deals[1].last_seq, "{deals:?}");
    let limited = s.pending_hubspot_changes(&t, "deals", 2).await.unwrap();
    assert_eq!(limited, deals[..2]);
    let companies = s
        .pending_hubspot_changes(&t, "companies", 10)
        .await
        .unwrap();
    assert_eq!(
        companies.iter().map(pending_shape).collect::<Vec<_>>(),
        [("100", 1_000, false)]
    );
    assert!(companies[0].last_seq < deals[2].last_seq);
    assert!(
        s.pending_hubspot_changes(&t, "contacts", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted means the latest change is a deletion: a later change clears it.
    s.record_hubspot_changes(
        &t,
        &[hs_change(13, "deals", "100", "created", 1_400)],
        7_000,
    )
    .await
    .unwrap();
    let deal = pending_of(s, &t, "deals", "100").await.unwrap();
    assert_eq!(pending_shape(&deal), ("100", 1_400, false));
    assert!(deal.last_seq > deals[1].last_seq);
    // Latest by time, not by arrival: a deletion that happened earlier arrives late.
    s.record_hubspot_changes(&t, &[hs_change(9, "deals", "100", "deleted", 1_350)], 7_500)
        .await
        .unwrap();
    let deal = pending_of(s, &t, "deals", "100").await.unwrap();
    assert_eq!(pending_shape(&deal), ("100", 1_400, false));
    assert!(matches!(
        s.pending_hubspot_changes(&t, "deals", 0).await,
        Err(StoreError::InvalidInput(_))
    ));

    // The same event id in another tenant is another row; neither sees the other's.
    assert_eq!(s.pending_hubspot_change_count(&t2).await.unwrap(), 0);
    assert!(
        s.pending_hubspot_changes(&t2, "deals", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.record_hubspot_changes(&t2, &[hs_change(10, "deals", "999", "property", 1)], 1)
            .await
            .unwrap(),
        1
    );
    let other = s.pending_hubspot_changes(&t2, "deals", 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].object_id, "999");
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 8);
}

async fn hubspot_changes_the_store_cannot_keep_are_left_out_not_the_batch(h: &Harness) {
    let s = &*h.store;
    let (t, _) = tenant_with_lease(s, "feed-bad-rows").await;
    let batch = [
        hs_change(1, "deals", "1", "merged", 1),
        hs_change(2, "deals", "2", "property", 1),
        hs_change(u64::MAX, "deals", "3", "property", 1),
        hs_change(3, "deals", "", "property", 1),
        hs_change(4, "", "4", "created", 1),
        hs_change(i64::MAX as u64, "deals", "5", "deleted", 1),
    ];
    assert_eq!(s.record_hubspot_changes(&t, &batch, 10).await.unwrap(), 2);
    let deals = s.pending_hubspot_changes(&t, "deals", 10).await.unwrap();
    let ids: BTreeSet<&str> = deals.iter().map(|p| p.object_id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["2", "5"]));
    // Nothing but bad rows stores nothing, and fails nothing.
    assert_eq!(
        s.record_hubspot_changes(&t, &batch[..1], 10).await.unwrap(),
        0
    );
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 2);
}

async fn hubspot_changes_that_share_an_event_id_are_all_kept(h: &Harness) {
    let s = &*h.store;
    let (t, _) = tenant_with_lease(s, "feed-shared-ids").await;
    let base = hs_change(50, "deals", "500", "property", 1_000);
    let with = |f: &dyn Fn(&mut NewHubSpotChange)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    // HubSpot does not promise unique event ids: each of these is another event.
    let events = [
        base.clone(),
        with(&|c| c.object_id = "501".into()),
        with(&|c| c.object_type = "companies".into()),
        with(&|c| c.property = Some("dealname".into())),
        with(&|c| c.occurred_at_ms = 1_001),
        with(&|c| {
            c.kind = "created".into();
            c.property = None;
        }),
    ];
    assert_eq!(s.record_hubspot_changes(&t, &events, 10).await.unwrap(), 6);
    // Delivered again, in one request or one by one, none is stored twice, whoever the
    // source; a missing property and an empty one are the same.
    assert_eq!(s.record_hubspot_changes(&t, &events, 20).await.unwrap(), 0);
    for e in &events {
        let mut again = e.clone();
        again.change_source = "IMPORT".into();
        assert_eq!(s.record_hubspot_changes(&t, &[again], 30).await.unwrap(), 0);
    }
    let empty_property = with(&|c| {
        c.kind = "created".into();
        c.property = Some(String::new());
    });
    assert_eq!(
        s.record_hubspot_changes(&t, &[empty_property], 40)
            .await
            .unwrap(),
        0
    );
    // Two copies of a new event in one request are one row.
    let fresh = with(&|c| c.event_id = 51);
    assert_eq!(
        s.record_hubspot_changes(&t, &[fresh.clone(), fresh], 50)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 7);
}

async fn hubspot_changes_settle_with_the_batch_up_to_their_sequence(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "feed-commit").await;
    let (t2, _) = tenant_with_lease(s, "feed-commit-other").await;
    let changes = [
        hs_change(101, "deals", "100", "property", 1_000),
        hs_change(102, "deals", "100", "property", 1_100),
        hs_change(103, "deals", "200", "property", 1_100),
        hs_change(104, "companies", "100", "property", 1_100),
    ];
    s.record_hubspot_changes(&t, &changes, 2_000).await.unwrap();
    s.record_hubspot_changes(&t2, &changes, 2_000)
        .await
        .unwrap();
    // The batch read deals 100 and 200 as they are now.
    let read = s.pending_hubspot_changes(&t, "deals", 10).await.unwrap();
    let up_to: Vec<SettledHubSpotChange> = read
        .iter()
        .map(|p| settled("deals", &p.object_id, p.last_seq))
        .collect();
    // Meanwhile a newer change of deal 100 arrived, with a smaller event id than those
    // read (HubSpot's ids do not grow with time): it must survive the settle.
    s.record_hubspot_changes(
        &t,
        &[hs_change(7, "deals", "100", "property", 1_500)],
        2_500,
    )
    .await
    .unwrap();
    let b = CommitBatch {
        settled_hubspot_changes: up_to,
        ..batch("feed:0", &lease, vec![record("006A", "100")])
    };
    let out = s.commit_batch(&t, &b).await.unwrap();
    assert_eq!(out.hubspot_changes_settled, 3);
    let deals = s.pending_hubspot_changes(&t, "deals", 10).await.unwrap();
    assert_eq!(
        deals.iter().map(pending_shape).collect::<Vec<_>>(),
        [("100", 1_500, false)],
        "the newer change stays pending"
    );
    let newer = deals[0].last_seq;
    assert!(read.iter().all(|p| p.last_seq < newer), "{read:?} {newer}");
    // Another object type with the same id is untouched, and so is another tenant.
    assert_eq!(
        s.pending_hubspot_changes(&t, "companies", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.pending_hubspot_change_count(&t2).await.unwrap(), 4);
    // The same batch again changes nothing (already committed).
    let again = s.commit_batch(&t, &b).await.unwrap();
    assert!(again.already_committed);
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 2);

    // A batch under a stale lease settles nothing.
    let taken = s
        .try_acquire_lease(&t, "replica-b", 60_000, 1_000_000)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    let stale = CommitBatch {
        settled_hubspot_changes: vec![settled("deals", "100", newer)],
        ..batch("feed:1", &lease, vec![record("006B", "101")])
    };
    let err = s.commit_batch(&t, &stale).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 2);
    let fresh = CommitBatch {
        settled_hubspot_changes: vec![settled("deals", "100", newer)],
        ..batch("feed:1", &taken, vec![record("006B", "101")])
    };
    assert_eq!(
        s.commit_batch(&t, &fresh)
            .await
            .unwrap()
            .hubspot_changes_settled,
        1
    );
    assert!(
        s.pending_hubspot_changes(&t, "deals", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn hubspot_changes_settle_alone_only_under_the_current_lease(h: &Harness) {
    let s = &*h.store;
    let (t, lease) = tenant_with_lease(s, "feed-settle").await;
    s.record_hubspot_changes(
        &t,
        &[hs_change(1, "contacts", "7", "property", 1_000)],
        2_000,
    )
    .await
    .unwrap();
    let first = pending_of(s, &t, "contacts", "7").await.unwrap().last_seq;
    // The deletion arrives later, with a smaller event id.
    s.record_hubspot_changes(
        &t,
        &[
            hs_change(0, "contacts", "7", "deleted", 1_100),
            hs_change(3, "contacts", "8", "created", 1_100),
        ],
        2_000,
    )
    .await
    .unwrap();
    let second = pending_of(s, &t, "contacts", "7").await.unwrap();
    assert!(second.deleted && second.last_seq > first, "{second:?}");
    let taken = s
        .try_acquire_lease(&t, "replica-b", 60_000, 1_000_000)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    let err = s
        .settle_hubspot_changes(&lease, &[settled("contacts", "7", second.last_seq)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 3);
    // Settling what was read first leaves the deletion that came after.
    assert_eq!(
        s.settle_hubspot_changes(&taken, &[settled("contacts", "7", first)])
            .await
            .unwrap(),
        1
    );
    let seven = pending_of(s, &t, "contacts", "7").await.unwrap();
    assert_eq!(seven, second);
    // Settling again, or past what is there, is harmless.
    assert_eq!(
        s.settle_hubspot_changes(
            &taken,
            &[
                settled("contacts", "7", second.last_seq),
                settled("contacts", "7", second.last_seq)
            ]
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        s.settle_hubspot_changes(&taken, &[settled("contacts", "7", i64::MAX)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.pending_hubspot_change_count(&t).await.unwrap(), 1);
    assert!(pending_of(s, &t, "contacts", "8").await.is_some());
}
