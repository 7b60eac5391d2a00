//! Message statuses only move forward. Twilio's callbacks arrive out of order
//! (a `sent` after the `delivered`), and a consumer that takes each as the
//! message's new status goes backwards. Pure: which transitions are forward.

/// Where a status stands: its rank, and whether nothing but `read` can follow.
fn place(status: &str) -> Option<(u8, bool)> {
    Some(match status {
        "accepted" | "scheduled" => (0, false),
        "queued" => (1, false),
        "sending" => (2, false),
        "sent" => (3, false),
        "partially_delivered" => (4, false),
        "delivered" => (5, true),
        "undelivered" | "failed" | "canceled" => (5, true),
        "read" => (6, true),
        _ => return None,
    })
}

/// Whether the ordering applies to `status` at all (inbound `receiving` and
/// `received`, and statuses Twilio may add, are published as they come).
pub fn is_ordered(status: &str) -> bool {
    place(status).is_some()
}

/// Whether a message whose latest status is `previous` may move to `next`.
/// The same status again is allowed: a retried webhook whose first attempt
/// recorded it but did not publish must publish (the bus de-duplicates).
pub fn moves_forward(previous: &str, next: &str) -> bool {
    if previous == next {
        return true;
    }
    match (place(previous), place(next)) {
        // After a terminal status only `read` follows, and only `delivered`.
        (Some((_, true)), Some(_)) => previous == "delivered" && next == "read",
        (Some((before, false)), Some((after, _))) => after > before,
        // An unknown status is neither before nor after anything.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_backward_and_terminal() {
        assert!(moves_forward("queued", "sent"));
        assert!(moves_forward("sent", "delivered"));
        assert!(moves_forward("delivered", "read"));
        assert!(moves_forward("queued", "undelivered"));
        assert!(!moves_forward("delivered", "sent"));
        assert!(!moves_forward("read", "delivered"));
        assert!(!moves_forward("undelivered", "delivered"), "nothing after a terminal failure");
        assert!(!moves_forward("failed", "read"));
        assert!(!moves_forward("delivered", "undelivered"));
        assert!(!moves_forward("sent", "queued"));
        assert!(moves_forward("sent", "sent"), "a retried callback republishes");
    }
}
