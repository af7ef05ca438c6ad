//! Pagination of list calls.
//!
//! Entries are listed in id order. A page's `next-token` is the id of the first entry of
//! the next page, so a token is checked by parsing it as an id of the listed kind: anything
//! else was not issued by the backend and is `aborted`. Objects created or deleted between
//! pages do not disturb the order of the others.

use crate::ids::{Id, Kind};
use crate::types::Error;

/// The position a starting token names; `None` for the empty token (the first page).
pub fn parse_token<K: Kind>(kind: K, token: &str) -> Result<Option<Id<K>>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    Id::parse(kind, token)
        .map(Some)
        .ok_or_else(|| Error::Aborted(format!("starting token {token:?} was not issued by this backend")))
}

/// One page: at most `max_entries` (0: no limit) entries loaded from the sorted `ids`,
/// starting at `start`, and the token of the next page (empty after the last).
///
/// `load` returns `None` for an id that is not listed (half-made, deleted meanwhile, or
/// filtered out); such ids take no room on the page.
pub fn page<K: Kind, T>(
    ids: &[Id<K>],
    max_entries: u32,
    start: Option<&Id<K>>,
    mut load: impl FnMut(&Id<K>) -> Result<Option<T>, Error>,
) -> Result<(Vec<T>, String), Error> {
    let limit = match usize::try_from(max_entries) {
        Ok(0) | Err(_) => usize::MAX,
        Ok(limit) => limit,
    };
    let mut entries = Vec::new();
    for id in ids.iter().filter(|id| start.is_none_or(|start| *id >= start)) {
        let Some(entry) = load(id)? else { continue };
        if entries.len() == limit {
            return Ok((entries, id.as_str().to_owned()));
        }
        entries.push(entry);
    }
    Ok((entries, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::tests::TestKind;

    type TestId = Id<TestKind>;

    fn ids(count: usize) -> Vec<TestId> {
        let mut ids: Vec<TestId> = (0..count).map(|i| Id::for_name(TestKind::Volume, &format!("pvc-{i}"))).collect();
        ids.sort();
        ids
    }

    fn all(ids: &[TestId], max_entries: u32, skip: impl Fn(&TestId) -> bool) -> Vec<TestId> {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let start = parse_token(TestKind::Volume, &token).unwrap();
            let (entries, next) =
                page(ids, max_entries, start.as_ref(), |id| Ok((!skip(id)).then(|| id.clone()))).unwrap();
            assert!(max_entries == 0 || entries.len() <= max_entries as usize);
            seen.extend(entries);
            if next.is_empty() {
                return seen;
            }
            token = next;
        }
    }

    #[test]
    fn pages_cover_everything_once_in_order() {
        let ids = ids(10);
        for max_entries in [0, 1, 3, 10, 11] {
            assert_eq!(all(&ids, max_entries, |_| false), ids, "max_entries {max_entries}");
        }
    }

    #[test]
    fn unlisted_ids_take_no_room() {
        let ids = ids(10);
        let hidden = ids[4].clone();
        let expected: Vec<TestId> = ids.iter().filter(|id| **id != hidden).cloned().collect();
        assert_eq!(all(&ids, 3, |id| *id == hidden), expected);
    }

    #[test]
    fn exact_fit_has_no_next_token() {
        let ids = ids(3);
        let (entries, next) = page(&ids, 3, None, |id| Ok(Some(id.clone()))).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(next, "");
    }

    #[test]
    fn a_token_past_the_end_gives_an_empty_page() {
        let ids = ids(3);
        let start = Id::parse(TestKind::Volume, "vol-ffffffffffffffffffffffffffffffff").unwrap();
        let (entries, next) = page(&ids, 0, Some(&start), |id| Ok(Some(id.clone()))).unwrap();
        assert!(entries.is_empty());
        assert_eq!(next, "");
    }

    #[test]
    fn foreign_tokens_are_aborted() {
        assert_eq!(parse_token(TestKind::Volume, "").unwrap(), None);
        for token in
            ["1", "snap-0123456789abcdef0123456789abcdef", "vol-xyz", "../vol-0123456789abcdef0123456789abcdef"]
        {
            assert!(matches!(parse_token(TestKind::Volume, token), Err(Error::Aborted(_))), "{token:?}");
        }
    }

    #[test]
    fn load_errors_propagate() {
        let ids = ids(2);
        let result: Result<(Vec<()>, String), Error> = page(&ids, 0, None, |_| Err(Error::Internal("boom".into())));
        assert!(matches!(result, Err(Error::Internal(_))));
    }
}
