//! End-to-end tests of the HubSpot webhook feed (`[hubspot.webhooks]`), against the
//! in-process emulators over real HTTP: the emulated HubSpot app delivers signed events to
//! the engine's receiver, which keeps only the changes someone other than dealbridge made.
//!
//! - A backfill into an empty portal reads nothing back (the portal held nothing before
//!   it, and the feed names every record a person changed meanwhile), yet an edit a
//!   person makes in HubSpot while it runs reaches Salesforce in the same cycle.
//! - dealbridge's own writes never come back through the feed.
//! - An archive in HubSpot marks the link at once and leaves the Salesforce record.
//! - Into a portal with records of its own, the backfill reads only what HubSpot held
//!   before it started.
//! - A feed that refused a delivery while the backfill ran is not trusted: the backfill
//!   reads back what it wrote.
//! - Without the feed, the same backfill still reads back what it wrote (the safe path).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dealbridge::crm::hubspot::HubSpotClient;
use dealbridge::store::{LinkState, ObjectPair, Store, TenantId};
use dealbridge_e2e::{Emu, World, world_empty_portal};

fn tenant() -> TenantId {
    TenantId::new("demo").unwrap()
}

/// HubSpot search calls the emulator answered.
async fn hubspot_searches(w: &World) -> u64 {
    w.calls_with(Emu::HubSpot, "/search", 200).await
}

/// The deal of the first opportunity link.
async fn first_deal(store: &Arc<dyn Store>) -> (String, String) {
    let links = store
        .links(&tenant(), ObjectPair::OpportunityDeal, None, 1)
        .await
        .unwrap();
    let l = links.first().expect("an opportunity is linked");
    (l.salesforce_id.clone(), l.hubspot_id.clone())
}

