//! Money: integer fen, never floating point.

use serde::{Deserialize, Serialize};

/// The only currency the brand sells in today.
pub const CNY: &str = "CNY";

/// An amount of money in the smallest unit (fen for CNY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fen(pub i64);

impl Fen {
    /// Formats as yuan with two decimals, e.g. `¥1,280.00` style without grouping: `1280.00`.
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fen_as_yuan() {
        assert_eq!(Fen(128_000).to_yuan_string(), "1280.00");
        assert_eq!(Fen(5).to_yuan_string(), "0.05");
        assert_eq!(Fen(-250).to_yuan_string(), "-2.50");
    }
}
