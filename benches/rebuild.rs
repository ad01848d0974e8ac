//! Rebuilding the demo rule pack (placeholder while the cache lands).
fn main() {}
