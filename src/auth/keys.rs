//! The keys tokens are verified with, and the one algorithm each allows.
//!
//! The algorithm comes from the key, never from the token: the HS256 secret
//! allows HS256 only, a JWKS key the algorithm it names (or the one its type
//! and curve imply). A token whose header names another algorithm is
//! refused before its signature is looked at, so `alg: none` or an HS256
//! token "signed" with an RSA public key never verifies.
//!
//! Key material never reaches an error message: a secret file's errors say
//! what is wrong with it, not what it holds, and a JWKS error says where in
//! the file it is, not the text there.

use std::collections::HashMap;
use std::path::PathBuf;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// RFC 7518 §3.2: an HS256 key is at least as long as the hash.
const MIN_SECRET_BYTES: usize = 32;

/// Where the keys come from: a file each, either or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFiles {
    /// An HS256 secret (its bytes, a trailing newline dropped).
    pub secret: Option<PathBuf>,
    /// A JWKS document of public keys.
    pub jwks: Option<PathBuf>,
}

/// What the key files held when they were read: reloading compares it, so
/// an unchanged file is not parsed again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFileContents {
    secret: Option<Vec<u8>>,
    jwks: Option<Vec<u8>>,
}

impl KeyFiles {
    /// Whether any key is configured (access control is on).
    pub fn any(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }

    pub fn read(&self) -> Result<KeyFileContents, String> {
        let read = |path: &Option<PathBuf>| {
            path.as_ref()
                .map(|path| {
                    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .transpose()
        };
        Ok(KeyFileContents {
            secret: read(&self.secret)?,
            jwks: read(&self.jwks)?,
        })
    }
}

/// What every token must satisfy besides its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// When set, `iss` must be this.
    pub issuer: Option<String>,
    /// When set, `aud` must name this.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl Rules {
    /// What jsonwebtoken checks for a key of `algorithm`: `exp` and `sub`
    /// required, `nbf` honoured, `iss` and `aud` when configured.
    pub fn validation(&self, algorithm: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_seconds;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// One key, and what a token it verifies must satisfy: its one algorithm
/// and the rules.
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub validation: Validation,
}

/// Every key a token may be verified with.
#[derive(Default)]
pub struct KeySet {
    /// The HS256 secret, for tokens with no `kid`.
    secret: Option<VerifyingKey>,
    /// The JWKS keys, by `kid`.
    by_kid: HashMap<String, VerifyingKey>,
    /// JWKS keys left out, and why (logged when the set is loaded).
    pub skipped: Vec<String>,
}

impl KeySet {
    /// The keys in `contents`; an error says which file is wrong and how.
    pub fn parse(
        files: &KeyFiles,
        contents: &KeyFileContents,
        rules: &Rules,
    ) -> Result<Self, String> {
        let mut set = Self::default();
        if let (Some(path), Some(bytes)) = (&files.secret, &contents.secret) {
            let secret = secret(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            set.secret = Some(VerifyingKey {
                key: DecodingKey::from_secret(secret),
                validation: rules.validation(Algorithm::HS256),
            });
        }
        if let (Some(path), Some(bytes)) = (&files.jwks, &contents.jwks) {
            set.add_jwks(bytes, rules)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(set)
    }

    /// The key for a token with this `kid`: the JWKS key of that id; with
    /// none, the secret, or the JWKS's only key.
    pub fn for_kid(&self, kid: Option<&str>) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.secret.as_ref().or_else(|| match self.by_kid.len() {
                1 => self.by_kid.values().next(),
                _ => None,
            }),
        }
    }

    /// How many keys there are, for the log.
    pub fn len(&self) -> usize {
        usize::from(self.secret.is_some()) + self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add_jwks(&mut self, bytes: &[u8], rules: &Rules) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "is not a JWKS document ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        for (index, value) in document.keys.into_iter().enumerate() {
            match verifying_key(value, rules) {
                Ok((kid, key)) => {
                    self.by_kid.insert(kid, key);
                }
                Err(why) => self.skipped.push(format!("key {index}: {why}")),
            }
        }
        if self.by_kid.is_empty() {
            return Err(format!(
                "holds no signing key switchboard can use ({})",
                self.skipped.join("; ")
            ));
        }
        Ok(())
    }
}

/// The secret's bytes, a trailing newline (as `echo` writes) dropped.
fn secret(bytes: &[u8]) -> Result<&[u8], String> {
    let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes; this one has {}",
            secret.len()
        ));
    }
    Ok(secret)
}

