//! [`SecureMediaMode`]: how a request proves access to secure media.

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

/// How requests prove access to secure media. The numeric values are the vendor's.
///
/// ```
/// use secure_media_core::SecureMediaMode;
///
/// assert_eq!(SecureMediaMode::default(), SecureMediaMode::Embedded);
/// assert_eq!(SecureMediaMode::try_from(1u8).unwrap(), SecureMediaMode::HeaderBased);
/// assert_eq!("Presigned".parse::<SecureMediaMode>().unwrap(), SecureMediaMode::Presigned);
/// assert_eq!(SecureMediaMode::HeaderBased.to_string(), "header");
/// assert!(SecureMediaMode::try_from(3u8).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
#[repr(u8)]
pub enum SecureMediaMode {
    /// `?fat=<token>` is added to the URL (the vendor's default).
    #[default]
    Embedded = 0,
    /// `Authorization: Bearer <token>` is sent; the URL stays clean.
    HeaderBased = 1,
    /// The clean URL is exchanged for a time-limited presigned URL.
    Presigned = 2,
}

impl SecureMediaMode {
    /// The name used by [`Display`](fmt::Display) and [`FromStr`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::HeaderBased => "header",
            Self::Presigned => "presigned",
        }
    }
}

impl TryFrom<u8> for SecureMediaMode {
    type Error = ConfigError;

    /// The vendor's numbers: 0 embedded, 1 header, 2 presigned.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownModeNumber`] for any other number.
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::Embedded),
            1 => Ok(Self::HeaderBased),
            2 => Ok(Self::Presigned),
            other => Err(ConfigError::UnknownModeNumber(other)),
        }
    }
}

impl From<SecureMediaMode> for u8 {
    fn from(mode: SecureMediaMode) -> u8 {
        mode as u8
    }
}

impl FromStr for SecureMediaMode {
    type Err = ConfigError;

    /// Accepts the names case-insensitively, plus the vendor's spellings
    /// `headerBased`, `header_based` and `header-based`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownModeName`] for any other name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        let is = |candidate: &str| name.eq_ignore_ascii_case(candidate);
        if is("embedded") {
            Ok(Self::Embedded)
        } else if is("header") || is("headerbased") || is("header_based") || is("header-based") {
            Ok(Self::HeaderBased)
        } else if is("presigned") {
            Ok(Self::Presigned)
        } else {
            Err(ConfigError::UnknownModeName(s.to_owned()))
        }
    }
}

impl fmt::Display for SecureMediaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl TryFrom<String> for SecureMediaMode {
    type Error = ConfigError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

#[cfg(feature = "serde")]
impl From<SecureMediaMode> for String {
    fn from(mode: SecureMediaMode) -> String {
        mode.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_vendor() {
        assert_eq!(SecureMediaMode::Embedded as u8, 0);
        assert_eq!(SecureMediaMode::HeaderBased as u8, 1);
        assert_eq!(SecureMediaMode::Presigned as u8, 2);
        for n in 0..=2u8 {
            assert_eq!(u8::from(SecureMediaMode::try_from(n).unwrap()), n);
        }
    }

    #[test]
    fn three_and_up_is_a_clear_error() {
        for n in [3u8, 4, 255] {
            let err = SecureMediaMode::try_from(n).unwrap_err();
            assert_eq!(err, ConfigError::UnknownModeNumber(n));
            assert!(err.to_string().contains("expected 0 (embedded)"));
        }
    }

    #[test]
    fn names_round_trip_case_insensitively() {
        for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
            assert_eq!(mode.to_string().parse::<SecureMediaMode>().unwrap(), mode);
            assert_eq!(mode.to_string().to_uppercase().parse::<SecureMediaMode>().unwrap(), mode);
        }
        assert_eq!("headerBased".parse::<SecureMediaMode>().unwrap(), SecureMediaMode::HeaderBased);
        assert!(matches!("cookie".parse::<SecureMediaMode>(), Err(ConfigError::UnknownModeName(n)) if n == "cookie"));
    }

    #[test]
    fn default_is_embedded() {
        assert_eq!(SecureMediaMode::default(), SecureMediaMode::Embedded);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_the_names() {
        let json = serde_json::to_string(&SecureMediaMode::HeaderBased).unwrap();
        assert_eq!(json, "\"header\"");
        let back: SecureMediaMode = serde_json::from_str("\"PRESIGNED\"").unwrap();
        assert_eq!(back, SecureMediaMode::Presigned);
        assert!(serde_json::from_str::<SecureMediaMode>("\"nope\"").is_err());
    }
}
