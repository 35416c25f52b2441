//! Secret material (signing keys, tokens). Its `Debug` never shows the value,
//! so a secret that slips into a log line or an error prints as `***`.

use std::fmt;

/// A secret as configured: the raw bytes of the literal, environment
/// variable or file it came from. How the bytes are used (UTF-8 key, base64
/// to decode, hex public key) is each provider's business.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret's bytes. Callers must not log or display them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, if it is text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("whsec_do_not_print");
        let shown = format!("{secret:?} {:?}", vec![secret.clone()]);
        assert!(!shown.contains("do_not_print"), "{shown}");
        assert_eq!(secret.expose(), b"whsec_do_not_print");
    }
}
