//! edudma-sim: the Windows we do not have (work in progress).
