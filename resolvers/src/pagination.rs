//! Relay-style pagination shared by every connection: page-size rules and opaque cursors.

use async_graphql::SimpleObject;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::bad_input;

/// Where a page sits in its list.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct PageInfo {
    /// Whether more items follow this page (ask again with `after: endCursor`).
    pub has_next_page: bool,
    /// Whether items precede this page (true whenever `after` was given).
    pub has_previous_page: bool,
    /// Cursor of the first item of the page; null when the page is empty.
    pub start_cursor: Option<String>,
    /// Cursor of the last item of the page; null when the page is empty.
    pub end_cursor: Option<String>,
}

/// Declares a Relay connection type and its edge type for one node type:
/// `connection!(ProductConnection, ProductEdge, ProductNode, "products")`.
/// The connection has `edges`, `pageInfo` and `totalCount` (computed only when selected).
#[macro_export]
macro_rules! connection {
    ($connection:ident, $edge:ident, $node:ty, $what:literal) => {
        #[doc = concat!("One of the ", $what, " of a page, with its cursor.")]
        #[derive(async_graphql::SimpleObject)]
        pub struct $edge {
            /// Opaque position of this item; pass it as `after` to continue from here.
            pub cursor: String,
            /// The item.
            pub node: $node,
        }

        #[doc = concat!("A page of ", $what, " (Relay connection): `edges` in order, `pageInfo` to \
            continue, and `totalCount` across all pages.")]
        #[derive(async_graphql::SimpleObject)]
        pub struct $connection {
            /// Items of this page with their cursors.
            pub edges: Vec<$edge>,
            /// Where this page sits in the list.
            pub page_info: $crate::pagination::PageInfo,
            /// Number of items across all pages that match the arguments (one extra query, run
            /// only when this field is selected).
            pub total_count: i64,
        }

        impl $connection {
            /// A page from `(cursor, node)` pairs.
            pub fn new(
                items: Vec<(String, $node)>,
                has_previous_page: bool,
                has_next_page: bool,
                total_count: i64,
            ) -> Self {
                let page_info = $crate::pagination::PageInfo {
                    has_next_page,
                    has_previous_page,
                    start_cursor: items.first().map(|(c, _)| c.clone()),
                    end_cursor: items.last().map(|(c, _)| c.clone()),
                };
                let edges = items
                    .into_iter()
                    .map(|(cursor, node)| $edge { cursor, node })
                    .collect();
                Self {
                    edges,
                    page_info,
                    total_count,
                }
            }
        }
    };
}

/// Largest `first` any connection accepts.
pub const MAX_PAGE_SIZE: i32 = 50;
/// `first` when the client does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// Validates `first`: 0..=50, default 20; anything else is `BAD_USER_INPUT`.
pub fn page_size(first: Option<i32>) -> async_graphql::Result<i64> {
    let n = first.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(0..=MAX_PAGE_SIZE).contains(&n) {
        return Err(bad_input(
            "first",
            format!("must be between 0 and {MAX_PAGE_SIZE}, got {n}"),
        ));
    }
    Ok(i64::from(n))
}

/// Encodes a cursor payload as an opaque string.
pub fn encode_cursor<T: Serialize>(payload: &T) -> String {
    // serialising plain structs of numbers and short strings cannot fail
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default())
}

/// Decodes a cursor made by [`encode_cursor`]; `BAD_USER_INPUT` when it is not one.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> async_graphql::Result<T> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| bad_input("after", "not a cursor returned by this connection"))
}

/// Splits rows read as `limit + 1` (ordered by id, the cursor) into the page to show, each with
/// its cursor and node, and whether more rows follow.
pub fn id_page<T, N>(
    mut rows: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> u64,
    node: impl Fn(T) -> N,
) -> (Vec<(String, N)>, bool) {
    let has_next = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let items = rows
        .into_iter()
        .map(|r| (encode_cursor(&id(&r)), node(r)))
        .collect();
    (items, has_next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_bounds() {
        assert_eq!(page_size(None).unwrap(), 20);
        assert_eq!(page_size(Some(50)).unwrap(), 50);
        assert_eq!(page_size(Some(0)).unwrap(), 0);
        assert!(page_size(Some(51)).is_err());
        assert!(page_size(Some(-1)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&(3_i64, 7_u64));
        assert_eq!(decode_cursor::<(i64, u64)>(&c).unwrap(), (3, 7));
        assert!(decode_cursor::<(i64, u64)>("garbage").is_err());
        assert!(decode_cursor::<(i64, u64)>(&encode_cursor(&"text")).is_err());
    }
}
