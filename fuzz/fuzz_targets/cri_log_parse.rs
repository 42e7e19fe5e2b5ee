//! CRI log files are read back by log readers; anyone who can write the log
//! directory controls their bytes. Parsing never panics; parse(format(x))
//! is x; and a parsed record re-formats to a record that parses the same.
//!
//! Input: parsed as a record as is; and, structured, 8 bytes of seconds,
//! 4 of nanoseconds, 1 of flags, then the content, to be formatted.

#![no_main]

use capcri::monitor::{CriLogLine, CriLogStream, format_cri_log_line, parse_cri_log_line};
use chrono::{DateTime, Datelike, Utc};
use libfuzzer_sys::fuzz_target;

/// 9999-12-31T23:59:59Z: RFC 3339 has four-digit years only.
const MAX_SECS: u64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = parse_cri_log_line(data) {
        // Offsets can move a year-0000 or year-9999 time out of four digits.
        if (1..=9998).contains(&line.time.year()) {
            let again = format_cri_log_line(line.time, line.stream, line.partial, &line.content);
            assert_eq!(parse_cri_log_line(&again).as_ref(), Ok(&line));
        }
    }

    if data.len() < 13 {
        return;
    }
    let mut secs = [0u8; 8];
    secs.copy_from_slice(&data[..8]);
    let mut nanos = [0u8; 4];
    nanos.copy_from_slice(&data[8..12]);
    let secs = (u64::from_be_bytes(secs) % (MAX_SECS + 1)) as i64;
    let nanos = u32::from_be_bytes(nanos) % 1_000_000_000;
    let Some(time) = DateTime::<Utc>::from_timestamp(secs, nanos) else {
        return;
    };
    let flags = data[12];
    let want = CriLogLine {
        time,
        stream: if flags & 1 == 0 {
            CriLogStream::Stdout
        } else {
            CriLogStream::Stderr
        },
        partial: flags & 2 != 0,
        content: data[13..].to_vec(),
    };
    let record = format_cri_log_line(want.time, want.stream, want.partial, &want.content);
    assert_eq!(parse_cri_log_line(&record), Ok(want));
});
