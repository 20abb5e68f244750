//! The offpath Lambda extension binary (`extensions/offpath` in the layer).

fn main() {}
