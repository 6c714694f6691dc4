//! Number arguments: decimal or `0x`-prefixed hexadecimal.

/// Parse a `u32` written in decimal (`4095`) or hexadecimal (`0xFFF`).
pub fn parse_u32(text: &str) -> Result<u32, String> {
    let value = parse_u64(text)?;
    u32::try_from(value).map_err(|_| format!("`{text}` is larger than {}", u32::MAX))
}

/// Parse a `u64` written in decimal or `0x`-prefixed hexadecimal.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let trimmed = text.trim().replace('_', "");
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => trimmed.parse::<u64>(),
    };
    parsed.map_err(|_| format!("`{text}` is not a number (use decimal, or hex like 0x100)"))
}

/// A parser of `u32` values from `min` to `max` (decimal or hex), for clap:
/// out of range is refused with the range in the message.
pub fn u32_in(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync {
    move |text| {
        let value = parse_u32(text)?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{value} is out of range: use {min} to {max}"))
        }
    }
}

/// Parse a `u64` of at least 1 (a 1-based count), decimal or hex.
pub fn parse_count_u64(text: &str) -> Result<u64, String> {
    match parse_u64(text)? {
        0 => Err("counts start at 1".into()),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_hex_and_name_the_range() {
        let bits = u32_in(24, 64);
        assert_eq!(bits("0x18"), Ok(24));
        assert_eq!(bits("64"), Ok(64));
        assert_eq!(bits("23"), Err("23 is out of range: use 24 to 64".into()));
        assert!(bits("0x41").unwrap_err().contains("use 24 to 64"));
        assert!(bits("many").is_err());
        assert_eq!(parse_count_u64("0x2"), Ok(2));
        assert!(parse_count_u64("0").is_err());
    }

    #[test]
    fn decimal_and_hex() {
        assert_eq!(parse_u32("4095"), Ok(4095));
        assert_eq!(parse_u32("0xFFF"), Ok(4095));
        assert_eq!(parse_u32("0X10"), Ok(16));
        assert_eq!(parse_u32("1_000"), Ok(1000));
        assert!(parse_u32("-1").is_err());
        assert!(parse_u32("0x").is_err());
        assert!(parse_u32("4294967296").is_err());
        assert!(parse_u32("ten").is_err());
    }
}
