//! The one classification of CRM errors that the sync engine groups its sync-health view by.
//!
//! Each CRM's error codes are mapped to an [`ErrorClass`] in its own `errors.rs`; this file
//! only defines the categories. It must never depend on either CRM's wire format.

use serde::Serialize;

/// What kind of failure an error is, as the sync-health view groups it.
///
/// The classification drives retry decisions too: only [`ErrorClass::Transient`],
/// [`ErrorClass::RateLimit`] and [`ErrorClass::RolledBack`] are worth retrying unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// A validation rule, a required field missing, a value of the wrong shape or length.
    Validation,
    /// A unique value or external id already in use, or a duplicate rule fired.
    Duplicate,
    /// The integration user or token lacks a permission or scope.
    Permission,
    /// A value that is not one of a picklist's / dropdown's allowed options.
    PicklistMismatch,
    /// A rate limit, a daily cap or the tenant's API budget was hit.
    RateLimit,
    /// The credentials or the session are invalid (after the one refresh was tried).
    Auth,
    /// The record (or a record it references) does not exist or was deleted.
    NotFound,
    /// A server error, a timeout, a lock contention: retrying later may succeed.
    Transient,
    /// Not this record's fault: an all-or-none batch was rolled back by another record.
    RolledBack,
    /// A request the client built wrongly (malformed query, unknown field, bad input).
    BadRequest,
    /// Anything the CRM reported that fits no other class.
    Other,
}

impl ErrorClass {
    /// Whether the same request may succeed later without any change to it.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::RateLimit | Self::RolledBack)
    }

    /// A stable lower-case name for logs, metrics and the sync-health view.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Duplicate => "duplicate",
            Self::Permission => "permission",
            Self::PicklistMismatch => "picklist_mismatch",
            Self::RateLimit => "rate_limit",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::Transient => "transient",
            Self::RolledBack => "rolled_back",
            Self::BadRequest => "bad_request",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retryable() {
        assert!(ErrorClass::Transient.is_retryable());
        assert!(ErrorClass::RateLimit.is_retryable());
        assert!(ErrorClass::RolledBack.is_retryable());
        assert!(!ErrorClass::Validation.is_retryable());
        assert!(!ErrorClass::Auth.is_retryable());
        assert!(!ErrorClass::NotFound.is_retryable());
    }

    #[test]
    fn serializes_as_snake_case_matching_as_str() {
        let json = serde_json::to_string(&ErrorClass::PicklistMismatch).unwrap();
        assert_eq!(json, "\"picklist_mismatch\"");
        assert_eq!(
            ErrorClass::PicklistMismatch.to_string(),
            "picklist_mismatch"
        );
    }
}
