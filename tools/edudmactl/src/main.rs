//! edudmactl (work in progress).

fn main() {}
