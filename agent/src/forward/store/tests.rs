use super::*;
use crate::encode::PayloadKind;

const DEST: &str = "https://api.datadoghq.com";

fn payload(samples: u64, len: usize) -> Payload {
    Payload {
        kind: PayloadKind::Series,
        body: Bytes::from(vec![samples as u8; len]),
        raw_len: len * 2,
        items: 1,
        samples,
        destination: crate::forward::DestinationId::MAIN,
    }
}

fn samples(ps: &[(Seq, Payload)]) -> Vec<u64> {
    ps.iter().map(|(_, p)| p.samples).collect()
}

#[track_caller]
fn stored(put: Put) -> (Seq, Vec<Seq>) {
    match put {
        Put::Stored { seq, evicted } => (seq, evicted),
        Put::TooLarge => panic!("not stored"),
    }
}

fn payload_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    names
}

#[test]
fn what_one_run_stores_the_next_reads_back_oldest_first() {
    let root = tempfile::tempdir().unwrap();
    let (mut s, rec) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    assert!(rec.payloads.is_empty());
    let (a, _) = stored(s.put(&payload(1, 10)).unwrap());
    let (b, _) = stored(s.put(&payload(2, 20)).unwrap());
    let (c, _) = stored(s.put(&payload(3, 30)).unwrap());
    s.sync().unwrap();
    s.remove(b);
    s.sync().unwrap();
    assert_eq!(s.files(), 2);
    assert_eq!(s.bytes(), (2 * format::HEADER_LEN + 40) as u64);
    drop(s);

    let (mut s, rec) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    assert_eq!(samples(&rec.payloads), [1, 3]);
    assert_eq!(rec.payloads[0], (a, payload(1, 10)));
    assert_eq!(rec.payloads[1], (c, payload(3, 30)));
    assert_eq!(rec.corrupt, 0);
    // New files come after the recovered ones.
    let (d, _) = stored(s.put(&payload(4, 1)).unwrap());
    assert!(d > c);
    // Settling a recovered payload deletes its file.
    s.remove(a);
    s.remove(c);
    s.remove(d);
    assert!(payload_files(s.dir()).is_empty());
}

#[test]
fn torn_and_corrupt_files_are_counted_deleted_and_skipped() {
    let root = tempfile::tempdir().unwrap();
    let (mut s, _) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    let (good, _) = stored(s.put(&payload(1, 10)).unwrap());
    let (cut, _) = stored(s.put(&payload(2, 10)).unwrap());
    let (flipped, _) = stored(s.put(&payload(3, 10)).unwrap());
    let dir = s.dir().to_owned();
    drop(s);
    let cut_path = dir.join(format!("{cut:016x}.oprq"));
    let bytes = fs::read(&cut_path).unwrap();
    fs::write(&cut_path, &bytes[..bytes.len() - 3]).unwrap();
    let flipped_path = dir.join(format!("{flipped:016x}.oprq"));
    let mut bytes = fs::read(&flipped_path).unwrap();
    bytes[format::HEADER_LEN + 2] ^= 0x10;
    fs::write(&flipped_path, bytes).unwrap();
    // An interrupted write, an empty file and a file that is not ours.
    fs::write(dir.join(format!("{:016x}.tmp", flipped + 1)), b"OPRQ").unwrap();
    fs::write(dir.join(format!("{:016x}.oprq", flipped + 2)), b"").unwrap();
    fs::write(dir.join("notes.txt"), b"kept").unwrap();

    let (mut s, rec) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    assert_eq!(samples(&rec.payloads), [1]);
    assert_eq!(rec.payloads[0].0, good);
    assert_eq!(rec.corrupt, 4);
    assert_eq!(
        payload_files(&dir),
        [format!("{good:016x}.oprq"), "notes.txt".to_owned()]
    );
    // Sequence numbers move past every file seen, torn ones included.
    let (next, _) = stored(s.put(&payload(9, 1)).unwrap());
    assert!(next > flipped + 2);
}

#[test]
fn a_second_process_cannot_share_a_destination_directory() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    // flock(2) locks belong to the open file: a second open is refused like another process.
    let err = Store::open(root.path(), DEST, 1 << 20).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("DD_FORWARDER_STORAGE_PATH"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // Another destination under the same root is another directory.
    let (other, _) = Store::open(root.path(), "https://app.datadoghq.eu", 1 << 20).unwrap();
    assert_ne!(other.dir(), first.dir());
    drop(first);
    assert!(Store::open(root.path(), DEST, 1 << 20).is_ok());
}

#[test]
fn the_size_bound_deletes_the_oldest_files_first() {
    let root = tempfile::tempdir().unwrap();
    let file = (format::HEADER_LEN + 100) as u64;
    let (mut s, _) = Store::open(root.path(), DEST, 3 * file).unwrap();
    let (a, _) = stored(s.put(&payload(1, 100)).unwrap());
    let (b, _) = stored(s.put(&payload(2, 100)).unwrap());
    let (c, none) = stored(s.put(&payload(3, 100)).unwrap());
    assert!(none.is_empty());
    let (d, evicted) = stored(s.put(&payload(4, 100)).unwrap());
    assert_eq!(evicted, [a]);
    let (_, evicted) = stored(s.put(&payload(5, 150)).unwrap());
    assert_eq!(evicted, [b, c]);
    assert_eq!(s.files(), 2);
    assert!(s.bytes() <= 3 * file);
    assert_eq!(payload_files(s.dir()).len(), 2);
    assert!(payload_files(s.dir()).contains(&format!("{d:016x}.oprq")));
    // Larger than the whole bound: not written.
    assert_eq!(s.put(&payload(6, 400)).unwrap(), Put::TooLarge);
    assert_eq!(s.files(), 2);
}

#[test]
fn a_lowered_bound_overflows_the_oldest_recovered_payloads() {
    let root = tempfile::tempdir().unwrap();
    let file = (format::HEADER_LEN + 100) as u64;
    let (mut s, _) = Store::open(root.path(), DEST, 10 * file).unwrap();
    for n in 1..=4 {
        stored(s.put(&payload(n, 100)).unwrap());
    }
    drop(s);
    let (s, rec) = Store::open(root.path(), DEST, 2 * file).unwrap();
    assert_eq!(samples(&rec.payloads), [3, 4]);
    let overflow: Vec<u64> = rec.overflow.iter().map(|p| p.samples).collect();
    assert_eq!(overflow, [1, 2]);
    assert_eq!(payload_files(s.dir()).len(), 2);
}

#[test]
fn a_write_that_fails_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let (mut s, _) = Store::open(root.path(), DEST, 1 << 20).unwrap();
    let dir = s.dir().to_owned();
    // The next file name is taken by a directory: the create fails.
    fs::create_dir(dir.join(format!("{:016x}.tmp", 0))).unwrap();
    let err = s.put(&payload(1, 10)).unwrap_err();
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    assert_eq!(s.files(), 0);
    // The next payload gets the next name and is stored.
    stored(s.put(&payload(2, 10)).unwrap());
    assert_eq!(s.files(), 1);
}

#[test]
fn destination_directories_are_readable_and_distinct() {
    assert_eq!(
        dir_name("https://api.datadoghq.com")
            .split_once('-')
            .unwrap()
            .0,
        "api.datadoghq.com"
    );
    let a = dir_name("http://127.0.0.1:8080/");
    assert!(a.starts_with("127.0.0.1_8080-"), "{a}");
    assert_ne!(dir_name("http://a_b"), dir_name("http://a/b"));
    assert!(dir_name(&"x".repeat(500)).len() < 100);
    assert!(!dir_name("https://../../etc").contains('/'));
}
