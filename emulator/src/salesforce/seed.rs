//! Deterministic seeding of the demo org: users from [`crate::people`], the
//! integration user, Opportunity record types, the standard stages, accounts,
//! contacts, opportunities and contact roles.
//!
//! The same seed always gives the same records (timestamps are relative to
//! the start of the current UTC day). It writes rows directly, bypassing
//! validation, and must only produce rows that validation would accept.

use chrono::{Duration, NaiveTime, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::ids::make_id;
use super::schema::{CURRENCIES, ROLES, STAGES, obj};
use super::store::{Org, Row};
use super::value::Val;
use crate::people::SALES_TEAM;

/// How many records to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedSizes {
    pub accounts: usize,
    pub contacts: usize,
    pub opportunities: usize,
}

impl Default for SeedSizes {
    fn default() -> Self {
        SeedSizes {
            accounts: 300,
            contacts: 1000,
            opportunities: 3000,
        }
    }
}

/// The emulator's own API user (the one the printed credentials log in as).
pub const INTEGRATION_USERNAME: &str = "integration@dealbridge.example";
pub const INTEGRATION_EMAIL: &str = "integration@dealbridge.example";

const COMPANIES_A: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Hooli",
    "Vandelay",
    "Pied Piper",
    "Dunder",
    "Aperture",
    "Black Mesa",
    "Gringotts",
    "Oscorp",
    "Massive",
    "Nakatomi",
];
const COMPANIES_B: &[&str] = &[
    "Corp",
    "Industries",
    "Labs",
    "Holdings",
    "Systems",
    "Logistics",
    "Foods",
    "Energy",
    "Partners",
    "Group",
];
const FIRST: &[&str] = &[
    "Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn",
    "Robin", "Drew", "Kim", "Lee", "Pat", "Chris",
];
const LAST: &[&str] = &[
    "Smith", "Garcia", "Chen", "Müller", "Okafor", "Rossi", "Nguyen", "Silva", "Kowalski",
    "Haddad", "Tanaka", "Olsen", "Dubois", "Novak", "Singh", "Brown",
];
const TITLES: &[&str] = &[
    "CEO",
    "CFO",
    "CTO",
    "VP Sales",
    "Head of IT",
    "Procurement Manager",
    "Engineer",
    "Operations Lead",
];
const INDUSTRIES: &[&str] = &[
    "Banking",
    "Technology",
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Energy",
    "Media",
    "Transportation",
];
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "Germany"),
    ("Paris", "France"),
    ("London", "United Kingdom"),
    ("New York", "United States"),
    ("Toronto", "Canada"),
    ("Tokyo", "Japan"),
    ("Sydney", "Australia"),
];

fn row(o: &Org, object: usize, fields: &[(&str, Val)]) -> Row {
    let def = &o.schema.objects[object];
    let mut r = Row {
        vals: vec![Val::Null; def.fields.len()],
        deleted_at: None,
    };
    for (name, v) in fields {
        if let Some(i) = def.field_index(name) {
            r.vals[i] = v.clone();
        }
    }
    r
}

fn s(v: impl Into<String>) -> Val {
    Val::Str(v.into())
}

/// The id of the emulated org (`Organization.Id`).
pub fn organization_id() -> String {
    make_id("00D", 1)
}

/// Adds the org's one `Organization` record (created at `created`, by the
/// integration user), if it has none.
pub fn organization(org: &mut Org, created: i64) {
    if !org.tables[obj::ORGANIZATION].rows.is_empty() {
        return;
    }
    let admin = s(make_id("005", 1));
    let r = row(
        org,
        obj::ORGANIZATION,
        &[
            ("Id", s(organization_id())),
            ("Name", s("dealbridge emulator")),
            ("OrganizationType", s("Developer Edition")),
            ("IsSandbox", Val::Bool(false)),
            ("InstanceName", s("EMU1")),
            ("IsReadOnly", Val::Bool(false)),
            ("DefaultLocaleSidKey", s("en_US")),
            ("LanguageLocaleKey", s("en_US")),
            ("TimeZoneSidKey", s("GMT")),
            ("IsDeleted", Val::Bool(false)),
            ("CreatedDate", Val::Time(created)),
            ("LastModifiedDate", Val::Time(created)),
            ("SystemModstamp", Val::Time(created)),
            ("CreatedById", admin.clone()),
            ("LastModifiedById", admin),
        ],
    );
    org.insert_raw(obj::ORGANIZATION, r);
    org.tables[obj::ORGANIZATION].next_seq = 1;
}

