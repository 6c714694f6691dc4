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

#[cfg(test)]
mod tests {
    use super::*;

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
