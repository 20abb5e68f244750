//! Parse + aggregate + encode benchmarks (see README "Benchmarks").

fn main() {}
