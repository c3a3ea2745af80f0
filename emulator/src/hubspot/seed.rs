//! Deterministic seeding of the emulated portal: owners (the shared sales
//! team members who have HubSpot), the default pipeline, and — unless the seed
//! is `Empty` — companies, contacts and deals of the portal's own, associated
//! as a real portal would be.
//!
//! The same seed always gives the same portal (ids, values and timestamps), so
//! snapshots of two runs compare equal. Must never depend on the wall clock or
//! on global randomness.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use super::schema::ObjectType;
use super::store::{HUBSPOT_DEFINED, Owner, PORTAL_EPOCH_MS, Store};
use crate::Seed;
use crate::control::Faults;
use crate::people::SALES_TEAM;

/// 2026-01-01T00:00:00Z: seeded records are created in the months before it.
const SEED_BASE_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

const COMPANY_WORDS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Hooli",
    "Vandelay",
    "Wonka",
];
const COMPANY_KINDS: &[&str] = &[
    "Industries",
    "Labs",
    "Logistics",
    "Systems",
    "Foods",
    "Analytics",
];
const FIRST: &[&str] = &[
    "Maria", "James", "Aiko", "Lars", "Priya", "Tomasz", "Chloe", "Diego", "Fatima", "Noah",
    "Ingrid", "Kwame",
];
const LAST: &[&str] = &[
    "Garcia", "Smith", "Tanaka", "Jensen", "Patel", "Nowak", "Martin", "Silva", "Haddad", "Brown",
    "Berg", "Mensah",
];
const PRODUCTS: &[&str] = &[
    "Platform licence",
    "Renewal",
    "Expansion",
    "Pilot",
    "Support plan",
    "Onboarding",
];
const STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// How many records a numbered seed creates.
pub const SEED_COMPANIES: usize = 12;
pub const SEED_CONTACTS: usize = 36;
pub const SEED_DEALS: usize = 30;

/// The owners: every person of the shared sales team who is in HubSpot.
fn owners() -> Vec<Owner> {
    SALES_TEAM
        .iter()
        .filter(|p| p.in_hubspot)
        .enumerate()
        .map(|(i, p)| Owner {
            id: 41_000_001 + i as u64 * 7,
            email: p.email.to_string(),
            first_name: p.first_name.to_string(),
            last_name: p.last_name.to_string(),
            user_id: 9_100_001 + i as u64,
            created_ms: PORTAL_EPOCH_MS + i as i64 * DAY_MS,
        })
        .collect()
}

