//! Refresh schedules: how often the scheduler refreshes a stream table.
//!
//! A schedule is a duration: `30s`, `5m`, `1h`, `2d`, a bare number of
//! seconds, or PostgreSQL-style `'30 seconds'` / `'5 minutes'`. NULL means
//! "manual refresh only".

use crate::error::CoreError;

/// Parse a schedule into whole seconds (at least 1).
pub fn parse_schedule(input: &str) -> Result<u64, CoreError> {
    let err = |why: &str| CoreError::InvalidSchedule(input.to_string(), why.to_string());
    let text = input.trim().to_ascii_lowercase();
    if text.is_empty() {
        return Err(err("empty schedule"));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| err("expected a number followed by a unit such as 30s, 5m, 1h"))?;
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        other => return Err(err(&format!("unknown unit \"{other}\""))),
    };
    let seconds = amount
        .checked_mul(factor)
        .ok_or_else(|| err("schedule too long"))?;
    if seconds == 0 {
        return Err(err("schedule must be at least one second"));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_schedule("30s").unwrap(), 30);
        assert_eq!(parse_schedule("5m").unwrap(), 300);
        assert_eq!(parse_schedule(" 2 hours ").unwrap(), 7200);
        assert_eq!(parse_schedule("1d").unwrap(), 86_400);
        assert_eq!(parse_schedule("45").unwrap(), 45);
        assert_eq!(parse_schedule("10 seconds").unwrap(), 10);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "0s",
            "abc",
            "5 fortnights",
            "-5s",
            "99999999999999999999s",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
