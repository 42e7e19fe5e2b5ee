//! The CRI container log format (kubelet's `pkg/kubelet/kuberuntime/logs`):
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`. A line longer
//! than [`MAX_LOG_LINE`] is split into `P` (partial) records and ends with an
//! `F` record, so kubelet can reassemble it. A last line without newline at
//! EOF is written as `P`, as containerd's logger does: kubelet's reader
//! strips the record's newline only from `P` records, so `echo -n DONE`
//! reads back as `DONE` (Node Conformance's FallbackToLogsOnError
//! termination message test), not `DONE\n`.
//!
//! [`parse_cri_log_line`] reads such a record back (for `crictl logs`-style
//! readers and log reopening). Log files can be edited by anyone with access
//! to the log directory, so the parser takes arbitrary bytes and never panics.

use chrono::{DateTime, SecondsFormat, Utc};
use thiserror::Error;

/// Longest content of one record; the same 16 KiB containerd and CRI-O use.
pub const MAX_LOG_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriLogStream {
    Stdout,
    Stderr,
}

impl CriLogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            CriLogStream::Stdout => "stdout",
            CriLogStream::Stderr => "stderr",
        }
    }
}

/// One CRI log record; `content` has no trailing newline.
pub fn format_cri_log_line(
    time: DateTime<Utc>,
    stream: CriLogStream,
    partial: bool,
    content: &[u8],
) -> Vec<u8> {
    let ts = time.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut out = Vec::with_capacity(ts.len() + content.len() + 12);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(if partial { b'P' } else { b'F' });
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLogLine {
    pub time: DateTime<Utc>,
    pub stream: CriLogStream,
    /// `P` tag: the content continues in the next record of the same stream.
    pub partial: bool,
    /// The content without the record's terminating newline.
    pub content: Vec<u8>,
}

/// Why a record is not a CRI log line; the file is named by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CriLogParseError {
    #[error(
        "CRI log record has no {field} field (format: `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`); the log file is truncated or not written by a CRI runtime"
    )]
    MissingField { field: &'static str },
    #[error(
        "CRI log record has the timestamp {found:?}, which is not RFC 3339 ({reason}); the log file is corrupt or not written by a CRI runtime"
    )]
    BadTimestamp { found: String, reason: String },
    #[error(
        "CRI log record names the stream {found:?}; only `stdout` and `stderr` exist (the log file is corrupt)"
    )]
    BadStream { found: String },
    #[error(
        "CRI log record has the empty tag; expected `F` (full) or `P` (partial), optionally followed by `:`-separated tags"
    )]
    EmptyTag,
}

/// Parses one record as written by [`format_cri_log_line`] (and by
/// containerd/CRI-O). Like kubelet's reader, the first `:`-separated tag
/// decides partial (`P`) versus full (anything else), so later tag additions
/// stay readable. One trailing newline, the record terminator, is removed.
pub fn parse_cri_log_line(record: &[u8]) -> Result<CriLogLine, CriLogParseError> {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let (ts, rest) = split_field(record, "timestamp")?;
    let (stream, rest) = split_field(rest, "stream")?;
    let (tag, content) = split_field(rest, "tag")?;
    let ts_text = String::from_utf8_lossy(ts);
    let time = DateTime::parse_from_rfc3339(&ts_text)
        .map_err(|e| CriLogParseError::BadTimestamp {
            found: ts_text.clone().into_owned(),
            reason: e.to_string(),
        })?
        .with_timezone(&Utc);
    let stream = match stream {
        b"stdout" => CriLogStream::Stdout,
        b"stderr" => CriLogStream::Stderr,
        other => {
            return Err(CriLogParseError::BadStream {
                found: String::from_utf8_lossy(other).into_owned(),
            });
        }
    };
    let first_tag = tag.split(|b| *b == b':').next().unwrap_or_default();
    if first_tag.is_empty() {
        return Err(CriLogParseError::EmptyTag);
    }
    Ok(CriLogLine {
        time,
        stream,
        partial: first_tag == b"P",
        content: content.to_vec(),
    })
}

/// Splits at the first space: the field and what follows the space.
fn split_field<'a>(
    data: &'a [u8],
    field: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CriLogParseError> {
    let at = data
        .iter()
        .position(|b| *b == b' ')
        .ok_or(CriLogParseError::MissingField { field })?;
    Ok((&data[..at], &data[at + 1..]))
}

/// Cuts a byte stream into log records: holds at most one unfinished line
/// (up to [`MAX_LOG_LINE`] bytes), so nothing is buffered for long.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes read from the pipe; returns `(partial, content)` records
    /// ready to be written.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let room = MAX_LOG_LINE - self.pending.len();
            match data.iter().position(|b| *b == b'\n') {
                Some(nl) if nl <= room => {
                    self.pending.extend_from_slice(&data[..nl]);
                    out.push((false, std::mem::take(&mut self.pending)));
                    data = &data[nl + 1..];
                }
                _ => {
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == MAX_LOG_LINE {
                        out.push((true, std::mem::take(&mut self.pending)));
                    }
                }
            }
        }
        out
    }

    /// The stream ended: an unfinished last line is written as it is, a
    /// partial record (no newline follows it; see the module comment).
    pub fn finish(&mut self) -> Option<(bool, Vec<u8>)> {
        if self.pending.is_empty() {
            None
        } else {
            Some((true, std::mem::take(&mut self.pending)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_full_and_partial_records() {
        let t =
            Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::nanoseconds(6);
        assert_eq!(
            format_cri_log_line(t, CriLogStream::Stdout, false, b"hello"),
            b"2024-01-02T03:04:05.000000006Z stdout F hello\n".to_vec()
        );
        assert_eq!(
            format_cri_log_line(t, CriLogStream::Stderr, true, b""),
            b"2024-01-02T03:04:05.000000006Z stderr P \n".to_vec()
        );
    }

    #[test]
    fn parses_what_it_formats() {
        let t =
            Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::nanoseconds(6);
        for (stream, partial, content) in [
            (CriLogStream::Stdout, false, &b"hello world"[..]),
            (CriLogStream::Stderr, true, b""),
            (CriLogStream::Stdout, false, b"a b\nc \xff"),
            (CriLogStream::Stderr, false, b" leading space\n"),
        ] {
            let line = format_cri_log_line(t, stream, partial, content);
            assert_eq!(
                parse_cri_log_line(&line),
                Ok(CriLogLine {
                    time: t,
                    stream,
                    partial,
                    content: content.to_vec()
                }),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn parses_other_runtimes_records() {
        // Offsets are normalised to UTC; extra tags are ignored; no newline is fine.
        let l = parse_cri_log_line(b"2024-01-02T04:04:05.5+01:00 stderr P:x:y part").unwrap();
        assert_eq!(
            l.time,
            Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::milliseconds(500)
        );
        assert_eq!(l.stream, CriLogStream::Stderr);
        assert!(l.partial);
        assert_eq!(l.content, b"part");
        let l = parse_cri_log_line(b"2024-01-02T03:04:05Z stdout F \n").unwrap();
        assert!(!l.partial);
        assert_eq!(l.content, b"");
    }

    #[test]
    fn refuses_malformed_records() {
        let cases: [(&[u8], CriLogParseError); 6] = [
            (b"", CriLogParseError::MissingField { field: "timestamp" }),
            (
                b"2024-01-02T03:04:05Z",
                CriLogParseError::MissingField { field: "timestamp" },
            ),
            (
                b"2024-01-02T03:04:05Z stdout",
                CriLogParseError::MissingField { field: "stream" },
            ),
            (
                b"2024-01-02T03:04:05Z stdout F",
                CriLogParseError::MissingField { field: "tag" },
            ),
            (
                b"2024-01-02T03:04:05Z stdin F x",
                CriLogParseError::BadStream {
                    found: "stdin".into(),
                },
            ),
            (
                b"2024-01-02T03:04:05Z stdout  x",
                CriLogParseError::EmptyTag,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_cri_log_line(input), Err(want), "{input:?}");
        }
        assert!(matches!(
            parse_cri_log_line(b"yesterday stdout F x"),
            Err(CriLogParseError::BadTimestamp { .. })
        ));
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"ab"), vec![]);
        assert_eq!(
            s.feed(b"c\nd\n\ne"),
            vec![
                (false, b"abc".to_vec()),
                (false, b"d".to_vec()),
                (false, b"".to_vec())
            ]
        );
        // No newline ever came: a partial record, which kubelet reads
        // back without one.
        assert_eq!(s.finish(), Some((true, b"e".to_vec())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn long_lines_become_partial_records() {
        let mut s = LineSplitter::default();
        let mut data = vec![b'x'; MAX_LOG_LINE * 2 + 10];
        data.push(b'\n');
        let recs = s.feed(&data);
        assert_eq!(recs.len(), 3);
        assert!(recs[0].0 && recs[1].0 && !recs[2].0);
        assert_eq!(recs[0].1.len(), MAX_LOG_LINE);
        assert_eq!(recs[2].1.len(), 10);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn exactly_max_line_with_newline_is_one_full_record() {
        let mut s = LineSplitter::default();
        let mut data = vec![b'y'; MAX_LOG_LINE];
        data.push(b'\n');
        let recs = s.feed(&data);
        assert_eq!(recs, vec![(false, vec![b'y'; MAX_LOG_LINE])]);
    }
}
