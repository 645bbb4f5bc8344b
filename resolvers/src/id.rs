//! Opaque ids: `base64url("Type:123")`. Clients must treat them as strings; the type prefix lets
//! the server refuse an id of the wrong kind with `BAD_USER_INPUT` instead of a wrong lookup.

use async_graphql::ID;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::bad_input;

/// The opaque id of `kind` number `id`.
pub fn encode(kind: &str, id: u64) -> ID {
    ID(URL_SAFE_NO_PAD.encode(format!("{kind}:{id}")))
}

/// The number inside an id of `kind`; `BAD_USER_INPUT` on anything else.
pub fn decode(kind: &str, argument: &str, id: &ID) -> async_graphql::Result<u64> {
    let invalid = || bad_input(argument, format!("not a valid {kind} id"));
    let bytes = URL_SAFE_NO_PAD
        .decode(id.as_bytes())
        .map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let (k, n) = text.split_once(':').ok_or_else(invalid)?;
    if k != kind {
        return Err(invalid());
    }
    n.parse::<u64>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_kinds() {
        let id = encode("Product", 42);
        assert_eq!(decode("Product", "id", &id).unwrap(), 42);
        assert!(decode("Category", "id", &id).is_err());
        assert!(decode("Product", "id", &ID("not base64!".into())).is_err());
        assert!(decode("Product", "id", &ID(URL_SAFE_NO_PAD.encode("Product:x"))).is_err());
    }
}