fn props(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn create(
    s: &mut Store,
    ot: ObjectType,
    p: Map<String, Value>,
    now: i64,
    faults: &Faults,
) -> Option<u64> {
    let changes = s.validate(ot, None, &p).ok()?;
    s.apply(ot, None, changes, now, faults).ok()
}

/// Builds the portal for a seed.
pub fn build(seed: &Seed) -> Store {
    let mut s = Store::new();
    s.owners = owners();
    let Some(n) = seed.number() else { return s };
    let faults = Faults::default();
    let mut rng = StdRng::seed_from_u64(n);
    let owner_ids: Vec<u64> = s.owners.iter().map(|o| o.id).collect();
    let mut companies = Vec::new();
    for i in 0..SEED_COMPANIES {
        let word =
            COMPANY_WORDS[(i + rng.random_range(0..COMPANY_WORDS.len())) % COMPANY_WORDS.len()];
        let kind = COMPANY_KINDS[rng.random_range(0..COMPANY_KINDS.len())];
        let name = format!("{word} {kind} {}", i + 1);
        let domain = format!(
            "{}-{}{}.example.com",
            word.to_lowercase(),
            kind.to_lowercase(),
            i + 1
        );
        let created = SEED_BASE_MS - rng.random_range(200..400) * DAY_MS;
        let p = props(json!({
            "name": name, "domain": domain, "createdate": created.to_string(),
            "industry": (["Software", "Manufacturing", "Retail", "Finance"][rng.random_range(0..4)]),
            "city": (["Berlin", "Austin", "Osaka", "Lagos", "Lima"][rng.random_range(0..5)]),
            "hubspot_owner_id": owner_ids[rng.random_range(0..owner_ids.len())].to_string(),
        }));
        if let Some(id) = create(&mut s, ObjectType::Companies, p, created, &faults) {
            companies.push((id, domain));
        }
    }
    let mut contacts: Vec<(u64, u64)> = Vec::new();
    for i in 0..SEED_CONTACTS {
        let (company, domain) = companies[i % companies.len()].clone();
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let created = SEED_BASE_MS - rng.random_range(100..200) * DAY_MS;
        let p = props(json!({
            "firstname": first, "lastname": last, "email": format!("{}.{}{}@{domain}", first.to_lowercase(), last.to_lowercase(), i + 1),
            "jobtitle": (["CTO", "Head of Sales", "Buyer", "CFO", "Engineer"][rng.random_range(0..5)]),
            "lifecyclestage": (["lead", "opportunity", "customer"][rng.random_range(0..3)]),
            "createdate": created.to_string(),
        }));
        if let Some(id) = create(&mut s, ObjectType::Contacts, p, created, &faults) {
            let _ = s.associate(
                (ObjectType::Contacts, id),
                (ObjectType::Companies, company),
                HUBSPOT_DEFINED,
                1,
            );
            contacts.push((id, company));
        }
    }
    for i in 0..SEED_DEALS {
        let (company, _) = companies[rng.random_range(0..companies.len())].clone();
        let name_of = s
            .table(ObjectType::Companies)
            .records()
            .get(&company)
            .and_then(|r| r.props.get("name").cloned())
            .unwrap_or_default();
        let created =
            SEED_BASE_MS - rng.random_range(1..100) * DAY_MS - rng.random_range(0..DAY_MS);
        let close = SEED_BASE_MS + rng.random_range(-60..120) * DAY_MS;
        let amount = rng.random_range(10..2000) * 100;
        let p = props(json!({
            "dealname": format!("{name_of} - {} {}", PRODUCTS[rng.random_range(0..PRODUCTS.len())], i + 1),
            "amount": amount.to_string(),
            "dealstage": STAGES[rng.random_range(0..STAGES.len())],
            "pipeline": "default",
            "closedate": close.to_string(),
            "dealtype": (["newbusiness", "existingbusiness"][rng.random_range(0..2)]),
            "hubspot_owner_id": owner_ids[rng.random_range(0..owner_ids.len())].to_string(),
            "createdate": created.to_string(),
        }));
        let Some(deal) = create(
            &mut s,
            ObjectType::Deals,
            p,
            created + rng.random_range(0..30) * DAY_MS,
            &faults,
        ) else {
            continue;
        };
        let _ = s.associate(
            (ObjectType::Deals, deal),
            (ObjectType::Companies, company),
            HUBSPOT_DEFINED,
            5,
        );
        let of_company: Vec<u64> = contacts
            .iter()
            .filter(|(_, c)| *c == company)
            .map(|(id, _)| *id)
            .collect();
        let take = rng.random_range(0..=of_company.len().min(2));
        for cid in of_company.iter().take(take) {
            let _ = s.associate(
                (ObjectType::Deals, deal),
                (ObjectType::Contacts, *cid),
                HUBSPOT_DEFINED,
                3,
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_portal_and_different_seeds_differ() {
        let a = build(&Seed::Number(7)).snapshot();
        let b = build(&Seed::Number(7)).snapshot();
        assert_eq!(a, b);
        let c = build(&Seed::Number(8)).snapshot();
        assert_ne!(a["objects"], c["objects"]);
        assert_eq!(a["objects"]["deals"].as_array().unwrap().len(), SEED_DEALS);
        assert_eq!(
            a["objects"]["contacts"].as_array().unwrap().len(),
            SEED_CONTACTS
        );
    }

    #[test]
    fn empty_seed_has_metadata_only() {
        let s = build(&Seed::Empty);
        assert_eq!(
            s.owners.len(),
            SALES_TEAM.iter().filter(|p| p.in_hubspot).count()
        );
        assert_eq!(s.pipelines[0].id, "default");
        assert!(s.table(ObjectType::Deals).records().is_empty());
    }

    #[test]
    fn seeded_contacts_have_consistent_rollups() {
        let s = build(&Seed::Demo);
        let mut with_deals = 0;
        for c in s.table(ObjectType::Contacts).records().values() {
            let deals = s
                .associations((ObjectType::Contacts, c.id), ObjectType::Deals)
                .len();
            if deals > 0 {
                with_deals += 1;
                assert_eq!(
                    c.props.get("num_associated_deals"),
                    Some(&deals.to_string())
                );
            }
        }
        assert!(with_deals > 0, "the demo portal has contacts with deals");
    }
}
