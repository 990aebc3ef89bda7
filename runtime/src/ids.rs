//! Validated identifiers.

use std::fmt;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const LEN: usize = 64;

            /// A new random id.
            pub fn generate() -> Self {
                let mut bytes = [0u8; Self::LEN / 2];
                getrandom::fill(&mut bytes).expect("the kernel's random source is available");
                Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
            }

            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if is_hex_id(s, Self::LEN) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { what: $what, id: s.into() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The 13-character form shown by crictl and podbay's CLI.
            pub fn short(&self) -> &str {
                &self.0[..13]
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        // Hashes and compares as its string, so maps keyed by ids can be searched by &str.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {what} id {id:?}: expected 64 lowercase hex characters")]
pub struct InvalidId {
    pub what: &'static str,
    pub id: String,
}

hex_id!(
    /// A sandbox id: 64 lowercase hex characters, as containerd and CRI-O use.
    SandboxId,
    "sandbox"
);
hex_id!(
    /// A container id: 64 lowercase hex characters.
    ContainerId,
    "container"
);

/// Why an id given by a client matched no object, or more than one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    NotFound,
    Ambiguous,
}

/// Finds an object by its full id or by a unique prefix of it (as crictl allows).
pub(crate) fn resolve<K, V>(map: &std::collections::HashMap<K, V>, id: &str) -> Result<V, Lookup>
where
    K: std::borrow::Borrow<str> + Eq + std::hash::Hash,
    V: Clone,
{
    if let Some(v) = map.get(id) {
        return Ok(v.clone());
    }
    if id.is_empty() {
        return Err(Lookup::NotFound);
    }
    let mut found = map.iter().filter(|(k, _)| k.borrow().starts_with(id));
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Ok(v.clone()),
        (None, _) => Err(Lookup::NotFound),
        (Some(_), Some(_)) => Err(Lookup::Ambiguous),
    }
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.short().len(), 13);
    }

    #[test]
    fn resolves_full_ids_and_unique_prefixes() {
        let (a, b) = (
            SandboxId::parse(&"ab".repeat(32)).unwrap(),
            SandboxId::parse(&"ac".repeat(32)).unwrap(),
        );
        let map = std::collections::HashMap::from([(a.clone(), 1), (b, 2)]);
        assert_eq!(resolve(&map, a.as_str()), Ok(1));
        assert_eq!(resolve(&map, "aba"), Ok(1));
        assert_eq!(resolve(&map, "a"), Err(Lookup::Ambiguous));
        assert_eq!(resolve(&map, "ff"), Err(Lookup::NotFound));
        assert_eq!(resolve(&map, ""), Err(Lookup::NotFound));
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(SandboxId::parse("abc").is_err());
        assert!(SandboxId::parse(&"A".repeat(64)).is_err());
        assert!(SandboxId::parse(&"g".repeat(64)).is_err());
        assert!(SandboxId::parse(&"0".repeat(64)).is_ok());
    }
}
