//! Identifiers: request and batch ids are integers from one sequence each, as IIB's are.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! int_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ": a positive integer, as IIB's.")]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Returns `None` for 0, which no sequence hands out.
            pub fn new(value: u64) -> Option<Self> {
                (value > 0).then_some(Self(value))
            }
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<u64>().ok().and_then(Self::new).ok_or_else(|| {
                    format!("{s:?} is not a valid {} id (a positive integer)", $what)
                })
            }
        }
    };
}

int_id!(RequestId, "request");
int_id!(BatchId, "batch");

/// Names one worker process/actor, e.g. `hostname:pid:queue`; recorded with every claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_garbage_are_not_ids() {
        assert!(RequestId::new(0).is_none());
        assert!("0".parse::<RequestId>().is_err());
        assert!("-3".parse::<BatchId>().is_err());
        assert!("abc".parse::<BatchId>().is_err());
        assert_eq!("42".parse::<RequestId>().unwrap().get(), 42);
    }
}
