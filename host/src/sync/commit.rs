//! Commit: the links, snapshots, history, checkpoints and counters of one batch's
//! acknowledged writes, in one store transaction ([`crate::store::Store::commit_batch`]).
//!
//! A batch key names each commit, so a commit retried after a crash changes nothing more.
//! This module must never put a record into a commit that the CRM did not acknowledge
//! (the engine only hands it acknowledged ones) and never move a checkpoint past a page
//! that is not wholly handled.

use std::collections::HashSet;

use crate::store::{
    Checkpoint, CommitBatch, CommittedRecord, Direction, EventKind, Lease, LinkState,
    NewRecordEvent, ObjectPair, RunCounters, Snapshot,
};

/// Builds up one batch's commit.
#[derive(Debug)]
pub struct CommitBuilder {
    pair: ObjectPair,
    records: Vec<CommittedRecord>,
    seen_sf: HashSet<String>,
    seen_hs: HashSet<String>,
    /// Counters of the batch.
    pub counters: RunCounters,
}

impl CommitBuilder {
    /// An empty commit for a pair.
    pub fn new(pair: ObjectPair) -> Self {
        Self {
            pair,
            records: Vec::new(),
            seen_sf: HashSet::new(),
            seen_hs: HashSet::new(),
            counters: RunCounters::default(),
        }
    }

    /// Adds an acknowledged record (the first entry per id wins).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        sf_id: &str,
        hs_id: &str,
        state: LinkState,
        snapshot: Option<Snapshot>,
        kind: EventKind,
        direction: Direction,
        source_version: &str,
        run_id: i64,
        now_ms: i64,
        fields: serde_json::Value,
    ) {
        if sf_id.is_empty()
            || hs_id.is_empty()
            || self.seen_sf.contains(sf_id)
            || self.seen_hs.contains(hs_id)
        {
            return;
        }
        self.seen_sf.insert(sf_id.to_string());
        self.seen_hs.insert(hs_id.to_string());
        self.records.push(CommittedRecord {
            salesforce_id: sf_id.to_string(),
            hubspot_id: hs_id.to_string(),
            state,
            snapshot,
            events: vec![NewRecordEvent {
                object_pair: self.pair,
                salesforce_id: Some(sf_id.to_string()),
                hubspot_id: Some(hs_id.to_string()),
                kind,
                direction,
                source_version: source_version.to_string(),
                run_id: Some(run_id),
                at_ms: now_ms,
                fields,
                message: None,
            }],
        });
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The store's commit.
    pub fn build(
        self,
        key: String,
        lease: Lease,
        checkpoints: Vec<Checkpoint>,
        run_id: i64,
        now_ms: i64,
    ) -> CommitBatch {
        CommitBatch {
            batch_key: key,
            lease,
            object_pair: self.pair,
            records: self.records,
            checkpoints,
            counters: Some((run_id, self.counters)),
            now_ms,
            settled_hubspot_changes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TenantId;

    #[test]
    fn one_entry_per_id_and_no_half_links() {
        let mut b = CommitBuilder::new(ObjectPair::OpportunityDeal);
        let j = serde_json::json!({});
        b.record(
            "006A",
            "1",
            LinkState::Active,
            None,
            EventKind::Created,
            Direction::SalesforceToHubSpot,
            "1",
            1,
            1,
            j.clone(),
        );
        b.record(
            "006A",
            "2",
            LinkState::Active,
            None,
            EventKind::Created,
            Direction::SalesforceToHubSpot,
            "1",
            1,
            1,
            j.clone(),
        );
        b.record(
            "006B",
            "1",
            LinkState::Active,
            None,
            EventKind::Created,
            Direction::SalesforceToHubSpot,
            "1",
            1,
            1,
            j.clone(),
        );
        b.record(
            "006C",
            "",
            LinkState::Active,
            None,
            EventKind::Created,
            Direction::SalesforceToHubSpot,
            "1",
            1,
            1,
            j,
        );
        assert_eq!(b.len(), 1);
        let lease = Lease {
            tenant: TenantId::new("t").unwrap(),
            holder: "h".into(),
            fencing_token: 1,
            expires_at_ms: 9,
        };
        let c = b.build("k".into(), lease, Vec::new(), 7, 5);
        assert_eq!(c.records[0].hubspot_id, "1");
        assert_eq!(c.counters.unwrap().0, 7);
    }
}
