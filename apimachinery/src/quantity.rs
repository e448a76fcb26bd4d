//! resource.Quantity values (`100m`, `1.5Gi`, `2e3`) as exact numbers, for resource
//! arithmetic in the scheduler and the node agent.

/// A parsed quantity, in thousandths of the unit (so `100m` CPU is 100, `1Ki` is 1,024,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(pub i128);

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct QuantityError(pub String);

impl Quantity {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_string());
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() || number == "+" || number == "-" {
            return Err(err());
        }
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if !int_part.chars().all(|c| c.is_ascii_digit())
            || !frac_part.chars().all(|c| c.is_ascii_digit())
            || (int_part.is_empty() && frac_part.is_empty())
        {
            return Err(err());
        }
        // value = mantissa / 10^scale
        let mantissa: i128 = format!("{int_part}{frac_part}")
            .parse()
            .map_err(|_| err())?;
        let scale = frac_part.len() as i32;
        // multiplier as (numerator, power-of-ten exponent)
        let (mult, exp10): (i128, i32) = match suffix {
            "" => (1, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            e if e.starts_with(['e', 'E']) => (1, e[1..].parse().map_err(|_| err())?),
            _ => return Err(err()),
        };
        // milli = mantissa * mult * 10^(exp10 + 3 - scale), rounded up as upstream rounds.
        let exp = exp10 + 3 - scale;
        let base = mantissa.checked_mul(mult).ok_or_else(err)?;
        let milli = if exp >= 0 {
            base.checked_mul(10i128.checked_pow(exp as u32).ok_or_else(err)?)
                .ok_or_else(err)?
        } else {
            let div = 10i128.checked_pow((-exp) as u32).ok_or_else(err)?;
            (base + div - 1) / div
        };
        Ok(Quantity(if negative { -milli } else { milli }))
    }

    /// The value in thousandths (CPU millicores).
    pub fn milli(self) -> i128 {
        self.0
    }

    /// The value in whole units, rounded up (bytes, pod counts).
    pub fn value(self) -> i128 {
        (self.0 + 999).div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn suffixes_scale_as_upstream() {
        let cases = [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("1Mi", 1_048_576_000),
            ("1e3", 1_000_000),
            ("250u", 1),
            ("1n", 1),
            ("-1", -1000),
        ];
        for (s, milli) in cases {
            assert_eq!(Quantity::parse(s).unwrap().milli(), milli, "{s}");
        }
        assert_eq!(Quantity::parse("1Gi").unwrap().value(), 1 << 30);
        assert_eq!(
            Quantity::parse("1500m").unwrap().value(),
            2,
            "values round up"
        );
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for bad in ["", "abc", "1x", "1.2.3", "m", "--1", "1Gib"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,24}") {
            let _ = Quantity::parse(&s);
        }
    }
}
