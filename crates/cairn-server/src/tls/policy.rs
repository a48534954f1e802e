//! `--cipher-suites`, `--tls-min-version` and `--tls-max-version`: which protocol versions and
//! cipher suites both ports negotiate.
//!
//! etcd takes Go's cipher-suite names. rustls implements only the ECDHE suites with AEAD
//! ciphers for TLS 1.2 (AES-GCM and ChaCha20-Poly1305, with ECDSA or RSA certificates); those
//! are mapped, any other name Go knows (CBC, RC4, 3DES, static-RSA key exchange) is refused as
//! unsupported, and a name Go does not know is refused with etcd's message.
//!
//! As in Go, the list only restricts TLS 1.2: TLS 1.3's suites are not configurable, all three
//! stay enabled whenever TLS 1.3 is, and their names (`TLS_AES_128_GCM_SHA256`, ...) are
//! accepted in the list without effect. To allow only the listed suites, also give
//! `--tls-max-version=TLS1.2`. As etcd 3.5 does, suites with `--tls-min-version=TLS1.3` are
//! refused.

use super::TlsError;
use rustls::crypto::ring::cipher_suite as suites;
use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use std::sync::Arc;

/// A TLS protocol version etcd can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS1.2`.
    Tls12,
    /// `TLS1.3`.
    Tls13,
}

impl TlsVersion {
    /// Parses etcd's spelling; empty means no limit (`None`).
    pub fn parse(text: &str) -> Result<Option<TlsVersion>, TlsError> {
        match text {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(TlsVersion::Tls12)),
            "TLS1.3" => Ok(Some(TlsVersion::Tls13)),
            other => Err(TlsError::Config(format!(
                "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            ))),
        }
    }

    /// etcd's spelling.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        }
    }
}

/// Go's names of TLS 1.3 suites: accepted, without effect.
const TLS13_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Names Go knows (`tls.CipherSuites()` and `tls.InsecureCipherSuites()`) that rustls does not
/// implement.
const GO_ONLY_NAMES: [&str; 16] = [
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The TLS 1.2 suite a Go name stands for, `None` for a TLS 1.3 name.
fn suite(name: &str) -> Result<Option<SupportedCipherSuite>, TlsError> {
    let suite = match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        n if TLS13_NAMES.contains(&n) => return Ok(None),
        n if GO_ONLY_NAMES.contains(&n) => {
            return Err(TlsError::Config(format!(
                "TLS cipher suite {n:?} is not supported by cairn: rustls implements only ECDHE suites with AES-GCM or ChaCha20-Poly1305 for TLS 1.2 (TLS_ECDHE_{{ECDSA,RSA}}_WITH_{{AES_128_GCM_SHA256,AES_256_GCM_SHA384,CHACHA20_POLY1305_SHA256}})"
            )))
        }
        n => {
            return Err(TlsError::Config(format!(
                "unexpected TLS cipher suite {n:?}"
            )))
        }
    };
    Ok(Some(suite))
}

/// Versions and suites, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsPolicy {
    /// The names given to `--cipher-suites`, in order.
    pub cipher_suite_names: Vec<String>,
    /// The TLS 1.2 suites they select (empty: rustls's defaults).
    tls12_suites: Vec<SupportedCipherSuite>,
    /// `--tls-min-version` (`None`: TLS 1.2, the lowest rustls speaks).
    pub min_version: Option<TlsVersion>,
    /// `--tls-max-version` (`None`: the highest available).
    pub max_version: Option<TlsVersion>,
}

