//! CronJob schedules: the standard five-field grammar (minute, hour, day of month, month,
//! day of week; lists, ranges, steps, month and day names, `?`) and the `@yearly`…`@hourly`
//! and `@every <duration>` descriptors, as the parser upstream's CronJob controller uses
//! accepts them (errors worded as it words them), and the times they fire at in a time zone.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Fires when every field matches.
    Fields(Fields),
    /// `@every <duration>`: a fixed interval.
    Every(SignedDuration),
}

/// Bit sets of the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    day_of_month: u64,
    month: u64,
    day_of_week: u64,
    /// Day of month given as `*` or `?` (then both day fields must match, else either).
    any_day_of_month: bool,
    /// The same for the day of week.
    any_day_of_week: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses `schedule`.
    pub fn parse(schedule: &str) -> Result<Schedule, String> {
        let schedule = schedule.trim();
        if let Some(descriptor) = schedule.strip_prefix('@') {
            let standard = match descriptor {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                d => {
                    let Some(every) = d.strip_prefix("every ") else {
                        return Err(format!("unrecognized descriptor: {schedule}"));
                    };
                    return parse_go_duration(every.trim())
                        .map(Schedule::Every)
                        .ok_or_else(|| format!("failed to parse duration {schedule}"));
                }
            };
            return Schedule::parse(standard);
        }
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let field = |i: usize, min: u32, max: u32, names: &[&str], base: u32, question: bool| {
            let mut bits = 0u64;
            let mut star = false;
            for part in fields[i].split(',') {
                let (b, s) = range(part, min, max, names, base, question)?;
                bits |= b;
                star |= s;
            }
            Ok::<_, String>((bits, star))
        };
        let (minute, _) = field(0, 0, 59, &[], 0, false)?;
        let (hour, _) = field(1, 0, 23, &[], 0, false)?;
        let (day_of_month, any_day_of_month) = field(2, 1, 31, &[], 0, true)?;
        let (month, _) = field(3, 1, 12, MONTHS, 1, false)?;
        let (mut day_of_week, any_day_of_week) = field(4, 0, 6, DAYS, 0, true)?;
        // 7 is Sunday too.
        if day_of_week & (1 << 7) != 0 {
            day_of_week |= 1;
        }
        Ok(Schedule::Fields(Fields {
            minute,
            hour,
            day_of_month,
            month,
            day_of_week,
            any_day_of_month,
            any_day_of_week,
        }))
    }

    /// The first time after `after` (exclusive) the schedule fires, in `tz`; `None` when it
    /// never does within the next five years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(every) => {
                let next = after.checked_add(*every).ok()?;
                // Whole seconds, as upstream's constant-delay schedule.
                Timestamp::from_second(next.as_second()).ok()
            }
            Schedule::Fields(f) => f.next_after(after, tz),
        }
    }

    /// The latest time in `(after, until]` the schedule fired, and how many times it fired in
    /// that span (counting stops at `limit`, as upstream stops at 100 missed starts).
    pub fn last_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        tz: &TimeZone,
        limit: usize,
    ) -> (Option<Timestamp>, usize) {
        let mut last = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t, tz) {
            if next > until {
                break;
            }
            last = Some(next);
            count += 1;
            if count >= limit {
                // Too many missed: jump to the last one before `until` without counting.
                let mut probe = next;
                while let Some(n) = self.next_after(probe, tz).filter(|n| *n <= until) {
                    probe = n;
                }
                return (Some(probe), count);
            }
            t = next;
        }
        (last, count)
    }
}

