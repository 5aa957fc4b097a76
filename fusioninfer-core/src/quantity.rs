//! Exact arithmetic on Kubernetes resource quantities, for the PodGroup's `minResources`.
//!
//! Written here because `kube_quantity` is pinned to a different `k8s-openapi` than the rest of
//! the workspace. Quantities are held as an integer count of nano-units (i128), which is exact
//! for every suffix from `n` to `E`/`Ei` at the sizes real pods request.

use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const NANO: i128 = 1_000_000_000;

/// A parsed quantity in nano-units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(pub i128);

/// A quantity string that is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1e3)")]
pub struct QuantityError(pub String);

impl Nanos {
    /// Parses `text` (`<number><suffix>`: decimal `n u m k M G T P E`, binary `Ki … Ei`, or an
    /// exponent `e<n>`/`E<n>`).
    pub fn parse(text: &str) -> Result<Nanos, QuantityError> {
        let err = || QuantityError(text.to_owned());
        // No trimming: the API server refuses quantities with spaces.
        let trimmed = text;
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(trimmed.len());
        let (number, suffix) = trimmed.split_at(split);
        let (numerator, denominator) = parse_decimal(number).ok_or_else(err)?;
        let (multiplier, divisor): (i128, i128) = match suffix {
            "" => (NANO, 1),
            "n" => (1, 1),
            "u" => (1_000, 1),
            "m" => (1_000_000, 1),
            "k" => (NANO * 1_000, 1),
            "M" => (NANO * 1_000_000, 1),
            "G" => (NANO * 1_000_000_000, 1),
            "T" => (NANO * 1_000_000_000_000, 1),
            "P" => (NANO * 1_000_000_000_000_000, 1),
            "E" => (NANO * 1_000_000_000_000_000_000, 1),
            "Ki" => (NANO << 10, 1),
            "Mi" => (NANO << 20, 1),
            "Gi" => (NANO << 30, 1),
            "Ti" => (NANO << 40, 1),
            "Pi" => (NANO << 50, 1),
            "Ei" => (NANO << 60, 1),
            exp if exp.starts_with(['e', 'E']) => {
                let power: i32 = exp[1..].parse().map_err(|_| err())?;
                if !(-9..=18).contains(&power) {
                    return Err(err());
                }
                if power >= 0 {
                    (NANO * 10i128.pow(power as u32), 1)
                } else {
                    (NANO, 10i128.pow(power.unsigned_abs()))
                }
            }
            _ => return Err(err()),
        };
        let scaled = numerator.checked_mul(multiplier).ok_or_else(err)?;
        Ok(Nanos(scaled / (denominator * divisor)))
    }

    /// Checked sum.
    pub fn checked_add(self, other: Nanos) -> Option<Nanos> {
        self.0.checked_add(other.0).map(Nanos)
    }

    /// Checked product with a pod count.
    pub fn checked_mul(self, count: i128) -> Option<Nanos> {
        self.0.checked_mul(count).map(Nanos)
    }

    /// As a canonical quantity: binary suffix when the value is a whole number of Ki/Mi/Gi/…,
    /// else a plain integer, else milli- or nano-units.
    pub fn to_quantity(self) -> Quantity {
        Quantity(self.to_string())
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value % NANO != 0 {
            return if value % 1_000_000 == 0 {
                write!(f, "{}m", value / 1_000_000)
            } else {
                write!(f, "{value}n")
            };
        }
        let units = value / NANO;
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let size = 1i128 << shift;
            if units != 0 && units % size == 0 {
                return write!(f, "{}{suffix}", units / size);
            }
        }
        write!(f, "{units}")
    }
}

/// `"1.25"` → (125, 100).
fn parse_decimal(number: &str) -> Option<(i128, i128)> {
    let (sign, digits) = match number.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return None;
    }
    let denominator = 10i128.pow(fraction.len() as u32);
    let mut numerator: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        numerator = numerator
            .checked_mul(10)?
            .checked_add(i128::from(b - b'0'))?;
    }
    Some((sign * numerator, denominator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Nanos {
        Nanos::parse(text).unwrap()
    }

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(n("500m"), Nanos(500_000_000));
        assert_eq!(n("2"), Nanos(2 * NANO));
        assert_eq!(n("1.5"), Nanos(1_500_000_000));
        assert_eq!(n("16Gi"), Nanos((16i128 << 30) * NANO));
        assert_eq!(n("1k"), Nanos(1000 * NANO));
        assert_eq!(n("1e3"), n("1k"));
        assert_eq!(n("100n"), Nanos(100));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "5 Gi", "1Zi", "1e99", ".", " 1", "1 "] {
            assert!(Nanos::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(
            n("16Gi").checked_add(n("16Gi")).unwrap().to_string(),
            "32Gi"
        );
        assert_eq!(n("500m").checked_mul(3).unwrap().to_string(), "1500m");
        assert_eq!(n("4").checked_mul(2).unwrap().to_string(), "8");
        assert_eq!(n("1000").to_string(), "1000");
        assert_eq!(n("1536Mi").to_string(), "1536Mi");
    }
}
