//! The people both emulators' seeds share: Salesforce users and HubSpot owners
//! are the same people, matched by email, as in a real tenant.

/// One person who works in both CRMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub first_name: &'static str,
    pub last_name: &'static str,
    /// Lower-case email, the key that links a Salesforce User to a HubSpot owner.
    pub email: &'static str,
    /// Whether the person has a HubSpot owner record. Salesforce has every
    /// person; a few have no HubSpot owner, so the demo shows missing-owner errors.
    pub in_hubspot: bool,
}

/// The sales team of the seeded org, in a fixed order.
pub const SALES_TEAM: &[Person] = &[
    Person {
        first_name: "Ada",
        last_name: "Lovelace",
        email: "ada.lovelace@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Grace",
        last_name: "Hopper",
        email: "grace.hopper@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Alan",
        last_name: "Turing",
        email: "alan.turing@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Katherine",
        last_name: "Johnson",
        email: "katherine.johnson@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Edsger",
        last_name: "Dijkstra",
        email: "edsger.dijkstra@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Barbara",
        last_name: "Liskov",
        email: "barbara.liskov@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Donald",
        last_name: "Knuth",
        email: "donald.knuth@example.com",
        in_hubspot: true,
    },
    Person {
        first_name: "Frances",
        last_name: "Allen",
        email: "frances.allen@example.com",
        in_hubspot: false,
    },
];
