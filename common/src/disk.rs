//! What an OS error says about the disk under us.

use std::io;

/// No room left for our files: ENOSPC, or EDQUOT (a quota is full for us all the same).
pub fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_a_full_disk() {
        assert!(is_full(&io::Error::from_raw_os_error(28)));
        assert!(is_full(&io::Error::from_raw_os_error(122)));
        assert!(!is_full(&io::Error::from_raw_os_error(2)));
        assert!(!is_full(&io::Error::other("disk full")));
    }
}
