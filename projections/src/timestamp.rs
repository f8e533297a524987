//! IIB's timestamp format: Python's naive `isoformat()` plus `Z`, which drops the fraction
//! when the microseconds are zero (`2020-02-12T17:03:00Z`, `2020-02-12T17:03:00.123456Z`).

use chrono::{DateTime, Timelike, Utc};

pub fn iib_timestamp(at: &DateTime<Utc>) -> String {
    let micros = at.nanosecond() / 1_000 % 1_000_000;
    if micros == 0 {
        at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        format!("{}.{micros:06}Z", at.format("%Y-%m-%dT%H:%M:%S"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_is_shown_only_when_not_zero() {
        let at: DateTime<Utc> = "2020-02-12T17:03:00Z".parse().unwrap();
        assert_eq!(iib_timestamp(&at), "2020-02-12T17:03:00Z");
        let at: DateTime<Utc> = "2020-02-12T17:03:00.012300Z".parse().unwrap();
        assert_eq!(iib_timestamp(&at), "2020-02-12T17:03:00.012300Z");
        let at: DateTime<Utc> = "2020-02-12T17:03:00.000000900Z".parse().unwrap();
        assert_eq!(iib_timestamp(&at), "2020-02-12T17:03:00Z");
    }
}
