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
    fn rejects_bad_ids() {
        assert!(SandboxId::parse("abc").is_err());
        assert!(SandboxId::parse(&"A".repeat(64)).is_err());
        assert!(SandboxId::parse(&"g".repeat(64)).is_err());
        assert!(SandboxId::parse(&"0".repeat(64)).is_ok());
    }
}
