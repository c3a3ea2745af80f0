//! The test fault point: fail a cycle between apply and commit, or before one batch writes.

use super::*;

/// A test hook: fail the cycle between apply and commit after this many applied batches
/// (`-1`: never), or just before one batch of a pair and direction writes anything. Lets a
/// test kill the engine after the CRM acknowledged a write but before the link was
/// committed, or while a batch run beside others has written nothing yet.
#[derive(Debug, Clone, Default)]
pub struct FaultPoint(Arc<FaultState>);

#[derive(Debug)]
struct FaultState {
    /// Batches still to let through (`-1`: disarmed).
    left: AtomicI64,
    /// The only spot that counts (none: every batch, between apply and commit).
    only: std::sync::Mutex<Option<FaultSpot>>,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            left: AtomicI64::new(-1),
            only: std::sync::Mutex::new(None),
        }
    }
}

/// Where a batch passes the fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FaultSpot {
    pub(super) pair: ObjectPair,
    pub(super) direction: Direction,
    /// Before the batch's writes (else between apply and commit).
    pub(super) before_apply: bool,
}

impl FaultPoint {
    /// Fires after `n` more applied batches, between apply and commit.
    pub fn arm_after_apply(&self, n: i64) {
        self.arm(None, n);
    }

    /// Fires when the batch of `pair` in `direction` after `n` more of them is about to
    /// write: none of its records reaches a CRM. Other batches pass.
    pub fn arm_before_apply_of(&self, pair: ObjectPair, direction: Direction, n: i64) {
        let spot = FaultSpot {
            pair,
            direction,
            before_apply: true,
        };
        self.arm(Some(spot), n);
    }

    fn arm(&self, only: Option<FaultSpot>, n: i64) {
        *self.0.only.lock().unwrap_or_else(|e| e.into_inner()) = only;
        self.0.left.store(n, Ordering::SeqCst);
    }

    pub(super) fn check(&self, spot: FaultSpot) -> Result<(), SyncError> {
        let only = *self.0.only.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match only {
            None => !spot.before_apply,
            Some(o) => o == spot,
        };
        if !counts {
            return Ok(());
        }
        // One decrement per batch, even with batches checking at once.
        match self
            .0
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n >= 0).then(|| n - 1)
            }) {
            Ok(0) => Err(SyncError::Injected(if spot.before_apply {
                "before apply"
            } else {
                "between apply and commit"
            })),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_point_fires_once_after_n_applies() {
        let f = FaultPoint::default();
        let spot = |before_apply| FaultSpot {
            pair: ObjectPair::AccountCompany,
            direction: Direction::SalesforceToHubSpot,
            before_apply,
        };
        assert!(f.check(spot(false)).is_ok());
        f.arm_after_apply(1);
        assert!(f.check(spot(true)).is_ok());
        assert!(f.check(spot(false)).is_ok());
        assert!(f.check(spot(true)).is_ok());
        assert!(matches!(f.check(spot(false)), Err(SyncError::Injected(_))));
        assert!(f.check(spot(false)).is_ok());
    }

    #[test]
    fn a_fault_before_apply_counts_only_its_pair_and_direction() {
        let f = FaultPoint::default();
        let (deals, back) = (ObjectPair::OpportunityDeal, Direction::HubSpotToSalesforce);
        let spot = |pair, direction| FaultSpot {
            pair,
            direction,
            before_apply: true,
        };
        f.arm_before_apply_of(deals, back, 1);
        assert!(f.check(spot(deals, Direction::SalesforceToHubSpot)).is_ok());
        assert!(f.check(spot(ObjectPair::ContactContact, back)).is_ok());
        assert!(f.check(spot(deals, back)).is_ok());
        let after_apply = FaultSpot {
            before_apply: false,
            ..spot(deals, back)
        };
        assert!(f.check(after_apply).is_ok());
        assert!(matches!(
            f.check(spot(deals, back)),
            Err(SyncError::Injected(_))
        ));
        assert!(f.check(spot(deals, back)).is_ok());
    }
}
