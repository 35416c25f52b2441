//! Resolves a secret reference: a literal, `env:NAME` or `file:PATH`. The
//! error messages name the variable or file, never the secret.

use std::path::Path;

use gatehouse_core::Secret;

/// Resolves one reference; `file:` paths are relative to `base_dir`.
pub(crate) fn resolve(reference: &str, base_dir: &Path) -> Result<Secret, String> {
    let secret = if let Some(name) = reference.strip_prefix("env:") {
        let value = std::env::var_os(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        Secret::new(value.into_encoded_bytes())
    } else if let Some(path) = reference.strip_prefix("file:") {
        let full = base_dir.join(path);
        let mut bytes = std::fs::read(&full).map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
        // Editors and `echo` add a final newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Secret::new(bytes)
    } else {
        Secret::new(reference.as_bytes())
    };
    if secret.expose().is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_env_and_files() {
        let dir = std::env::temp_dir().join(format!("gh-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "from-file\n").unwrap();
        assert_eq!(resolve("plain", &dir).unwrap().expose(), b"plain");
        assert_eq!(resolve("file:s.txt", &dir).unwrap().expose(), b"from-file");
        std::env::set_var("GATEHOUSE_TEST_SECRET_RESOLVE", "from-env");
        assert_eq!(
            resolve("env:GATEHOUSE_TEST_SECRET_RESOLVE", &dir).unwrap().expose(),
            b"from-env"
        );
        let missing = resolve("env:GATEHOUSE_TEST_SECRET_MISSING", &dir).unwrap_err();
        assert!(missing.contains("GATEHOUSE_TEST_SECRET_MISSING"), "{missing}");
        assert!(resolve("file:nope.txt", &dir).is_err());
        assert!(resolve("", &dir).is_err());
    }
}
