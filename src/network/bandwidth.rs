//! Pod traffic shaping from the `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` annotations, for plugins with the
//! `bandwidth` capability. Same reading as kubelet/containerd: the value is a
//! Kubernetes quantity in bits per second, rounded up, between 1k and 1P;
//! the burst is left at u32::MAX so only the rate limits (containerd does so).

use std::collections::HashMap;

use super::invocation::CniBandwidth;

pub const INGRESS_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";

const MIN_RATE: u128 = 1_000;
const MAX_RATE: u128 = 1_000_000_000_000_000;

/// The bandwidth capability value for a pod, None when neither annotation is set.
pub fn bandwidth_from_annotations(
    annotations: &HashMap<String, String>,
) -> Result<Option<CniBandwidth>, String> {
    let rate = |key: &str| -> Result<Option<u64>, String> {
        let Some(raw) = annotations.get(key) else {
            return Ok(None);
        };
        let bits = parse_quantity(raw).ok_or_else(|| {
            format!("annotation {key}={raw:?} is not a quantity like \"10M\" (bits per second)")
        })?;
        if !(MIN_RATE..=MAX_RATE).contains(&bits) {
            return Err(format!(
                "annotation {key}={raw:?} is outside the accepted range 1k..1P bits per second"
            ));
        }
        Ok(Some(u64::try_from(bits).unwrap_or(u64::MAX)))
    };
    let ingress = rate(INGRESS_ANNOTATION)?;
    let egress = rate(EGRESS_ANNOTATION)?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let burst = u64::from(u32::MAX);
    Ok(Some(CniBandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: ingress.map_or(0, |_| burst),
        egress_rate: egress.unwrap_or(0),
        egress_burst: egress.map_or(0, |_| burst),
    }))
}

/// A non-negative Kubernetes quantity ("100k", "1.5M", "2Gi", "1e6"),
/// rounded up to an integer; None if malformed or absurdly large.
pub fn parse_quantity(s: &str) -> Option<u128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: u128 = digits
        .trim_start_matches('0')
        .parse()
        .or_else(|_| {
            if digits.chars().all(|c| c == '0') {
                Ok(0)
            } else {
                Err(())
            }
        })
        .ok()?;
    // value = mantissa * num / den
    let mut num: u128 = 1;
    let mut den: u128 = 10u128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    let pow10 = |e: u32| 10u128.checked_pow(e);
    match suffix {
        "" => {}
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let k = "KMGTPE".find(&suffix[..1])? as u32 + 1;
            num = 1024u128.checked_pow(k)?;
        }
        "k" => num = pow10(3)?,
        "M" => num = pow10(6)?,
        "G" => num = pow10(9)?,
        "T" => num = pow10(12)?,
        "P" => num = pow10(15)?,
        "E" => num = pow10(18)?,
        "m" => den = den.checked_mul(pow10(3)?)?,
        "u" => den = den.checked_mul(pow10(6)?)?,
        "n" => den = den.checked_mul(pow10(9)?)?,
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let exp: i32 = exp.parse().ok()?;
            if exp >= 0 {
                num = pow10(exp.unsigned_abs())?;
            } else {
                den = den.checked_mul(pow10(exp.unsigned_abs())?)?;
            }
        }
    }
    let scaled = mantissa.checked_mul(num)?;
    Some(scaled.div_ceil(den))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (s, want) in [
            ("10M", Some(10_000_000)),
            ("1.5M", Some(1_500_000)),
            ("0.1M", Some(100_000)),
            ("100k", Some(100_000)),
            ("2Mi", Some(2 * 1024 * 1024)),
            ("1e6", Some(1_000_000)),
            ("1500m", Some(2)),
            ("42", Some(42)),
            ("", None),
            ("M", None),
            ("10X", None),
            ("-5M", None),
            ("1.2.3", None),
        ] {
            assert_eq!(parse_quantity(s), want, "{s:?}");
        }
    }

    #[test]
    fn annotations_become_rates_with_max_burst() {
        let mut a = HashMap::new();
        assert_eq!(bandwidth_from_annotations(&a), Ok(None));
        a.insert(INGRESS_ANNOTATION.to_string(), "10M".to_string());
        let bw = bandwidth_from_annotations(&a).unwrap().unwrap();
        assert_eq!(bw.ingress_rate, 10_000_000);
        assert_eq!(bw.ingress_burst, u64::from(u32::MAX));
        assert_eq!((bw.egress_rate, bw.egress_burst), (0, 0));
        a.insert(EGRESS_ANNOTATION.to_string(), "10".to_string());
        let err = bandwidth_from_annotations(&a).unwrap_err();
        assert!(
            err.contains(EGRESS_ANNOTATION) && err.contains("1k..1P"),
            "{err}"
        );
        a.insert(EGRESS_ANNOTATION.to_string(), "fast".to_string());
        assert!(
            bandwidth_from_annotations(&a)
                .unwrap_err()
                .contains("not a quantity")
        );
    }
}