/// One JWKS entry as a key switchboard verifies with, or why not.
fn verifying_key(
    value: serde_json::Value,
    rules: &Rules,
) -> Result<(String, VerifyingKey), String> {
    let jwk: Jwk = serde_json::from_value(value)
        .map_err(|e| format!("not a key switchboard knows ({:?} error)", e.classify()))?;
    let kid = jwk.common.key_id.clone().ok_or("it has no kid")?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err(format!("{kid:?} is not for signatures"));
    }
    let algorithm = algorithm(&jwk).map_err(|e| format!("{kid:?} {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{kid:?} is malformed: {e}"))?;
    let validation = rules.validation(algorithm);
    Ok((kid, VerifyingKey { key, validation }))
}

/// The one algorithm a JWKS key verifies: the one it names, else the one
/// its type implies. Symmetric keys belong in the secret file.
fn algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("is on a curve switchboard does not verify".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("is on a curve switchboard does not verify".into())
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("is a symmetric key (put an HS256 secret in its own file)".into())
        }
    };
    let named = match jwk.common.key_algorithm {
        None => return Ok(implied),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(other) => return Err(format!("names {other:?}, not a signature algorithm")),
    };
    let rsa = |alg| {
        matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    };
    if named != implied && !(rsa(named) && rsa(implied)) {
        return Err(format!("names {named:?}, which its key type does not fit"));
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(keys: serde_json::Value) -> Result<KeySet, String> {
        let files = KeyFiles {
            secret: None,
            jwks: Some("jwks.json".into()),
        };
        let contents = KeyFileContents {
            secret: None,
            jwks: Some(serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()),
        };
        KeySet::parse(&files, &contents, &Rules::default())
    }

    #[test]
    fn each_key_allows_the_algorithm_of_its_type_and_unusable_keys_are_left_out() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/auth/jwks.json"
        ))
        .unwrap();
        let document: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
        let mut keys = document["keys"].as_array().unwrap().clone();
        keys.push(serde_json::json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}));
        let mut encryption = keys[0].clone();
        encryption["kid"] = "enc".into();
        encryption["use"] = "enc".into();
        keys.push(encryption);
        let mut mislabelled = keys[1].clone();
        mislabelled["kid"] = "ec-as-rsa".into();
        mislabelled["alg"] = "RS256".into();
        keys.push(mislabelled);
        let set = jwks(keys.into()).unwrap();
        let algorithm = |kid| {
            set.for_kid(Some(kid))
                .map(|key| key.validation.algorithms[0])
        };
        assert_eq!(algorithm("rsa-1"), Some(Algorithm::RS256));
        assert_eq!(algorithm("ec-1"), Some(Algorithm::ES256));
        assert_eq!(algorithm("ed-1"), Some(Algorithm::EdDSA));
        for left_out in ["shared", "enc", "ec-as-rsa"] {
            assert!(set.for_kid(Some(left_out)).is_none(), "{left_out}");
        }
        assert_eq!(set.skipped.len(), 3, "{:?}", set.skipped);
        // Several keys and no kid: no key is guessed.
        assert!(set.for_kid(None).is_none());
    }

    #[test]
    fn a_jwks_with_no_usable_key_or_a_short_secret_is_refused_without_its_text() {
        let err = jwks(serde_json::json!([{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]))
            .err()
            .unwrap();
        assert!(err.contains("no signing key"), "{err}");
        let files = KeyFiles {
            secret: Some("secret".into()),
            jwks: None,
        };
        let contents = KeyFileContents {
            secret: Some(b"hunter2-is-too-short\n".to_vec()),
            jwks: None,
        };
        let err = KeySet::parse(&files, &contents, &Rules::default())
            .err()
            .unwrap();
        assert!(
            err.contains("at least 32 bytes") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
