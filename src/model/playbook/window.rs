//! Maintenance windows: `window:` validated, and whether a time is inside.

use super::WHAT;
use crate::model::error::{Error, Result};
use crate::model::playbook::Day;
use crate::model::playbook::WindowSpec;

/// A maintenance window, validated.
#[derive(Debug, Clone)]
pub struct Window {
    /// Allowed days (empty: all).
    pub days: Vec<Day>,
    /// Opening minute of the day.
    pub start_minute: u32,
    /// Closing minute of the day.
    pub end_minute: u32,
    /// Time zone.
    pub tz: chrono_tz::Tz,
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && (s.trim().len() == 5)).then_some(h * 60 + m)
}

pub(super) fn parse_window(w: &WindowSpec) -> Result<Window> {
    let start_minute = parse_hhmm(&w.start).ok_or_else(|| {
        Error::invalid(
            WHAT,
            "window.start",
            format!("`{}` is not a time like \"02:00\"", w.start),
            None,
        )
    })?;
    let end_minute = parse_hhmm(&w.end).ok_or_else(|| {
        Error::invalid(
            WHAT,
            "window.end",
            format!("`{}` is not a time like \"04:00\"", w.end),
            None,
        )
    })?;
    let tz_raw = w.tz.as_deref().unwrap_or("UTC");
    let tz: chrono_tz::Tz = tz_raw.parse().map_err(|_| {
        Error::invalid(
            WHAT,
            "window.tz",
            format!("`{tz_raw}` is not an IANA time zone such as UTC or Europe/Berlin"),
            None,
        )
    })?;
    Ok(Window {
        days: w.days.clone().unwrap_or_default(),
        start_minute,
        end_minute,
        tz,
    })
}

impl Window {
    /// "sat, sun 02:00-04:00 UTC", for messages.
    pub fn describe(&self) -> String {
        let days: Vec<String> = self
            .days
            .iter()
            .map(|d| format!("{d:?}").to_lowercase())
            .collect();
        format!(
            "{}{:02}:{:02}-{:02}:{:02} {}",
            if days.is_empty() {
                String::new()
            } else {
                format!("{} ", days.join(", "))
            },
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60,
            self.tz
        )
    }

    /// Whether `now` falls inside the window. A window whose end is before
    /// its start spans midnight and belongs to the day it opened.
    pub fn contains(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let local = now.with_timezone(&self.tz);
        let minute = local.hour() * 60 + local.minute();
        let day_of = |d: chrono::Weekday| match d {
            chrono::Weekday::Mon => Day::Mon,
            chrono::Weekday::Tue => Day::Tue,
            chrono::Weekday::Wed => Day::Wed,
            chrono::Weekday::Thu => Day::Thu,
            chrono::Weekday::Fri => Day::Fri,
            chrono::Weekday::Sat => Day::Sat,
            chrono::Weekday::Sun => Day::Sun,
        };
        let day_ok = |d: chrono::Weekday| self.days.is_empty() || self.days.contains(&day_of(d));
        if self.start_minute <= self.end_minute {
            day_ok(local.weekday()) && minute >= self.start_minute && minute < self.end_minute
        } else if minute >= self.start_minute {
            day_ok(local.weekday())
        } else if minute < self.end_minute {
            day_ok(local.weekday().pred())
        } else {
            false
        }
    }
}
