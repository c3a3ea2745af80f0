//! Keyset paging of the list routes: `after` (the `next_after` of the previous page) and
//! `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]). A page that comes back full
//! names its last id as `next_after`; a shorter page is the last one.
//!
//! Each route's query struct carries `after` and `limit` itself (serde's `flatten` does
//! not read numbers from a query string), and calls [`page`] to check them.

use super::error::ApiError;
use crate::store::Page;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most rows a page may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// The store page of `after` and `limit`, or 422 naming `limit`.
pub(crate) fn page(after: Option<i64>, limit: Option<u32>) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidInput(format!(
            "`limit` must be between 1 and {MAX_LIMIT}; got {limit}"
        )));
    }
    Ok(Page { after, limit })
}

/// The id to pass as `after` for the next page: the last row's, when the page is full.
pub(crate) fn next_after<T>(rows: &[T], page: Page, id: impl Fn(&T) -> i64) -> Option<i64> {
    (rows.len() == page.limit as usize)
        .then(|| rows.last().map(id))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_defaulted() {
        assert_eq!(page(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(page(Some(7), Some(MAX_LIMIT)).unwrap().after, Some(7));
        for bad in [0, MAX_LIMIT + 1] {
            let e = page(None, Some(bad)).unwrap_err();
            assert_eq!(e.status_and_code().1, "invalid_input");
            assert!(e.public_message().contains("`limit`"));
        }
    }

    #[test]
    fn only_a_full_page_has_a_next_page() {
        let p = Page::first(2);
        assert_eq!(next_after(&[5, 4], p, |x| *x), Some(4));
        assert_eq!(next_after(&[5], p, |x| *x), None);
        assert_eq!(next_after::<i64>(&[], p, |x| *x), None);
    }
}
