//! How headers are kept in a database column: a JSON array of
//! `[name, value]` pairs, which preserves order and repeated names.

use gatehouse_core::Header;

use crate::StoreError;

/// Encodes headers for storage.
pub fn encode_headers(headers: &[Header]) -> String {
    let pairs: Vec<[&str; 2]> = headers.iter().map(|h| [h.name.as_str(), h.value.as_str()]).collect();
    // Invariant: serialising string pairs cannot fail.
    serde_json::to_string(&pairs).expect("string pairs always serialise")
}

/// Decodes headers written by [`encode_headers`]. The error names the
/// position, never the content.
pub fn decode_headers(text: &str) -> Result<Vec<Header>, StoreError> {
    let pairs: Vec<(String, String)> =
        serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("decode stored headers: {e}")))?;
    Ok(pairs.into_iter().map(|(name, value)| Header { name, value }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_order_and_repeats() {
        let headers = vec![
            Header {
                name: "x-a".into(),
                value: "1".into(),
            },
            Header {
                name: "x-a".into(),
                value: "\"quoted\" ünïcode".into(),
            },
        ];
        assert_eq!(decode_headers(&encode_headers(&headers)).unwrap(), headers);
        assert!(decode_headers("not json").is_err());
    }
}