impl Fields {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.day_of_month & (1 << dt.day()) != 0;
        let dow = self.day_of_week & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.any_day_of_month || self.any_day_of_week {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Walk civil time in the zone, skipping whole months, days and hours that cannot
        // match; each candidate minute is checked against the instant it maps to (so times
        // a DST jump skips never fire and repeated ones fire once).
        let start = after.to_zoned(tz.clone()).datetime();
        let mut dt = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let horizon = start.checked_add(5.years()).ok()?;
        while dt <= horizon {
            if self.month & (1 << dt.month()) == 0 {
                dt = dt
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .start_of_day();
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            if let Ok(zoned) = dt.to_zoned(tz.clone()) {
                let ts = zoned.timestamp();
                // A local time that does not exist maps elsewhere: skip it.
                if zoned.datetime() == dt && ts > after {
                    return Some(ts);
                }
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

/// One comma-separated part of a field: its bits, and whether it was `*`/`?` (step 1).
fn range(
    expr: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
    question_ok: bool,
) -> Result<(u64, bool), String> {
    let slashed: Vec<&str> = expr.split('/').collect();
    if slashed.len() > 2 {
        return Err(format!("too many slashes: {expr}"));
    }
    let range: Vec<&str> = slashed[0].split('-').collect();
    if range.len() > 2 {
        return Err(format!("too many hyphens: {expr}"));
    }
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        match s.parse::<i64>() {
            Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {s}")),
            Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(_) => Err(format!(
                "failed to parse int from {s}: strconv.Atoi: parsing \"{s}\": invalid syntax"
            )),
        }
    };
    let star = range[0] == "*" || (question_ok && range[0] == "?");
    let (start, mut end) = if star {
        if range.len() > 1 {
            return Err(format!("too many hyphens: {expr}"));
        }
        (min, max)
    } else {
        let start = value(range[0])?;
        let end = if range.len() == 2 {
            value(range[1])?
        } else {
            start
        };
        (start, end)
    };
    let mut step = 1;
    if slashed.len() == 2 {
        step = value(slashed[1])?;
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
        // `N/step` runs from N to the maximum.
        if !star && range.len() == 1 {
            end = max;
        }
    }
    // Day of week accepts 7 for Sunday.
    let max_allowed = if names == DAYS { 7 } else { max };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max_allowed {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star && step == 1))
}

/// A Go duration string (`1h30m`, `90s`, `1.5h`), as `@every` takes.
fn parse_go_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total > 0.0).then(|| SignedDuration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).expect("zone");
        Schedule::parse(schedule)
            .expect("schedule")
            .next_after(ts(after), &tz)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn fields_step_ranges_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:07:00Z", "UTC"),
            "2026-01-01T10:15:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-01-01T13:00:00Z", "UTC"),
            "2026-01-01T17:00:00Z"
        );
        assert_eq!(
            next("30 2 * JAN,mar *", "2026-02-10T00:00:00Z", "UTC"),
            "2026-03-01T02:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-01-01T10:26:00Z", "UTC"),
            "2026-01-01T10:45:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next("* * * * *", "2026-01-01T10:00:30Z", "UTC"),
            "2026-01-01T10:01:00Z"
        );
    }

    #[test]
    fn day_fields_combine_as_upstream() {
        // Both restricted: either matches (the 13th, or any Friday).
        assert_eq!(
            next("0 0 13 * fri", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-02T00:00:00Z"
        );
        // One is a star: both must match.
        assert_eq!(
            next("0 0 * * fri", "2026-01-03T00:00:00Z", "UTC"),
            "2026-01-09T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * ?", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-13T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_dst() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        assert_eq!(
            next("0 9 * * *", "2026-01-10T00:00:00Z", "America/New_York"),
            "2026-01-10T14:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-10T00:00:00Z", "America/New_York"),
            "2026-07-10T13:00:00Z"
        );
        // 02:30 does not exist on 2026-03-08 there: the next run is the day after.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T00:00:00Z", "America/New_York"),
            "2026-03-09T06:30:00Z"
        );
    }

    #[test]
    fn descriptors_and_every() {
        assert_eq!(
            next("@hourly", "2026-01-01T10:07:00Z", "UTC"),
            "2026-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-01-01T10:07:00Z", "UTC"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next("@every 1h30m", "2026-01-01T10:07:00Z", "UTC"),
            "2026-01-01T11:37:00Z"
        );
        assert!(Schedule::parse("@fortnightly").is_err());
    }

    #[test]
    fn impossible_schedules_never_fire() {
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z", "UTC"), "");
    }

    #[test]
    fn missed_runs_are_counted_up_to_a_limit() {
        let s = Schedule::parse("* * * * *").expect("schedule");
        let (last, n) = s.last_between(
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-01T10:05:30Z"),
            &TimeZone::UTC,
            100,
        );
        assert_eq!((last, n), (Some(ts("2026-01-01T10:05:00Z")), 5));
        let (last, n) = s.last_between(
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-01T13:00:00Z"),
            &TimeZone::UTC,
            100,
        );
        assert_eq!((last, n), (Some(ts("2026-01-01T13:00:00Z")), 100));
        let (last, n) = s.last_between(
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-01T10:00:59Z"),
            &TimeZone::UTC,
            100,
        );
        assert_eq!((last, n), (None, 0));
    }

    #[test]
    fn errors_are_worded_as_upstream() {
        assert_eq!(
            Schedule::parse("* * *").unwrap_err(),
            "expected exactly 5 fields, found 3: [* * *]"
        );
        assert_eq!(
            Schedule::parse("61 * * * *").unwrap_err(),
            "end of range (61) above maximum (59): 61"
        );
        assert_eq!(
            Schedule::parse("*/0 * * * *").unwrap_err(),
            "step of range should be a positive number: */0"
        );
    }
}
