//! [`Figure`]: a measured value, or null with the reason it is missing — the shape of every
//! figure in megatest's reports ("ours measures everything, or says `null` and why").

use serde::{Deserialize, Serialize};

/// A measured value, or null with the reason it is missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure<T: Serialize> {
    /// The measured value; None when it could not be measured.
    pub value: Option<T>,
    /// Why `value` is None (absent when measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl<T: Serialize> Figure<T> {
    /// A measured value.
    pub fn measured(value: T) -> Self {
        Figure {
            value: Some(value),
            reason: None,
        }
    }

    /// The value transformed (units), the reason kept.
    pub fn map_value<U: Serialize>(self, f: impl FnOnce(T) -> U) -> Figure<U> {
        Figure {
            value: self.value.map(f),
            reason: self.reason,
        }
    }

    /// No value, with the reason.
    pub fn missing(reason: impl Into<String>) -> Self {
        Figure {
            value: None,
            reason: Some(reason.into()),
        }
    }
}
