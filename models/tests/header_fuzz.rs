//! A bounded, seeded property test over safetensors headers (issue 13): random headers with duplicate names, aliased,
//! overlapping and gapped byte ranges, trailing bytes and shapes whose size overflows. For every one the reader must
//! not panic, must accept exactly the headers an independent byte-coverage model accepts (and the reference
//! `safetensors` crate accepts, where names are unique), and must name the cause when it refuses. 20,000 cases run
//! in well under a second, so this is an ordinary test.

use std::collections::BTreeSet;
use std::path::Path;

use compressor_models::rng::SplitMix64;
use compressor_models::st::parse_header;

const CASES: u64 = 20_000;
const NAMES: &[&str] = &["a", "b", "c", "d", "e", "f"];
const DTYPES: &[(&str, usize)] = &[("F32", 4), ("F16", 2), ("I64", 8), ("I8", 1)];

/// One tensor of a generated header.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    dtype: (&'static str, usize),
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

impl Entry {
    fn bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.1 as u64, |acc, &d| acc.checked_mul(d))
    }
}

/// A header: a valid tiling, then zero or more mutations. Returns the entries and the data length.
fn generate(rng: &mut SplitMix64) -> (Vec<Entry>, u64) {
    let n = 1 + rng.below(5) as usize;
    let mut entries = Vec::with_capacity(n);
    let mut offset = 0u64;
    for name in NAMES.iter().take(n) {
        let dtype = DTYPES[rng.below(DTYPES.len() as u64) as usize];
        let shape: Vec<u64> = (0..rng.below(3)).map(|_| 1 + rng.below(4)).collect();
        let bytes = shape.iter().product::<u64>() * dtype.1 as u64;
        entries.push(Entry {
            name: name.to_string(),
            dtype,
            shape,
            begin: offset,
            end: offset + bytes,
        });
        offset += bytes;
    }
    let mut data_len = offset;
    for _ in 0..rng.below(3) {
        let i = rng.below(entries.len() as u64) as usize;
        match rng.below(7) {
            // A duplicate name.
            0 => {
                let j = rng.below(entries.len() as u64) as usize;
                entries[i].name = entries[j].name.clone();
            }
            // Alias: another tensor's range (with a shape of the same size).
            1 => {
                let j = rng.below(entries.len() as u64) as usize;
                let (b, e) = (entries[j].begin, entries[j].end);
                entries[i].begin = b;
                entries[i].end = e;
                entries[i].dtype = ("I8", 1);
                entries[i].shape = vec![e - b];
            }
            // Shift a range by a few bytes (overlap or gap).
            2 => {
                let d = 1 + rng.below(4);
                if rng.below(2) == 0 {
                    entries[i].begin += d;
                    entries[i].end += d;
                } else if entries[i].begin >= d {
                    entries[i].begin -= d;
                    entries[i].end -= d;
                }
                data_len = data_len.max(entries[i].end);
            }
            // Trailing bytes (a shifted data region).
            3 => data_len += 1 + rng.below(8),
            // Fewer bytes than the tensors need.
            4 => data_len = data_len.saturating_sub(1 + rng.below(4)),
            // A shape whose size overflows.
            5 => entries[i].shape = vec![1 << 32, 1 << 32, 1 + rng.below(1 << 20)],
            // A range that does not match the shape.
            _ => entries[i].end += 1 + rng.below(3),
        }
    }
    (entries, data_len)
}

fn serialize(entries: &[Entry], data_len: u64) -> Vec<u8> {
    let body: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                r#""{}": {{"dtype": "{}", "shape": {:?}, "data_offsets": [{}, {}]}}"#,
                e.name, e.dtype.0, e.shape, e.begin, e.end
            )
        })
        .collect();
    let header = format!("{{{}}}", body.join(", "));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..data_len).map(|i| i as u8));
    bytes
}

/// The model: names unique, every size computable and equal to its range, every range inside the data, and every
/// byte of the data in exactly one tensor.
fn valid(entries: &[Entry], data_len: u64) -> bool {
    let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if names.len() != entries.len() {
        return false;
    }
    let mut coverage = vec![0u32; data_len as usize];
    for e in entries {
        if e.bytes() != Some(e.end.wrapping_sub(e.begin)) || e.end < e.begin || e.end > data_len {
            return false;
        }
        for c in &mut coverage[e.begin as usize..e.end as usize] {
            *c += 1;
        }
    }
    coverage.iter().all(|&c| c == 1)
}

#[test]
fn issue_13_random_headers_are_judged_like_the_byte_coverage_model() {
    let mut rng = SplitMix64::new(0x5afe_7e45);
    let path = Path::new("fuzz.safetensors");
    let mut seen = [0usize; 2];
    for case in 0..CASES {
        let (entries, data_len) = generate(&mut rng);
        let bytes = serialize(&entries, data_len);
        let expected = valid(&entries, data_len);
        let got = parse_header(path, &bytes);
        let unique = entries
            .iter()
            .map(|e| &e.name)
            .collect::<BTreeSet<_>>()
            .len()
            == entries.len();
        seen[usize::from(expected)] += 1;
        match (&got, expected) {
            (Ok((start, tensors, _)), true) => {
                for e in &entries {
                    let t = &tensors[&e.name];
                    assert_eq!((t.begin as u64, t.end as u64), (e.begin, e.end));
                    assert!(start + t.end <= bytes.len());
                }
            }
            (Err(err), false) => {
                let msg = err.to_string();
                assert!(msg.starts_with("`fuzz.safetensors`: "), "{msg}");
                if !unique {
                    assert!(msg.contains("more than once"), "case {case}: {msg}");
                } else {
                    let named = entries
                        .iter()
                        .any(|e| msg.contains(&format!("`{}`", e.name)));
                    assert!(named, "case {case}: the refusal names no tensor: {msg}");
                }
            }
            _ => panic!(
                "case {case}: expected {}, got {got:?} for {entries:?} with {data_len} data bytes",
                if expected { "acceptance" } else { "refusal" }
            ),
        }
        if unique {
            // The reference reader agrees wherever it can tell (it keeps one of two duplicate names).
            let reference = safetensors::SafeTensors::deserialize(&bytes).is_ok();
            assert_eq!(
                reference, expected,
                "case {case}: the safetensors crate disagrees on {entries:?} with {data_len} data bytes"
            );
        }
    }
    // The generator reaches both sides often enough to mean something.
    assert!(seen[0] > 5_000 && seen[1] > 2_000, "{seen:?}");
}
