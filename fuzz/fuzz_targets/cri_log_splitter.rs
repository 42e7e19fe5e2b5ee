//! A container writes anything to its stdout/stderr, in reads of any size.
//! The splitter must never produce a record longer than `MAX_LOG_LINE`, and
//! the records must reassemble to exactly the bytes written.
//!
//! Input: 4 big-endian u16 read sizes (cycled), then (byte, count) pairs
//! expanded into runs so lines longer than `MAX_LOG_LINE` are reachable
//! from short inputs.

#![no_main]

use capcri::monitor::{CriLogStream, LineSplitter, MAX_LOG_LINE, format_cri_log_line};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fn run_len(n: u8) -> usize {
    if n < 128 {
        usize::from(n) + 1
    } else {
        (usize::from(n) - 127) * 256
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, runs) = data.split_at(8);
    let cuts: Vec<usize> = head
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])).max(1))
        .collect();
    let mut stream = Vec::new();
    for pair in runs.chunks_exact(2) {
        stream.extend(std::iter::repeat_n(pair[0], run_len(pair[1])));
    }

    let mut splitter = LineSplitter::default();
    let mut records = Vec::new();
    let mut rest = &stream[..];
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].min(rest.len());
        records.extend(splitter.feed(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    let last = splitter.finish();
    assert_eq!(splitter.finish(), None, "finish twice");

    let time = Utc
        .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
        .single()
        .expect("fixed time");
    let header = format_cri_log_line(time, CriLogStream::Stdout, true, b"").len();
    let mut rebuilt = Vec::with_capacity(stream.len());
    // Only the record `finish` returns for an unterminated last line may be
    // a short partial one (containerd writes it as `P` too): a partial record
    // from `feed` is always a full MAX_LOG_LINE chunk.
    if let Some((partial, content)) = &last {
        assert!(*partial, "the unterminated last line is a partial record");
        assert!(!content.is_empty(), "empty last record");
    }
    for (i, (partial, content)) in records.iter().chain(last.iter()).enumerate() {
        assert!(content.len() <= MAX_LOG_LINE, "record of {}", content.len());
        assert!(!content.contains(&b'\n'), "newline inside a record");
        if *partial && i < records.len() {
            assert_eq!(content.len(), MAX_LOG_LINE, "short partial record");
        }
        let line = format_cri_log_line(time, CriLogStream::Stdout, *partial, content);
        assert!(line.len() <= MAX_LOG_LINE + header);
        rebuilt.extend_from_slice(content);
        if !*partial {
            rebuilt.push(b'\n');
        }
    }
    assert_eq!(rebuilt, stream, "records do not reassemble to the stream");
});
