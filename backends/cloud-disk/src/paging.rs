//! CSI pagination on top of EC2's. EC2 pages by `NextToken` and takes `MaxResults` only
//! from 5 up to a per-call maximum (500 for DescribeVolumes, 1000 for DescribeSnapshots),
//! while the CO may ask for fewer entries than 5. Pages are at most [`MAX_PAGE`] entries, so
//! a response stays well inside the host's response cap (`output_kib`, 1 MiB by default). A CSI
//! token is therefore `<skip>:<aws token>`: the AWS page to fetch again (empty for the
//! first) and how many of its entries the CO has already seen. Tokens stay opaque to the
//! CO; one this backend did not issue, or that AWS no longer accepts, is `aborted`.

use kit::types::Error;

use crate::ec2::PageRequest;
use crate::errors::Failure;
use crate::model::Page;

/// The smallest `MaxResults` EC2 takes.
const MIN_RESULTS: u32 = 5;
/// The largest page fetched: what DescribeVolumes returns at most.
const MAX_PAGE: u32 = 500;
/// The page size when the CO leaves it to the backend (`max-entries` 0).
const DEFAULT_PAGE: u32 = 100;
/// Error codes of a `NextToken` AWS does not accept.
const BAD_TOKEN_CODES: [&str; 3] = ["InvalidParameterValue", "InvalidNextToken", "InvalidPaginationToken"];

/// Where a page starts.
#[derive(Debug, PartialEq, Eq)]
struct Cursor {
    skip: u32,
    aws_token: Option<String>,
}

impl Cursor {
    fn parse(token: &str) -> Result<Cursor, Error> {
        if token.is_empty() {
            return Ok(Cursor { skip: 0, aws_token: None });
        }
        token
            .split_once(':')
            .and_then(|(skip_text, aws_token)| {
                let skip =
                    skip_text.parse::<u32>().ok().filter(|skip| *skip < MAX_PAGE && skip.to_string() == skip_text)?;
                Some(Cursor { skip, aws_token: (!aws_token.is_empty()).then(|| aws_token.to_owned()) })
            })
            .ok_or_else(|| Error::Aborted(format!("starting token {token:?} was not issued by this backend")))
    }

    fn token(skip: usize, aws_token: Option<&str>) -> String {
        format!("{skip}:{}", aws_token.unwrap_or_default())
    }
}