impl TlsPolicy {
    /// Validates the flags' values, in the order (and with the messages) etcd 3.5 does.
    pub fn new(cipher_suites: &[String], min: &str, max: &str) -> Result<TlsPolicy, TlsError> {
        let min_version = TlsVersion::parse(min)?;
        let max_version = TlsVersion::parse(max)?;
        if let (Some(lo), Some(hi)) = (min_version, max_version) {
            if lo > hi {
                return Err(TlsError::Config(format!(
                    "min version ({min}) is greater than max version ({max})"
                )));
            }
        }
        if min_version == Some(TlsVersion::Tls13) && !cipher_suites.is_empty() {
            return Err(TlsError::Config(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        let mut tls12_suites = Vec::new();
        for name in cipher_suites {
            if let Some(s) = suite(name)? {
                tls12_suites.push(s);
            }
        }
        let policy = TlsPolicy {
            cipher_suite_names: cipher_suites.to_vec(),
            tls12_suites,
            min_version,
            max_version,
        };
        if policy.versions().is_empty() {
            return Err(TlsError::Config(format!(
                "--cipher-suites {} leaves no usable cipher suite with --tls-max-version={max}",
                cipher_suites.join(",")
            )));
        }
        Ok(policy)
    }

    /// The protocol versions to offer.
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let lo = self.min_version.unwrap_or(TlsVersion::Tls12);
        let hi = self.max_version.unwrap_or(TlsVersion::Tls13);
        // A list of only TLS 1.3 names leaves TLS 1.2 nothing to negotiate (as in Go).
        let tls12_usable = self.cipher_suite_names.is_empty() || !self.tls12_suites.is_empty();
        let mut out = Vec::new();
        if lo <= TlsVersion::Tls12 && hi >= TlsVersion::Tls12 && tls12_usable {
            out.push(&rustls::version::TLS12);
        }
        if hi >= TlsVersion::Tls13 {
            out.push(&rustls::version::TLS13);
        }
        out
    }

    /// *ring*'s provider restricted to the configured TLS 1.2 suites (TLS 1.3's all kept).
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.tls12_suites.is_empty() {
            let mut chosen: Vec<SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .collect();
            chosen.extend(self.tls12_suites.iter().copied());
            provider.cipher_suites = chosen;
        }
        Arc::new(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(TlsVersion::parse("").unwrap(), None);
        assert_eq!(
            TlsVersion::parse("TLS1.3").unwrap(),
            Some(TlsVersion::Tls13)
        );
        let err = TlsVersion::parse("TLS1.1").unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)"#
        );
        let err = TlsPolicy::new(&[], "TLS1.3", "TLS1.2")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        let only13 = TlsPolicy::new(&[], "TLS1.3", "").unwrap();
        assert_eq!(only13.versions(), vec![&rustls::version::TLS13]);
        let only12 = TlsPolicy::new(&[], "", "TLS1.2").unwrap();
        assert_eq!(only12.versions(), vec![&rustls::version::TLS12]);
        assert_eq!(TlsPolicy::default().versions().len(), 2);
    }

    #[test]
    fn cipher_suites_map_or_are_refused() {
        let p = TlsPolicy::new(
            &names(&[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_128_GCM_SHA256",
            ]),
            "",
            "",
        )
        .unwrap();
        let provider = p.provider();
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            vec![
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(provider.cipher_suites.len(), 5, "three TLS 1.3 suites stay");

        let err = TlsPolicy::new(&names(&["TLS_FOO"]), "", "")
            .unwrap_err()
            .to_string();
        assert_eq!(err, r#"unexpected TLS cipher suite "TLS_FOO""#);
        let err = TlsPolicy::new(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]), "", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not supported by cairn"), "{err}");
        let err = TlsPolicy::new(
            &names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]),
            "TLS1.3",
            "",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "cipher suites cannot be configured when only TLS1.3 is enabled"
        );
        // Only TLS 1.3 names: TLS 1.2 cannot be negotiated; with TLS 1.2 as the maximum
        // nothing can.
        let p = TlsPolicy::new(&names(&["TLS_AES_128_GCM_SHA256"]), "", "").unwrap();
        assert_eq!(p.versions(), vec![&rustls::version::TLS13]);
        assert!(TlsPolicy::new(&names(&["TLS_AES_128_GCM_SHA256"]), "", "TLS1.2").is_err());
    }
}