/// Fills `org` (which must be empty) with metadata and, when `seed` is given, data.
pub fn seed(org: &mut Org, seed: Option<u64>, sizes: SeedSizes) {
    let day = Utc::now()
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
        .timestamp_millis();
    let org_created = day - Duration::days(400).num_milliseconds();
    let stamp = |t: i64| -> Vec<(&'static str, Val)> {
        vec![
            ("CreatedDate", Val::Time(t)),
            ("LastModifiedDate", Val::Time(t)),
            ("SystemModstamp", Val::Time(t)),
            ("IsDeleted", Val::Bool(false)),
        ]
    };

    // Users: the integration user first, then the sales team.
    let mut user_ids = Vec::new();
    let mut people: Vec<(String, String, String, String)> = vec![(
        "Integration".into(),
        "User".into(),
        INTEGRATION_EMAIL.into(),
        INTEGRATION_USERNAME.into(),
    )];
    people.extend(SALES_TEAM.iter().map(|p| {
        (
            p.first_name.to_string(),
            p.last_name.to_string(),
            p.email.to_string(),
            p.email.to_string(),
        )
    }));
    for (n, (first, last, email, username)) in people.iter().enumerate() {
        let id = make_id("005", n as u64 + 1);
        let alias: String = format!(
            "{}{}",
            &first[..1],
            last.chars().take(4).collect::<String>()
        )
        .to_lowercase();
        let mut f = vec![
            ("Id", s(&id)),
            ("Username", s(username)),
            ("FirstName", s(first)),
            ("LastName", s(last)),
            ("Name", s(format!("{first} {last}"))),
            ("Email", s(email)),
            ("Alias", s(alias)),
            ("IsActive", Val::Bool(true)),
        ];
        f.extend(stamp(org_created));
        f.push(("CreatedById", s(make_id("005", 1))));
        f.push(("LastModifiedById", s(make_id("005", 1))));
        let r = row(org, obj::USER, &f);
        org.insert_raw(obj::USER, r);
        user_ids.push(id);
    }
    org.tables[obj::USER].next_seq = user_ids.len() as u64;
    let admin = user_ids[0].clone();
    let sys = |t: i64| {
        let mut v = stamp(t);
        v.push(("CreatedById", s(&admin)));
        v.push(("LastModifiedById", s(&admin)));
        v
    };

    organization(org, org_created);

    let record_types = [("New Business", "New_Business"), ("Renewal", "Renewal")];
    let mut rt_ids = Vec::new();
    for (n, (name, dev)) in record_types.iter().enumerate() {
        let id = make_id("012", n as u64 + 1);
        let mut f = vec![
            ("Id", s(&id)),
            ("Name", s(*name)),
            ("DeveloperName", s(*dev)),
            ("SobjectType", s("Opportunity")),
            ("IsActive", Val::Bool(true)),
            ("Description", s(format!("{name} opportunities"))),
        ];
        f.extend(sys(org_created));
        let r = row(org, obj::RECORD_TYPE, &f);
        org.insert_raw(obj::RECORD_TYPE, r);
        rt_ids.push(id);
    }
    org.tables[obj::RECORD_TYPE].next_seq = rt_ids.len() as u64;

    for (n, (label, prob, closed, won, forecast)) in STAGES.iter().enumerate() {
        let mut f = vec![
            ("Id", s(make_id("01J", n as u64 + 1))),
            ("MasterLabel", s(*label)),
            ("ApiName", s(*label)),
            ("IsActive", Val::Bool(true)),
            ("SortOrder", Val::Num(n as f64 + 1.0)),
            ("IsClosed", Val::Bool(*closed)),
            ("IsWon", Val::Bool(*won)),
            ("ForecastCategoryName", s(*forecast)),
            ("DefaultProbability", Val::Num(*prob)),
        ];
        f.extend(sys(org_created));
        let r = row(org, obj::STAGE, &f);
        org.insert_raw(obj::STAGE, r);
    }
    org.tables[obj::STAGE].next_seq = STAGES.len() as u64;

    let Some(seed) = seed else { return };
    let mut rng = StdRng::seed_from_u64(seed);
    let ms_day = Duration::days(1).num_milliseconds();
    // Creation within the last year, last modification within the last 20 days (so
    // that `updated/` windows find them), both on whole seconds.
    let times = |rng: &mut StdRng| {
        let created = day - rng.random_range(20..365) * ms_day + rng.random_range(0..86_400) * 1000;
        let modified = (day - rng.random_range(0..20) * ms_day
            + rng.random_range(0..86_400) * 1000)
            .max(created);
        (
            created,
            modified.min(Utc::now().timestamp_millis() / 1000 * 1000),
        )
    };
    let owner = |rng: &mut StdRng| user_ids[rng.random_range(1..user_ids.len())].clone();

    let mut account_ids = Vec::with_capacity(sizes.accounts);
    for n in 0..sizes.accounts {
        let id = make_id("001", n as u64 + 1);
        let name = format!(
            "{} {} {}",
            COMPANIES_A[rng.random_range(0..COMPANIES_A.len())],
            COMPANIES_B[rng.random_range(0..COMPANIES_B.len())],
            n + 1
        );
        let (city, country) = CITIES[rng.random_range(0..CITIES.len())];
        let (c, m) = times(&mut rng);
        let mut f = vec![
            ("Id", s(&id)),
            ("Name", s(&name)),
            (
                "Type",
                s(if rng.random_bool(0.6) {
                    "Customer - Direct"
                } else {
                    "Prospect"
                }),
            ),
            (
                "Industry",
                s(INDUSTRIES[rng.random_range(0..INDUSTRIES.len())]),
            ),
            (
                "Website",
                s(format!(
                    "https://www.{}.example",
                    name.to_lowercase().replace(' ', "-")
                )),
            ),
            ("BillingCity", s(city)),
            ("BillingCountry", s(country)),
            (
                "NumberOfEmployees",
                Val::Num(rng.random_range(5..50_000) as f64),
            ),
            (
                "AnnualRevenue",
                Val::Num((rng.random_range(1..5000) * 10_000) as f64),
            ),
            ("OwnerId", s(owner(&mut rng))),
            ("CurrencyIsoCode", s(CURRENCIES[0])),
        ];
        f.extend(sys(c));
        f.push(("LastModifiedDate", Val::Time(m)));
        f.push(("SystemModstamp", Val::Time(m)));
        let r = row(org, obj::ACCOUNT, &f);
        org.insert_raw(obj::ACCOUNT, r);
        account_ids.push(id);
    }
    org.tables[obj::ACCOUNT].next_seq = account_ids.len() as u64;

    let mut contacts_by_account: Vec<Vec<String>> = vec![Vec::new(); account_ids.len()];
    for n in 0..sizes.contacts {
        let id = make_id("003", n as u64 + 1);
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let acc = (!account_ids.is_empty()).then(|| rng.random_range(0..account_ids.len()));
        let (c, m) = times(&mut rng);
        let mut f = vec![
            ("Id", s(&id)),
            ("FirstName", s(first)),
            ("LastName", s(last)),
            ("Name", s(format!("{first} {last}"))),
            (
                "Email",
                s(format!(
                    "{}.{}.{}@customer{}.example",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    n + 1,
                    acc.unwrap_or(0) + 1
                )),
            ),
            ("Title", s(TITLES[rng.random_range(0..TITLES.len())])),
            ("OwnerId", s(owner(&mut rng))),
            ("CurrencyIsoCode", s(CURRENCIES[0])),
        ];
        if let Some(a) = acc {
            f.push(("AccountId", s(&account_ids[a])));
            contacts_by_account[a].push(id.clone());
        }
        f.extend(sys(c));
        f.push(("LastModifiedDate", Val::Time(m)));
        f.push(("SystemModstamp", Val::Time(m)));
        let r = row(org, obj::CONTACT, &f);
        org.insert_raw(obj::CONTACT, r);
    }
    org.tables[obj::CONTACT].next_seq = sizes.contacts as u64;

    let mut ocr_seq = 0u64;
    for n in 0..sizes.opportunities {
        let id = make_id("006", n as u64 + 1);
        let (label, prob, closed, won, forecast) = STAGES[rng.random_range(0..STAGES.len())];
        let acc = (!account_ids.is_empty()).then(|| rng.random_range(0..account_ids.len()));
        let (c, m) = times(&mut rng);
        let close = Utc::now().date_naive() + Duration::days(rng.random_range(-180..180));
        let mut f = vec![
            ("Id", s(&id)),
            (
                "Name",
                s(format!(
                    "Deal {} - {}",
                    n + 1,
                    ["Licences", "Services", "Renewal", "Expansion", "Pilot"]
                        [rng.random_range(0..5)]
                )),
            ),
            ("StageName", s(label)),
            ("Probability", Val::Num(prob)),
            ("IsClosed", Val::Bool(closed)),
            ("IsWon", Val::Bool(won)),
            ("ForecastCategoryName", s(forecast)),
            ("Amount", Val::Num((rng.random_range(1..500) * 1000) as f64)),
            ("CloseDate", Val::Date(close)),
            (
                "Type",
                s(if rng.random_bool(0.5) {
                    "New Customer"
                } else {
                    "Existing Customer - Upgrade"
                }),
            ),
            (
                "RecordTypeId",
                s(&rt_ids[rng.random_range(0..rt_ids.len())]),
            ),
            ("OwnerId", s(owner(&mut rng))),
            ("CurrencyIsoCode", s(CURRENCIES[0])),
        ];
        if let Some(a) = acc {
            f.push(("AccountId", s(&account_ids[a])));
        }
        f.extend(sys(c));
        f.push(("LastModifiedDate", Val::Time(m)));
        f.push(("SystemModstamp", Val::Time(m)));
        let r = row(org, obj::OPPORTUNITY, &f);
        org.insert_raw(obj::OPPORTUNITY, r);
        // 0..=3 contact roles from the account's contacts, at most one primary.
        if let Some(a) = acc {
            let pool = &contacts_by_account[a];
            let k = rng.random_range(0..4).min(pool.len());
            let start = if pool.is_empty() {
                0
            } else {
                rng.random_range(0..pool.len())
            };
            for j in 0..k {
                ocr_seq += 1;
                let mut f = vec![
                    ("Id", s(make_id("00K", ocr_seq))),
                    ("OpportunityId", s(&id)),
                    ("ContactId", s(&pool[(start + j) % pool.len()])),
                    ("Role", s(ROLES[rng.random_range(0..ROLES.len())])),
                    ("IsPrimary", Val::Bool(j == 0)),
                ];
                f.extend(sys(m));
                let r = row(org, obj::OCR, &f);
                org.insert_raw(obj::OCR, r);
            }
        }
    }
    org.tables[obj::OPPORTUNITY].next_seq = sizes.opportunities as u64;
    org.tables[obj::OCR].next_seq = ocr_seq;
}
