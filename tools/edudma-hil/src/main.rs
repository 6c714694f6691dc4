//! edudma-hil (work in progress).

fn main() {}