async fn set_description(person: &HubSpotClient, deal: &str, text: &str) {
    person
        .update(
            "deals",
            deal,
            &[("description".to_string(), text.to_string())]
                .into_iter()
                .collect(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_the_feed_reads_nothing_back_and_misses_no_edit_made_meanwhile() {
    let w = world_empty_portal(60).await;
    let cfg = w.config_with_feed("");
    let mut e = w.engine_with_feed(&cfg, "a").await;
    let feed = e.setup().webhook_feed.expect("the feed is on");
    assert!(feed.verified, "set-up verified the subscriptions: {feed:?}");

    // While the backfill runs, once the opportunities' Salesforce pass wrote its deals
    // and before their HubSpot pass: a person edits one of them in HubSpot, and HubSpot
    // delivers that change (and every event before it) to the receiver.
    let store = e.store().clone();
    let hubspot = w.emu.hubspot.clone();
    let person = w.hubspot_person();
    let edited: Arc<std::sync::Mutex<Option<(String, String)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    {
        let (edited, done) = (edited.clone(), done.clone());
        e.on_progress(Arc::new(move |pair, _, _| {
            if pair != ObjectPair::OpportunityDeal.as_str() || done.swap(true, Ordering::SeqCst) {
                return;
            }
            let (store, person, edited) = (store.clone(), person.clone(), edited.clone());
            let hubspot = hubspot.clone();
            tokio::task::block_in_place(move || {
                tokio::runtime::Handle::current().block_on(async move {
                    let (sf, hs) = first_deal(&store).await;
                    set_description(&person, &hs, "edited in HubSpot during the backfill").await;
                    assert!(hubspot.wait_webhooks_idle(Duration::from_secs(30)).await);
                    let pending = store
                        .pending_hubspot_changes(&tenant(), "deals", 100)
                        .await
                        .unwrap();
                    // Only the person's edit: dealbridge's own creates never reach the feed.
                    let ids: Vec<&str> = pending.iter().map(|p| p.object_id.as_str()).collect();
                    assert_eq!(ids, vec![hs.as_str()]);
                    *edited.lock().unwrap() = Some((sf, hs));
                })
            });
        }));
    }
    w.reset_accounting().await;
    let r = e.run_cycle().await.unwrap();
    assert!(r.counters.created_hubspot > 60, "{:?}", r.counters);
    let (sf_id, hs_id) = edited
        .lock()
        .unwrap()
        .clone()
        .expect("the edit was made during the backfill");
    // Three searches found the portal empty, and once every create had come back through
    // the feed one per pair found nothing created before the first of them: nothing read
    // back. The one HubSpot record read is the deal the person edited.
    assert_eq!(
        hubspot_searches(&w).await,
        6,
        "{}",
        w.requests(Emu::HubSpot).await
    );
    assert_eq!(r.counters.read_hubspot, 1, "{:?}", r.counters);

    // The deals' HubSpot pass read that deal by id from the feed and brought the edit to
    // Salesforce; the feed is empty (nothing of dealbridge's own writes either).
    let opp =
        w.sf.get("Opportunity", &sf_id, Some(&["Description"]))
            .await
            .unwrap();
    assert_eq!(
        opp.str_field("Description"),
        Some("edited in HubSpot during the backfill")
    );
    w.webhooks_delivered().await;
    assert_eq!(
        e.store()
            .pending_hubspot_change_count(&tenant())
            .await
            .unwrap(),
        0
    );
    assert!(
        hs_id.parse::<u64>().is_ok(),
        "the edited deal {hs_id} is a HubSpot id"
    );
    // A cycle after that writes nothing.
    let quiet = e.run_cycle().await.unwrap();
    assert_eq!(
        (
            quiet.counters.updated_hubspot,
            quiet.counters.updated_salesforce
        ),
        (0, 0),
        "{:?}",
        quiet.counters
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_in_hubspot_marks_the_link_at_once_and_keeps_the_salesforce_record() {
    let w = world_empty_portal(20).await;
    let cfg = w.config_with_feed("");
    let mut e = w.engine_with_feed(&cfg, "a").await;
    e.run_cycle().await.unwrap();
    let (sf_id, hs_id) = first_deal(e.store()).await;
    w.hubspot_person().archive("deals", &hs_id).await.unwrap();
    w.webhooks_delivered().await;
    e.run_cycle().await.unwrap();
    let links = e
        .store()
        .links_by_hubspot_ids(
            &tenant(),
            ObjectPair::OpportunityDeal,
            std::slice::from_ref(&hs_id),
        )
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].state, LinkState::HubSpotArchived);
    let opp =
        w.sf.get("Opportunity", &sf_id, Some(&["Name"]))
            .await
            .unwrap();
    assert!(
        opp.str_field("Name").is_some(),
        "the opportunity is still there"
    );
    assert_eq!(
        e.store()
            .pending_hubspot_change_count(&tenant())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feed_a_backfill_reads_back_what_it_wrote() {
    let w = world_empty_portal(60).await;
    let cfg = w.config("");
    let mut e = w.engine(&cfg, "a").await;
    assert!(e.setup().webhook_feed.is_none());
    w.reset_accounting().await;
    e.run_cycle().await.unwrap();
    // The three emptiness checks, and at least one read-back page per object type.
    assert!(
        hubspot_searches(&w).await >= 6,
        "{}",
        w.requests(Emu::HubSpot).await
    );
}

/// Into a portal with records of its own, the feed's backfill reads only what HubSpot held
/// before it started (created before it), not what it wrote, and links the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_a_portal_with_records_the_feed_reads_only_what_was_there_before() {
    let plain = dealbridge_e2e::world(60).await;
    let mut e = plain.engine(&plain.config(""), "a").await;
    let without = e.run_cycle().await.unwrap().counters;

    let fed = dealbridge_e2e::world(60).await;
    let mut e = fed.engine_with_feed(&fed.config_with_feed(""), "a").await;
    let with = e.run_cycle().await.unwrap().counters;

    assert!(with.created_hubspot > 0, "{with:?}");
    assert_eq!(
        (with.created_hubspot, with.created_salesforce, with.failed),
        (
            without.created_hubspot,
            without.created_salesforce,
            without.failed
        )
    );
    // Without the feed the backfill reads back what it wrote, each an echo of its own
    // write; with it, only what HubSpot held before (among them the records it updated):
    // every record read fewer is a create not read back.
    assert!(
        with.echoes_suppressed < without.echoes_suppressed,
        "with {with:?}\nwithout {without:?}"
    );
    assert_eq!(
        without.read_hubspot - with.read_hubspot,
        without.echoes_suppressed - with.echoes_suppressed,
        "with {with:?}\nwithout {without:?}"
    );
}

/// A delivery the receiver refuses while a backfill runs (here one with no signature) means
/// the feed may be losing changes: the backfill reads back what it wrote, as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_during_the_backfill_brings_the_read_back_back() {
    let w = world_empty_portal(60).await;
    let cfg = w.config_with_feed("");
    let mut e = w.engine_with_feed(&cfg, "a").await;
    let target = w
        .emu
        .hubspot
        .webhooks()
        .settings()
        .expect("set-up pointed the app at the receiver")
        .target_url;
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        // Once the opportunities' Salesforce pass wrote its deals.
        e.on_progress(Arc::new(move |pair, _, _| {
            if pair != ObjectPair::OpportunityDeal.as_str() || done.swap(true, Ordering::SeqCst) {
                return;
            }
            let target = target.clone();
            tokio::task::block_in_place(move || {
                tokio::runtime::Handle::current().block_on(async move {
                    let status = reqwest::Client::new()
                        .post(&target)
                        .json(&serde_json::json!([]))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(status.as_u16(), 401);
                })
            });
        }));
    }
    let r = e.run_cycle().await.unwrap();
    assert!(done.load(Ordering::SeqCst));
    // The deals it created were read back, each an echo of its own write (with a feed that
    // refused nothing, none is: the first test).
    assert!(r.counters.echoes_suppressed > 0, "{:?}", r.counters);
}
