//! `parse_packet` over arbitrary bytes: it never panics, it agrees with splitting the packet by hand
//! and calling `parse_line` on each line, and every message it accepts holds the parser's promises
//! (non-empty names and tags, sample rates in (0, 1], values borrowed from the packet).
#![no_main]

use libfuzzer_sys::fuzz_target;
use offpath::dogstatsd::{Message, MetricValue, parse_line, parse_packet};

fn within(packet: &[u8], s: &str) -> bool {
    let p = packet.as_ptr_range();
    let r = s.as_bytes().as_ptr_range();
    s.is_empty() || (r.start >= p.start && r.end <= p.end)
}

fuzz_target!(|packet: &[u8]| {
    let by_hand: Vec<String> = packet
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| format!("{:?}", parse_line(l)))
        .collect();
    let mut n = 0;
    for (i, result) in parse_packet(packet).enumerate() {
        assert_eq!(Some(&format!("{result:?}")), by_hand.get(i), "line {i}");
        n += 1;
        let Ok(msg) = result else { continue };
        match msg {
            Message::Metric(m) => {
                assert!(!m.name.is_empty());
                assert!(within(packet, m.name), "the name is borrowed from the packet");
                assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0, "rate {}", m.sample_rate);
                assert!(m.value.len() >= 1);
                match m.value {
                    MetricValue::Packed(p) => assert_eq!(p.iter().count(), m.value.len()),
                    MetricValue::Set(member) => assert!(within(packet, member)),
                    MetricValue::Single(_) => assert_eq!(m.value.len(), 1),
                }
                for tag in m.tags.iter() {
                    assert!(!tag.is_empty() && !tag.contains(','), "tag {tag:?}");
                    assert!(within(packet, tag));
                }
                if let Some(ts) = m.timestamp {
                    assert!(ts > 0);
                }
            }
            Message::Event(e) => {
                assert!(!e.title.is_empty());
                for tag in e.tags.iter() {
                    assert!(!tag.is_empty() && !tag.contains(','), "tag {tag:?}");
                }
            }
            Message::ServiceCheck(sc) => {
                assert!(sc.status <= 3);
                assert!(!sc.name.is_empty());
                for tag in sc.tags.iter() {
                    assert!(!tag.is_empty() && !tag.contains(','), "tag {tag:?}");
                }
            }
        }
    }
    assert_eq!(n, by_hand.len());
});
