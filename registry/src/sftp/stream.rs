//! A channel stream whose read side is drained by its own task (spike-russh.md section 7).
