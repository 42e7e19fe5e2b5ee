//! The CRI container log format (kubelet's `pkg/kubelet/kuberuntime/logs`):
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`. A line longer
//! than [`MAX_LOG_LINE`] is split into `P` (partial) records and ends with an
//! `F` record, so kubelet can reassemble it; a last line without newline at
//! EOF is written as `F`, since nothing more will follow.

use chrono::{DateTime, SecondsFormat, Utc};

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

    /// The stream ended: an unfinished last line is complete now.
    pub fn finish(&mut self) -> Option<(bool, Vec<u8>)> {
        if self.pending.is_empty() {
            None
        } else {
            Some((false, std::mem::take(&mut self.pending)))
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
        assert_eq!(s.finish(), Some((false, b"e".to_vec())));
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