/// One CSI page of at most `max_entries` entries (0: [`DEFAULT_PAGE`]) from
/// `starting_token`; `fetch` gets one AWS page. Returns the entries and the next token
/// (empty after the last page).
pub fn list<T>(
    max_entries: u32,
    starting_token: &str,
    fetch: impl FnOnce(&PageRequest) -> Result<Page<T>, Failure>,
) -> Result<(Vec<T>, String), Error> {
    let cursor = Cursor::parse(starting_token)?;
    let want = if max_entries == 0 { DEFAULT_PAGE } else { max_entries.min(MAX_PAGE) };
    let request = PageRequest {
        max_results: cursor.skip.saturating_add(want).clamp(MIN_RESULTS, MAX_PAGE),
        next_token: cursor.aws_token.as_deref(),
    };
    let page = fetch(&request).map_err(|failure| {
        if cursor.aws_token.is_some() && BAD_TOKEN_CODES.iter().any(|code| failure.is(code)) {
            Error::Aborted(format!("starting token {starting_token:?} is no longer valid: {failure}"))
        } else {
            Error::from(failure)
        }
    })?;
    let mut items = page.items;
    let available = items.len();
    let start = usize::try_from(cursor.skip).map_or(available, |skip| skip.min(available));
    let end = usize::try_from(want).map_or(available, |want| start.saturating_add(want).min(available));
    let next = if end < available {
        Cursor::token(end, cursor.aws_token.as_deref())
    } else {
        page.next_token.map(|aws_token| Cursor::token(0, Some(&aws_token))).unwrap_or_default()
    };
    items.truncate(end);
    Ok((items.split_off(start), next))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::context::fake::FakePlatform;
    use crate::credentials::Credentials;
    use crate::errors::AwsError;

    /// An AWS listing of `total` numbers served in pages of at most `cap`, whose tokens
    /// are the offset of the page; records each request.
    struct Listing {
        total: u32,
        cap: u32,
        requests: RefCell<Vec<(u32, Option<String>)>>,
    }

    impl Listing {
        fn fetch(&self, request: &PageRequest) -> Result<Page<u32>, Failure> {
            assert!((MIN_RESULTS..=1000).contains(&request.max_results), "{}", request.max_results);
            self.requests.borrow_mut().push((request.max_results, request.next_token.map(str::to_owned)));
            let offset: u32 = match request.next_token {
                Some(token) => token.parse().map_err(|_| bad_token())?,
                None => 0,
            };
            let end = (offset + request.max_results.min(self.cap)).min(self.total);
            Ok(Page { items: (offset..end).collect(), next_token: (end < self.total).then(|| end.to_string()) })
        }
    }

    fn bad_token() -> Failure {
        let platform = FakePlatform::new();
        let error = AwsError {
            code: "InvalidParameterValue".into(),
            message: "Invalid value for nextToken".into(),
            request_id: None,
        };
        Failure::aws("DescribeVolumes", 400, error, &Credentials::load(&platform).unwrap())
    }

    fn all(listing: &Listing, max_entries: u32) -> Vec<u32> {
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let (entries, next) = list(max_entries, &token, |request| listing.fetch(request)).unwrap();
            assert!(max_entries == 0 || entries.len() <= max_entries as usize);
            seen.extend(entries);
            if next.is_empty() {
                return seen;
            }
            token = next;
        }
        panic!("pagination does not end");
    }

    #[test]
    fn every_page_size_covers_everything_once_in_order() {
        for total in [0, 1, 4, 5, 12, 31] {
            for max_entries in [0, 1, 2, 4, 5, 6, 12, 100] {
                let listing = Listing { total, cap: 7, requests: RefCell::new(Vec::new()) };
                let expected: Vec<u32> = (0..total).collect();
                assert_eq!(all(&listing, max_entries), expected, "total {total} max {max_entries}");
            }
        }
    }

    #[test]
    fn max_results_respects_the_aws_bounds() {
        let listing = Listing { total: 3000, cap: 1000, requests: RefCell::new(Vec::new()) };
        let (entries, next) = list(2, "", |request| listing.fetch(request)).unwrap();
        assert_eq!((entries, next.as_str()), (vec![0, 1], "2:"));
        let (entries, next) = list(2, &next, |request| listing.fetch(request)).unwrap();
        assert_eq!((entries, next.as_str()), (vec![2, 3], "4:"));
        let (entries, next) = list(0, "", |request| listing.fetch(request)).unwrap();
        assert_eq!((entries.len(), next.as_str()), (100, "0:100"));
        let (entries, next) = list(5000, "", |request| listing.fetch(request)).unwrap();
        assert_eq!((entries.len(), next.as_str()), (500, "0:500"));
        let requested: Vec<u32> = listing.requests.borrow().iter().map(|(max, _)| *max).collect();
        assert_eq!(requested, [5, 5, 100, 500]);
    }

    #[test]
    fn foreign_tokens_are_aborted() {
        let listing = Listing { total: 10, cap: 10, requests: RefCell::new(Vec::new()) };
        for token in ["x", "12", "-1:", "500:abc", "01:abc", "+1:abc", ":abc"] {
            let result = list(1, token, |request| listing.fetch(request));
            assert!(matches!(result, Err(Error::Aborted(_))), "{token:?}");
        }
        assert!(listing.requests.borrow().is_empty());
        let rejected = list(1, "0:not-a-number", |request| listing.fetch(request));
        assert!(matches!(&rejected, Err(Error::Aborted(m)) if m.contains("no longer valid")), "{rejected:?}");
    }

    #[test]
    fn other_failures_pass_through() {
        let result: Result<(Vec<u32>, String), Error> = list(1, "", |_| Err(bad_token()));
        assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    }
}
